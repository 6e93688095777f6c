"""Writes Multi-MNIST as Pyro's AIR example composes it, as npz files the 'images' kind trains on.

    python experiments/pyro_multi_mnist.py --output_dir=runs/pyro_mnist
    python experiments/train.py --config=air_jax/configs/images.py --workdir=runs/pyro_air \\
        --config.data.train_path=runs/pyro_mnist/train.npz --config.data.eval_path=runs/pyro_mnist/test.npz

The rule of pyro.contrib.examples.multi_mnist.mk_dataset (written here from its description, not
copied): each 50x50 scene holds 0-2 digits (uniform); each digit is shrunk by a factor drawn from
N(1.3, 0.1^2) (side int(28 / factor), PIL's default resampling) and placed at a uniform offset in
each axis; the digits are added, and a scene whose sum passes 255 anywhere is drawn again (ink may
touch and overlap, as long as the sum stays in range). train.npz: MNIST train digits, test.npz:
MNIST test digits (Pyro's example trains on train digits and reports on its training set);
validation.npz: another draw of scenes of MNIST train digits, to choose settings on. Each file
holds images [N, 50, 50] uint8 and counts [N].
"""
import pathlib

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from air_jax import launch
from air_jax.data import mnist as mnist_lib

_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Folder to write train.npz and test.npz into.')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 60_000, 'Scenes of MNIST train digits.')
_NUM_TEST = flags.DEFINE_integer('num_test', 10_000, 'Scenes of MNIST test digits.')
_NUM_VALIDATION = flags.DEFINE_integer('num_validation', 10_000, 'Scenes of MNIST train digits, another draw '
                                       'than train.npz: the split to choose settings on.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the composing (test: seed + 1, validation: seed + 2).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "MNIST cache folder ('' = $AIR_JAX_DATA_DIR or ~/.cache/air_jax).")
flags.mark_flags_as_required(['output_dir'])

CANVAS, MAX_DIGITS, SCALE_MEAN, SCALE_SD = 50, 2, 1.3, 0.1


def placed_digit(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
  """One digit shrunk by a factor ~ N(1.3, 0.1^2), on a CANVAS x CANVAS float canvas at a uniform offset."""
  digit = digits[rng.integers(len(digits))]
  side = int(digit.shape[0] / (SCALE_SD * rng.standard_normal() + SCALE_MEAN))
  shrunk = np.asarray(Image.fromarray(digit).resize((side, side)), np.float64)
  room = CANVAS - side
  top, left = rng.integers(0, room), rng.integers(0, room)
  canvas = np.zeros((CANVAS, CANVAS))
  canvas[top:top + side, left:left + side] = shrunk
  return canvas


def scene(rng: np.random.Generator, digits: np.ndarray, count: int) -> np.ndarray:
  """count digits added on one canvas, drawn again until no pixel passes 255."""
  while True:
    canvas = sum((placed_digit(rng, digits) for _ in range(count)), np.zeros((CANVAS, CANVAS)))
    if canvas.max() <= 255:
      return canvas.astype(np.uint8)


def compose(digits: np.ndarray, num: int, seed: int):
  """(images [num, 50, 50] uint8, counts [num] int32)."""
  rng = np.random.default_rng(seed)
  counts = rng.integers(0, MAX_DIGITS + 1, size=num).astype(np.int32)
  return np.stack([scene(rng, digits, c) for c in counts]), counts


def main(argv):
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  output = pathlib.Path(_OUTPUT_DIR.value)
  output.mkdir(parents=True, exist_ok=True)
  digits = mnist_lib.load_mnist(_DATA_DIR.value or None)
  for name, images, num, seed in (('train', digits.train_images, _NUM_TRAIN.value, _SEED.value),
                                  ('test', digits.test_images, _NUM_TEST.value, _SEED.value + 1),
                                  ('validation', digits.train_images, _NUM_VALIDATION.value, _SEED.value + 2)):
    scenes, counts = compose(images, num, seed)
    np.savez_compressed(output / f'{name}.npz', images=scenes, counts=counts)
    print(f'wrote {output / f"{name}.npz"}: {num} scenes, counts {np.bincount(counts).tolist()}')


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
