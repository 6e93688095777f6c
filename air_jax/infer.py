"""Run a trained AIR on images and write its latents.

    python -m air_jax.infer --workdir=W --images=IN.npz --output=OUT.npz [--visualize=OUT.png]
    python -m air_jax.infer --workdir=W --images=FOLDER --output=OUT.npz

IN.npz holds one array [N, H, W] (key 'images', or the file's only array): uint8 0-255 or float
0-1, H x W the size the model was trained on. FOLDER holds PNG/JPEG images (or --images names one),
read in file-name order as greyscale (white digits on black, like MNIST; air_jax.data.images);
square images of another size are resized to the model's, others are refused. --visualize draws
the first --visualize_images images as air_jax.visualize does.
OUT.npz gets, with `steps` = the model's object slots (the recurrent core's steps; the parallel
core's G x G cells in row-major order: slot r G + c is row r, column c):
  count [N]                 objects found (present slots, q's modes)
  z_pres_prob [N, steps]    q(z_pres_i = 1 | x, z_<i) (parallel core: q(z_pres_i = 1 | x))
  reconstruction_mse [N]    mean squared error of the modes' reconstruction
  count_posterior [N, C+1]  with --count_samples=K: p(count = c | x) from K importance-weighted
  count_weighted [N]        draws of q (air_jax.bounds), and its most probable count
and the scene kind's summary of each slot's object: 2D z_where [N, steps, 3] ((s, x, y), see
air_jax.glimpse), boxes [N, steps, 4] ((top, left, height, width) in pixels), z_what [N, steps, D];
3D identity [N, steps], identity_prob [N, steps, K], position [N, steps, 2], theta [N, steps].
Bad input ends with one line on stderr and exit status 1.
"""
import pathlib
import sys

from absl import app
from absl import logging
from absl import flags
import jax
import numpy as np

from air_jax import bounds
from air_jax import checkpoints
from air_jax import configs
from air_jax import evaluation
from air_jax import launch
from air_jax import metrics
from air_jax import models as models_lib
from air_jax import parallel
from air_jax import pictures
from air_jax import scenes
from air_jax import steps
from air_jax.data import images as images_lib
from air_jax.data import sources

class InputError(ValueError):
  """Input the tool cannot use; the message says what is wrong."""


def load_images(path: str | pathlib.Path, canvas_size: int) -> np.ndarray:
  """Reads and checks images (npz, folder of PNG/JPEG, one image file; air_jax.data.images) ->
  float32 [N, H, W] in [0, 1]; square image files of another size are resized to canvas_size."""
  try:
    images, _ = images_lib.read(path, '--images', canvas_size, resize=True)
  except images_lib.ImagesError as e:
    raise InputError(str(e)) from e
  return sources.to_unit_interval(images)


def load_config(workdir: str | pathlib.Path):
  """The config a training workdir was trained with (options added since at their defaults)."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise InputError(f'--workdir: no such directory: {workdir}')
  if not (workdir / 'config.json').is_file():
    raise InputError(f'--workdir: {workdir} has no config.json: not a training workdir')
  return configs.with_defaults(metrics.load_config(workdir))


def load_models(workdir: str | pathlib.Path):
  """The models (air_jax.models.build) of the config a training workdir was trained with."""
  try:
    return models_lib.build(load_config(workdir))
  except ValueError as e:
    raise InputError(f'--workdir: its config.json is not a valid config ({e})') from e


def load_params(workdir: str | pathlib.Path, models):
  """Model params of the latest checkpoint in workdir (writes nothing there)."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise InputError(f'--workdir: {workdir} has no checkpoint yet')
  try:
    params = evaluation.restore_model_params(workdir, models)
  except checkpoints.CheckpointError as e:
    raise InputError(f'--workdir: {e}') from e
  if params is None:
    raise InputError(f'--workdir: {workdir} has no checkpoint yet')
  return params


def infer(models, params, images: np.ndarray, batch_size: int = 256) -> dict:
  """Latents of images float32 [N, H, W] in [0, 1] (q's modes): count [N], z_pres_prob [N, steps],
  reconstruction_mse [N] (mean squared error of the modes' canvas against the image) and the scene
  kind's summary of each step's object (2D: z_where, boxes, z_what)."""
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices  # padded batches split evenly over devices
  eval_step = steps.make_eval_step(models)
  result = parallel.map_padded(lambda chunk, start: eval_step(params, chunk, jax.random.key(start)),
                               images, batch_size)
  return {k: v for k, v in result.items() if k not in ('elbo', 'z_pres')}


def weighted_counts(models, params, images: np.ndarray, draws: int, seed: int = 0) -> dict:
  """count_posterior [N, C + 1], p(count = c | x) from `draws` importance-weighted draws of q
  (air_jax.bounds.count_posterior), and count_weighted [N], its most probable count."""
  log_w, counts = bounds.draw_log_weights(models, params, images, draws, jax.random.key(seed))
  posterior = bounds.count_posterior(log_w, counts, scenes.max_count(models.config))
  return dict(count_posterior=posterior.astype(np.float32), count_weighted=posterior.argmax(-1).astype(np.int32))


def run(workdir, images_path, output_path, batch_size: int = 256, visualize_path=None,
        visualize_images: int = 8, count_samples: int = 0) -> dict:
  if batch_size <= 0:
    raise InputError(f'--batch_size must be positive, got {batch_size}')
  if count_samples < 0:
    raise InputError(f'--count_samples must be >= 0 (0: the count of q\'s modes only), got {count_samples}')
  if visualize_path:
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
  models = load_models(workdir)
  images = load_images(images_path, models.scene.image_shape[0])  # bad input fails before any restore
  params = load_params(workdir, models)
  result = infer(models, params, images, batch_size)
  if count_samples:
    result.update(weighted_counts(models, params, images, count_samples))
  np.savez(output_path, **result)
  if visualize_path:
    pictures.save_png(pictures.Pictures(models)(params, images[:visualize_images]), visualize_path)
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
  flags.DEFINE_integer('count_samples', 0, '> 0: also count_posterior and count_weighted, the count '
                       'read from this many importance-weighted draws of q per image.')


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
                 args.visualize_images, args.count_samples)
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
