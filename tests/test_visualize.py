"""Pictures: boxes drawn where the latents say (pixels of hand-built cases), the grid's layout, a
model's glimpses and patches, the TensorBoard image of a training run, the CLI."""
import subprocess
import sys

import jax
import numpy as np
import pytest

from air_jax import pictures
from air_jax import glimpse
from air_jax import infer
from air_jax import visualize
from air_jax import models as models_lib
from tests import helpers

CANVAS = 50


def z_where_for(top, left, side, canvas=CANVAS):
  """z_where = (s, x, y) of the window (top, left, side, side) in pixels (inverts glimpse.boxes)."""
  w = side / canvas
  s = np.log((w - glimpse.WINDOW_MIN) / (glimpse.WINDOW_MAX - w))  # sigmoid(s) = (w - min) / (max - min)
  return np.array([s, 2 * left / canvas + w - 1, 2 * top / canvas + w - 1], np.float32)


def outline_mask(shape, r0, c0, r1, c1):
  """True on the one-pixel outline of rows r0..r1, columns c0..c1 (inclusive), clipped to shape."""
  mask = np.zeros(shape, bool)
  rows, cols = slice(max(r0, 0), min(r1, shape[0] - 1) + 1), slice(max(c0, 0), min(c1, shape[1] - 1) + 1)
  for r in (r0, r1):
    if 0 <= r < shape[0]:
      mask[r, cols] = True
  for c in (c0, c1):
    if 0 <= c < shape[1]:
      mask[rows, c] = True
  return mask


def hand_built():
  """An image with grey ink, and three steps: (5, 5, 20, 20), (25, 30, 20, 20) present, then an
  absent step at (15, 15, 20, 20)."""
  image = np.zeros((CANVAS, CANVAS), np.float32)
  image[8:22, 8:22] = 0.5
  image[28:42, 33:47] = 1.0
  z_where = np.stack([z_where_for(5, 5, 20), z_where_for(25, 30, 20), z_where_for(15, 15, 20)])
  return image, z_where, np.array([1.0, 1.0, 0.0], np.float32)


def test_z_where_for_gives_the_boxes_asked_for():
  _, z_where, _ = hand_built()
  np.testing.assert_allclose(glimpse.boxes(z_where, (CANVAS, CANVAS)),
                             [[5, 5, 20, 20], [25, 30, 20, 20], [15, 15, 20, 20]], atol=1e-4)


@pytest.mark.parametrize('scale', [1, 2, 3])
def test_boxes_drawn_where_the_latents_say(scale):
  image, z_where, z_pres = hand_built()
  boxes = np.asarray(glimpse.boxes(z_where, (CANVAS, CANVAS)))
  rgb = pictures.to_rgb(image, scale)
  assert rgb.shape == (CANVAS * scale, CANVAS * scale, 3) and rgb.dtype == np.uint8
  drawn = pictures.draw_boxes(rgb, boxes, z_pres, scale)
  shape = drawn.shape[:2]
  for step, (top, left) in enumerate([(5, 5), (25, 30)]):
    expected = outline_mask(shape, top * scale, left * scale, (top + 20) * scale - 1, (left + 20) * scale - 1)
    np.testing.assert_array_equal(np.all(drawn == pictures.colour(step), axis=-1), expected)
  assert not np.any(np.all(drawn == pictures.colour(2), axis=-1))  # absent: not drawn
  untouched = ~np.any(drawn != rgb, axis=-1)
  assert untouched.sum() == shape[0] * shape[1] - 2 * outline_mask(shape, 0, 0, 20 * scale - 1, 20 * scale - 1).sum()
  # The pixels keep the image's grey where no box passes.
  assert tuple(drawn[15 * scale, 15 * scale]) == (128, 128, 128)
  assert tuple(drawn[35 * scale, 40 * scale]) == (255, 255, 255)


def test_a_box_over_the_edge_is_drawn_open():
  boxes = np.array([[-5.0, 40.0, 20.0, 20.0]])  # rows -5..14, columns 40..59 on a 50x50 canvas
  drawn = pictures.draw_boxes(pictures.to_rgb(np.zeros((CANVAS, CANVAS))), boxes, np.array([1.0]))
  on = np.all(drawn == pictures.colour(0), axis=-1)
  expected = np.zeros_like(on)
  expected[14, 40:] = True   # bottom side
  expected[:15, 40] = True   # left side; the top and right sides lie outside
  np.testing.assert_array_equal(on, expected)


def test_grid_layout_and_cells():
  image, z_where, _ = hand_built()
  images = np.stack([image, image[::-1]])
  canvas = images * 0.5
  # Row 1: slot 3 present after an absent slot (the parallel core's cells): drawn, counted 2.
  z_pres = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
  boxes = np.asarray(glimpse.boxes(np.stack([z_where, z_where]), (CANVAS, CANVAS)))
  rng = np.random.default_rng(0)
  glimpses, patches = rng.uniform(size=(2, 3, 8, 8)), rng.uniform(size=(2, 3, 10, 10))
  scale = 2
  picture = pictures.grid(images, canvas, z_pres, boxes, glimpses, patches, true_counts=[2, 1], scale=scale)
  cell = (CANVAS * scale, CANVAS * scale)
  titles = pictures.column_titles(3, True, True)
  assert titles == ['input', 'reconstruction', 'glimpse 1', 'patch 1', 'glimpse 2', 'patch 2',
                    'glimpse 3', 'patch 3']
  assert picture.shape == pictures.grid_shape(2, 8, cell) + (3,) and picture.dtype == np.uint8

  def at(row, column):
    y, x = pictures.cell_position(row, column, cell)
    return picture[y:y + cell[0], x:x + cell[1]]

  for row, present in ((0, [1, 1, 0]), (1, [1, 0, 1])):
    np.testing.assert_array_equal(at(row, 0), pictures.draw_boxes(pictures.to_rgb(images[row], scale),
                                                                   boxes[row], present, scale))
    np.testing.assert_array_equal(at(row, 1), pictures.draw_boxes(pictures.to_rgb(canvas[row], scale),
                                                                   boxes[row], present, scale))
    for step in range(3):
      for k, stack in enumerate((glimpses, patches)):
        got = at(row, 2 + 2 * step + k)
        if present[step]:
          assert tuple(got[0, 0]) == tuple(got[-1, -1]) == pictures.colour(step)  # framed
          inner = pictures.FRAME
          idx = np.arange(cell[0]) * stack.shape[-1] // cell[0]
          expected = pictures.to_rgb(stack[row, step][idx[:, None], idx[None, :]])
          np.testing.assert_array_equal(got[inner:-inner, inner:-inner], expected[inner:-inner, inner:-inner])
        else:
          assert np.all(got == pictures.BACKGROUND)  # absent steps: blank
  # Captions and titles: text between the cells, nowhere inside them.
  y, _ = pictures.cell_position(0, 0, cell)
  assert np.any(picture[:y - pictures.TEXT] != pictures.BACKGROUND)  # column titles
  assert np.any(picture[y - pictures.TEXT:y] != pictures.BACKGROUND)  # row 0's count


def test_reconstruction_as_coloured_parts():
  """grid(parts=...): the reconstruction cell is each present step's part in its colour, summed."""
  parts = np.zeros((1, 3, CANVAS, CANVAS), np.float32)
  parts[0, 0, :10, :10] = 1.0    # step 1 alone
  parts[0, 1, 5:15, 5:15] = 0.5  # step 2, overlapping step 1 on [5, 10)
  parts[0, 2, 20:, 20:] = 1.0    # step 3: absent, not drawn
  z_pres = np.array([[1, 1, 0]], np.float32)
  boxes = np.zeros((1, 3, 4))
  picture = pictures.grid(parts.sum(1), parts.sum(1), z_pres, boxes, parts=parts, scale=1)
  y, x = pictures.cell_position(0, 1, (CANVAS, CANVAS))
  cell = picture[y:y + CANVAS, x:x + CANVAS].astype(int)
  red, green = np.array(pictures.colour(0)), np.array(pictures.colour(1))
  np.testing.assert_array_equal(cell[2, 2], red)
  np.testing.assert_array_equal(cell[12, 12], np.round(0.5 * green))
  np.testing.assert_array_equal(cell[7, 7], np.round(np.clip(red + 0.5 * green, 0, 255)))
  assert (cell[20:, 20:] == 0).all()


def test_save_png_round_trips(tmp_path):
  from PIL import Image
  picture = np.random.default_rng(1).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
  pictures.save_png(picture, tmp_path / 'p.png')
  with Image.open(tmp_path / 'p.png') as image:
    assert image.format == 'PNG'
    np.testing.assert_array_equal(np.asarray(image), picture)


@pytest.fixture(scope='module')
def smoke_model():
  config = helpers.smoke_config('')
  config.model.z_pres_logit_bias = 20.0  # every step present: glimpses and patches are all drawn
  images = np.zeros((3, CANVAS, CANVAS), np.float32)
  images[:, 10:30, 12:32] = 0.8
  air = models_lib.build(config).core
  params = jax.jit(lambda x: air.init({'params': jax.random.key(0), 'sample': jax.random.key(1)}, x))(images)
  return config, params['params'], images


def test_model_glimpses_and_patches_match_the_forward_pass(smoke_model):
  config, params, images = smoke_model
  latents = pictures.Pictures(models_lib.build(config)).latents(params, images)
  out = jax.jit(lambda p, x: models_lib.build(config).core.apply({'params': p}, x, use_mode=True))(params, images)
  steps, g, p = config.model.max_steps, config.model.glimpse_size, config.model.patch_size
  assert latents['glimpses'].shape == (3, steps, g, g) and latents['patches'].shape == (3, steps, p, p)
  np.testing.assert_allclose(latents['canvas'], out.canvas, atol=1e-5)
  np.testing.assert_allclose(latents['boxes'], glimpse.boxes(out.objects['z_where'], (CANVAS, CANVAS)), atol=1e-4)
  read = jax.jit(glimpse.read, static_argnums=2)
  write = jax.jit(glimpse.write, static_argnums=2)
  for i in range(steps):
    np.testing.assert_allclose(latents['glimpses'][:, i], read(images, out.objects['z_where'][:, i], (g, g)), atol=1e-5)
    # The patch is what the decoder drew: written into its window it is the step's object.
    np.testing.assert_allclose(write(latents['patches'][:, i], out.objects['z_where'][:, i], (CANVAS, CANVAS)),
                               out.objects['image'][:, i], atol=1e-5)


def test_pictures_of_a_model(smoke_model):
  config, params, images = smoke_model
  picture = pictures.Pictures(models_lib.build(config), scale=1)(params, (images * 255).astype(np.uint8), true_counts=[1, 1, 1])
  columns = 2 + 2 * config.model.max_steps
  assert picture.shape == pictures.grid_shape(3, columns, (CANVAS, CANVAS)) + (3,)
  y, x = pictures.cell_position(0, 2, (CANVAS, CANVAS))
  assert tuple(picture[y, x]) == pictures.colour(0)  # step 1 present: its glimpse is framed


def read_events(folder):
  """Every Event in the TensorBoard files under folder (TFRecord: length, crc, data, crc)."""
  from tensorboardX.proto import event_pb2
  events = []
  for path in sorted(folder.rglob('events.out.tfevents.*')):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], 'little')
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def test_training_writes_a_picture_at_every_evaluation(smoke_run):
  from PIL import Image
  import io
  workdir, _, _, config = smoke_run
  images = {e.step: v.image for e in read_events(workdir / 'tensorboard') for v in e.summary.value
            if v.tag == 'eval/pictures'}
  assert sorted(images) == [2, 4]  # evaluations at steps 2 and 4
  rows = min(pictures.SUMMARY_IMAGES, config.data.num_eval)
  shape = pictures.grid_shape(rows, 2 + 2 * config.model.max_steps, (2 * CANVAS, 2 * CANVAS))
  for image in images.values():
    assert (image.height, image.width) == shape
    with Image.open(io.BytesIO(image.encoded_image_string)) as png:
      assert png.size == (shape[1], shape[0])


def test_render_from_an_image_folder(smoke_run, scene_batch, tmp_path):
  from PIL import Image
  workdir = smoke_run[0]
  folder = tmp_path / 'pngs'
  folder.mkdir()
  for k in range(3):
    Image.fromarray(scene_batch['image'][k]).save(folder / f'{k}.png')
  picture = visualize.render(workdir, tmp_path / 'out.png', folder, num_images=2, start=1, scale=1)
  columns = 2 + 2 * smoke_run[3].model.max_steps
  assert picture.shape == pictures.grid_shape(2, columns, (CANVAS, CANVAS)) + (3,)
  with Image.open(tmp_path / 'out.png') as png:
    np.testing.assert_array_equal(np.asarray(png.convert('RGB')), picture)
  y, x = pictures.cell_position(0, 0, (CANVAS, CANVAS))
  cell = picture[y:y + CANVAS, x:x + CANVAS]  # row 0 is image 1 (--start=1), boxes drawn in colour
  grey = (cell[..., 0] == cell[..., 1]) & (cell[..., 1] == cell[..., 2])
  assert grey.mean() > 0.8
  np.testing.assert_array_equal(cell[..., 0][grey], scene_batch['image'][1][grey])


@pytest.mark.parametrize('output, fragment', [('out.jpg', 'PNG'), ('missing/out.png', 'no such directory')])
def test_render_refuses_bad_outputs(smoke_run, tmp_path, output, fragment):
  with pytest.raises(infer.InputError, match=fragment):
    visualize.render(smoke_run[0], tmp_path / output)
  assert not (tmp_path / output).exists()


def test_cli_on_held_out_scenes(smoke_run, tmp_path):
  """No --images: the run's held-out scenes (its fake MNIST test digits), with their true counts."""
  from PIL import Image
  process = subprocess.run(
      [sys.executable, '-m', 'air_jax.visualize', f'--workdir={smoke_run[0]}', f'--output={tmp_path / "g.png"}',
       '--num_images=3'], cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True, text=True,
      timeout=300)
  assert process.returncode == 0, process.stderr
  assert 'wrote' in process.stdout
  columns = 2 + 2 * smoke_run[3].model.max_steps
  height, width = pictures.grid_shape(3, columns, (2 * CANVAS, 2 * CANVAS))
  with Image.open(tmp_path / 'g.png') as png:
    assert png.size == (width, height)
  bad = subprocess.run([sys.executable, '-m', 'air_jax.visualize', f'--workdir={tmp_path / "nope"}',
                        f'--output={tmp_path / "bad.png"}'], cwd=helpers.REPO, env=helpers.subprocess_env(),
                       capture_output=True, text=True, timeout=300)
  helpers.assert_one_error_line(bad, tmp_path / 'bad.png', 'error: --workdir', 'nope', returncode=1)


@pytest.mark.parametrize('argv, fragment', [
    (['--workdir=w', '--output=o.png', '--num_images=abc'], "--num_images: invalid int value: 'abc'"),
    (['--output=o.png'], 'the following arguments are required: --workdir'),
    (['--workdir=w', '--output=o.png', '--colour=red'], 'unrecognized arguments: --colour=red'),
])
def test_bad_flags_one_line(argv, fragment, capsys):
  """A bad or missing flag: one `error:` line on stderr and exit 1 (not argparse's usage text)."""
  with pytest.raises(SystemExit) as exit_info:
    visualize.parse_flags(['air-jax-visualize'] + argv)
  helpers.assert_one_error_line((exit_info.value.code, capsys.readouterr().err), (), fragment, returncode=1)
