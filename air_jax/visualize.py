"""The command that draws what a trained workdir infers (air_jax.pictures) into a PNG file.

    python -m air_jax.visualize --workdir=W --output=OUT.png          # held-out scenes of the run
    python -m air_jax.visualize --workdir=W --images=IN --output=OUT.png

IN is what `air_jax.infer` reads: an npz [N, H, W], a folder of PNG/JPEG images or one image file.
Without --images the pictures show the run's held-out scenes (its scene kind's eval split, as its
evaluations use) with their true counts.
"""
import argparse
import pathlib
from typing import Dict

import numpy as np

from air_jax import infer
from air_jax import launch
from air_jax import pictures
from air_jax.data import sources


def held_out_scenes(scene, start: int, num: int) -> Dict[str, np.ndarray]:
  """Scenes start .. start + num - 1 of a run's held-out set (its scene kind's eval split): what
  its evaluations measure."""
  scenes = scene.scenes(scene.eval_split)
  return scenes.__getitems__(range(start, min(start + num, len(scenes))))


def render(workdir, output, images_path=None, num_images: int = pictures.SUMMARY_IMAGES, start: int = 0,
           scale: int = 2) -> np.ndarray:
  """Writes the picture of images start .. start + num_images - 1 (of images_path, or of the run's
  held-out scenes) to output (.png); returns it. Bad input raises infer.InputError."""
  if num_images <= 0 or start < 0 or scale <= 0:
    raise infer.InputError(f'--num_images and --scale must be positive and --start >= 0, got '
                           f'{num_images}, {scale} and {start}')
  problem = pictures.png_path_problem(output)
  if problem:
    raise infer.InputError(f'--output: {problem}')
  models = infer.load_models(workdir)
  if images_path:
    images, true_counts = infer.load_images(images_path, models.scene.image_shape[0]), None
    if start >= len(images):
      raise infer.InputError(f'--start={start}: {images_path} holds {len(images)} images')
    images = images[start:start + num_images]
  else:
    num_eval = len(models.scene.scenes(models.scene.eval_split))
    if start >= num_eval:
      raise infer.InputError(f'--start={start}: the run has {num_eval} held-out scenes')
    held_out = held_out_scenes(models.scene, start, num_images)
    images, true_counts = held_out['image'], held_out['count']
  picture = pictures.Pictures(models, scale)(infer.load_params(workdir, models), images, true_counts)
  pictures.save_png(picture, output)
  return picture


def parse_flags(argv):
  """Flags of the command (absl-style --name=value). Its own parser: the names it shares with
  air_jax.infer's absl flags (--workdir, --images, --output) would clash in absl's global FLAGS."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.flags import argparse_flags  # pylint: disable=g-import-not-at-top
  parser = argparse_flags.ArgumentParser(
      prog=pathlib.Path(argv[0]).name if argv and not argv[0].endswith('.py') else 'python -m air_jax.visualize',
      description=__doc__, inherited_absl_flags=None,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='training workdir (its latest checkpoint is used)')
  parser.add_argument('--output', required=True, help='PNG file to write')
  parser.add_argument('--images', default=None,
                      help='npz [N, H, W], folder of PNG/JPEG images or one image file '
                           '(default: the run\'s held-out scenes, with their true counts)')
  parser.add_argument('--num_images', type=int, default=pictures.SUMMARY_IMAGES, help='rows of the picture')
  parser.add_argument('--start', type=int, default=0, help='index of the first image')
  parser.add_argument('--scale', type=int, default=2, help='each pixel drawn as scale x scale pixels')
  parser.error = launch.fail  # one line and exit 1, like the other commands (not argparse's usage)
  args = parser.parse_args(argv[1:])
  flags.FLAGS.mark_as_parsed()  # absl's app.run requires it; this command has no absl flags
  return args


def main(args) -> None:
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would drown the result
  try:
    picture = render(args.workdir, args.output, args.images, args.num_images, args.start, args.scale)
  except (infer.InputError, sources.UnavailableError) as e:
    launch.fail(str(e))
  print(f'wrote {args.output}: {picture.shape[1]}x{picture.shape[0]} pixels')


def run_cli() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run_cli()
