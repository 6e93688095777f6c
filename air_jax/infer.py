"""Run a trained AIR on images and write its latents.

    python -m air_jax.infer --workdir=W --images=IN.npz --output=OUT.npz [--visualize=OUT.png]
    python -m air_jax.infer --workdir=W --images=FOLDER --output=OUT.npz

IN.npz holds one array [N, H, W] (key 'images', or the file's only array): uint8 0-255 or float
0-1, H x W the size the model was trained on. FOLDER holds PNG/JPEG images (or --images names one),
read in file-name order as greyscale (white digits on black, like MNIST); square images of another
size are resized to the model's, others are refused. --visualize draws the first
--visualize_images images with their windows, glimpses and patches (see air_jax.visualize).
OUT.npz gets, with `steps` = the model's max steps:
  count [N]                 objects found (steps with z_pres on, using q's modes)
  z_pres_prob [N, steps]    q(z_pres_i = 1 | x, z_<i)
  z_where [N, steps, 3]     (s, x, y); see air_jax.glimpse
  boxes [N, steps, 4]       (top, left, height, width) in canvas pixels
  z_what [N, steps, D]
Bad input ends with one line on stderr and exit status 1.
"""
import pathlib
import sys

from absl import app
from absl import logging
from absl import flags
import jax
import numpy as np

from air_jax import launch
from air_jax import scenes

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


class InputError(ValueError):
  """Input the tool cannot use; the message says what is wrong."""


def load_images(path: str | pathlib.Path, canvas_size: int) -> np.ndarray:
  """Reads and checks images (npz, folder of PNG/JPEG, one image file) -> float32 [N, H, W] in [0, 1]."""
  path = pathlib.Path(path)
  if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
    return load_image_files(path, canvas_size)
  if not path.is_file():
    raise InputError(f'--images: no such file: {path}')
  try:
    with np.load(path, allow_pickle=False) as f:
      names = list(f.keys())
      if 'images' in names:
        images = f['images']
      elif len(names) == 1:
        images = f[names[0]]
      else:
        raise InputError(f"--images: {path} has arrays {names}; name the images 'images'")
  except InputError:
    raise
  except Exception as e:  # not a zip, truncated, pickled objects, ...
    raise InputError(f'--images: {path} is not a readable npz file ({type(e).__name__}: {e})') from e
  if images.ndim != 3:
    raise InputError(f'--images: expected an array [N, H, W], got shape {images.shape}')
  if images.shape[0] == 0:
    raise InputError('--images: the array holds no images (N = 0)')
  if images.shape[1:] != (canvas_size, canvas_size):
    raise InputError(f'--images: the model takes {canvas_size}x{canvas_size} images, got '
                     f'{images.shape[1]}x{images.shape[2]}')
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise InputError(f'--images: dtype must be uint8 (0-255) or float (0-1), got {images.dtype}')
  bad = ~np.isfinite(images)
  if bad.any():
    raise InputError(f'--images: {int(bad.sum())} pixels are NaN or infinite '
                     f'(first in image {int(np.argwhere(bad)[0][0])})')
  if images.min() < 0.0 or images.max() > 1.0:
    raise InputError(f'--images: float pixels must lie in [0, 1], got [{images.min():g}, {images.max():g}]'
                     ' (uint8 images are taken as 0-255)')
  return images.astype(np.float32)


def image_files(path: pathlib.Path) -> list:
  """The PNG/JPEG files of a folder in file-name order, or [path] for one image file."""
  if path.is_dir():
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith('.'))
    if not files:
      raise InputError(f'--images: the folder {path} holds no PNG or JPEG files ({", ".join(IMAGE_SUFFIXES)})')
    return files
  if not path.is_file():
    raise InputError(f'--images: no such file: {path}')
  return [path]


def read_image_file(path: pathlib.Path, canvas_size: int) -> np.ndarray:
  """One PNG/JPEG -> greyscale float32 [canvas_size, canvas_size] in [0, 1]: colour becomes luma
  (PIL's 'L'), alpha is dropped; a square image of another size is resized (area average when
  shrinking, bilinear when growing); an image that is not square is refused."""
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)  # JPEGs from cameras and phones: upright as shown
      if image.mode.startswith('I;16'):
        image = Image.fromarray((np.asarray(image, np.float64) / 257.0).round().astype(np.uint8))
      image = image.convert('L')
  except Exception as e:  # not an image, truncated, unknown format, ...
    raise InputError(f'--images: {path} is not a readable PNG or JPEG image ({type(e).__name__}: {e})') from e
  width, height = image.size
  if width != height:
    raise InputError(f'--images: {path.name} is {width}x{height}; the model takes square '
                     f'{canvas_size}x{canvas_size} images (square images of another size are resized): '
                     'crop or pad it to a square first')
  if width != canvas_size:
    resample = Image.Resampling.BOX if width > canvas_size else Image.Resampling.BILINEAR
    image = image.resize((canvas_size, canvas_size), resample)
  return np.asarray(image, np.float32) / 255.0


def load_image_files(path: pathlib.Path, canvas_size: int) -> np.ndarray:
  """A folder of PNG/JPEG images (file-name order) or one image file -> float32 [N, H, W] in [0, 1]."""
  return np.stack([read_image_file(f, canvas_size) for f in image_files(pathlib.Path(path))])


def load_config(workdir: str | pathlib.Path):
  """The config a training workdir was trained with."""
  from air_jax import metrics, scenes
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise InputError(f'--workdir: no such directory: {workdir}')
  if not (workdir / 'config.json').is_file():
    raise InputError(f'--workdir: {workdir} has no config.json: not a training workdir')
  return scenes.with_defaults(metrics.load_config(workdir))


def load_params(workdir: str | pathlib.Path, config):
  """Model params of the latest checkpoint in workdir (writes nothing there)."""
  from air_jax import evaluation
  workdir = pathlib.Path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise InputError(f'--workdir: {workdir} has no checkpoint yet')
  from air_jax import checkpoints
  try:
    params = evaluation.restore_model_params(workdir, config)
  except checkpoints.CheckpointError as e:
    raise InputError(f'--workdir: {e}') from e
  if params is None:
    raise InputError(f'--workdir: {workdir} has no checkpoint yet')
  return params


def infer(config, params, images: np.ndarray, batch_size: int = 256) -> dict:
  """Latents of images float32 [N, H, W] in [0, 1] (q's modes): count [N], z_pres_prob [N, steps],
  reconstruction_mse [N] (mean squared error of the modes' canvas against the image) and the scene
  kind's summary of each step's object (2D: z_where, boxes, z_what)."""
  from air_jax import steps
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices  # padded batches split evenly over devices
  eval_step = steps.make_eval_step(config)
  results = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    out = jax.device_get(eval_step(params, chunk, jax.random.key(start)))
    results.append({k: v[:n] for k, v in out.items()})
  joined = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
  return {k: v for k, v in joined.items() if k not in ('elbo', 'z_pres')}


def run(workdir, images_path, output_path, batch_size: int = 256, visualize_path=None,
        visualize_images: int = 8) -> dict:
  if batch_size <= 0:
    raise InputError(f'--batch_size must be positive, got {batch_size}')
  if visualize_path:
    from air_jax import pictures  # pylint: disable=g-import-not-at-top
    problem = pictures.png_path_problem(visualize_path)
    if problem:
      raise InputError(f'--visualize: {problem}')
    if visualize_images <= 0:
      raise InputError(f'--visualize_images must be positive, got {visualize_images}')
  output_path = pathlib.Path(output_path)
  if output_path.is_dir():
    raise InputError(f'--output: {output_path} is a directory')
  if not output_path.parent.is_dir():
    raise InputError(f'--output: no such directory: {output_path.parent}')
  config = load_config(workdir)
  scene = scenes.scene_of(config)
  images = load_images(images_path, scene.image_shape[0])  # bad input fails before any restore
  params = load_params(workdir, config)
  result = infer(config, params, images, batch_size)
  np.savez(output_path, **result)
  if visualize_path:
    pictures.save_png(scene.pictures()(params, images[:visualize_images]), visualize_path)
  return result


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (importing air_jax.infer as a
  library, as the experiments do, defines none that could clash with theirs)."""
  flags.DEFINE_string('workdir', None, 'Training workdir (its latest checkpoint is used).')
  flags.DEFINE_string('images', None, 'npz file with images [N, H, W], a folder of PNG/JPEG '
                      'images or one image file.')
  flags.DEFINE_string('output', None, 'npz file to write.')
  flags.DEFINE_integer('batch_size', 256, 'Images per forward pass.')
  flags.DEFINE_string('visualize', None, 'Also write a PNG picture of the first images '
                      '(windows, glimpses, patches, counts) to this file.')
  flags.DEFINE_integer('visualize_images', 8, 'Images in the --visualize picture.')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would drown progress
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    sys.exit(1)
  args = flags.FLAGS
  for name in ('workdir', 'images', 'output'):
    if not args[name].value:
      print(f'error: --{name} is required', file=sys.stderr)
      sys.exit(1)
  try:
    result = run(args.workdir, args.images, args.output, args.batch_size, args.visualize,
                 args.visualize_images)
  except InputError as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)  # one line, whatever e holds
    sys.exit(1)
  counts = np.bincount(result['count'])
  print(f'wrote {args.output}: {len(result["count"])} images, counts ' +
        ', '.join(f'{k}: {v}' for k, v in enumerate(counts) if v))
  if args.visualize:
    print(f'wrote {args.visualize}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=launch.parse_flags)
