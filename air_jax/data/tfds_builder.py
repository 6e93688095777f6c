"""Multi-MNIST scenes as a TFDS dataset, written as array_record files without TensorFlow.

tfds 4.9 builds a `GeneratorBasedBuilder` without TensorFlow as long as the file format is
array_record (tfrecord would need `tf.io.TFRecordWriter`) and every feature is a `Tensor` (the
`Image` feature encodes PNGs with TF): examples are serialised with tfds' own copy of the
tf.Example protos and read back by `as_data_source` through `array_record` and numpy.

The train split is `MultiMNIST(MNIST train digits, seed=seed)`, the test split
`MultiMNIST(MNIST test digits, seed=seed + 1)`; example i of a split is example i of that source
(shuffling is disabled). The default seed 1 thus gives the scenes of `air_jax/configs/default.py`
(train seed 1, eval seed 2). Features are stored as raw bytes, so the data source yields what
`MultiMNIST` does: dicts of numpy arrays of the same dtypes and shapes (`count` as a 0-d array;
arrays are read-only views, and an index out of range raises ValueError), and
`pipeline.get_batch` takes it as it is. Every setting is part of the config name, so a built
config loads by name, even without this module:

    python -m air_jax.data.tfds_builder --data_dir=DIR --counts=0,1,2 --num_train=60000 --num_test=10000

    import tensorflow_datasets as tfds
    train = tfds.data_source('multi_mnist/counts_0_1_2-canvas_50-train_60000-test_10000-seed_1',
                             split='train', data_dir=DIR, download=False)
"""
import argparse
import dataclasses
import re
import sys
from typing import Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from air_jax import metrics
from air_jax.data import mnist
from air_jax.data import multi_mnist

NAME_PATTERN = re.compile(r'counts_(\d+(?:_\d+)*)-canvas_(\d+)-train_(\d+)-test_(\d+)-seed_(\d+)')


def config_name(counts: Sequence[int] = (0, 1, 2), canvas_size: int = 50, num_train: int = 60_000,
                num_test: int = 10_000, seed: int = 1) -> str:
  """The config name holding these settings: 'counts_0_1_2-canvas_50-train_60000-test_10000-seed_1'."""
  counts = tuple(int(c) for c in counts)
  if not counts or min(counts) < 0:
    raise ValueError(f'counts must be a non-empty set of non-negative integers, got {counts}')
  if canvas_size < multi_mnist.DIGIT_SIZE:
    raise ValueError(f'canvas_size must be at least {multi_mnist.DIGIT_SIZE}, got {canvas_size}')
  if min(num_train, num_test) <= 0:
    raise ValueError(f'num_train and num_test must be positive, got {num_train} and {num_test}')
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  return (f'counts_{"_".join(map(str, counts))}-canvas_{canvas_size}'
          f'-train_{num_train}-test_{num_test}-seed_{seed}')


@dataclasses.dataclass(eq=False)
class MultiMnistConfig(tfds.core.BuilderConfig):
  """Settings of one Multi-MNIST dataset; made from its name by `parse_config`."""
  counts: tuple[int, ...] = (0, 1, 2)
  canvas_size: int = 50
  num_train: int = 60_000
  num_test: int = 10_000
  seed: int = 1


def parse_config(name: str) -> MultiMnistConfig | None:
  """The config a name made by `config_name` stands for; None for any other name."""
  match = NAME_PATTERN.fullmatch(name)
  if not match:
    return None
  counts = tuple(int(c) for c in match[1].split('_'))
  canvas_size, num_train, num_test, seed = (int(g) for g in match.groups()[1:])
  if config_name(counts, canvas_size, num_train, num_test, seed) != name:
    return None  # e.g. leading zeros: keep one name per dataset
  return MultiMnistConfig(
      name=name, counts=counts, canvas_size=canvas_size, num_train=num_train, num_test=num_test,
      seed=seed, description=f'{counts} digits on a {canvas_size}x{canvas_size} canvas, '
                             f'{num_train} train / {num_test} test scenes, seed {seed}')


class MultiMnist(tfds.core.GeneratorBasedBuilder):
  """Multi-MNIST scenes composed by `multi_mnist.MultiMNIST` from the digits of `mnist.load_mnist`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [parse_config(config_name())]

  def __init__(self, *, mnist_dir=None, file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs):
    """mnist_dir: where `mnist.load_mnist` finds (or caches) MNIST; other arguments as tfds'."""
    self.mnist_dir = mnist_dir
    super().__init__(file_format=file_format, **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. tfds 4.9.10 finds it through `importlib_resources`, which it only installs on
    Python < 3.9 (tensorflow/datasets#11212)."""
    return epath.Path(__file__)

  @classmethod
  def get_builder_config(cls, name, version=None):
    """Any name made by `config_name`, not only the default one."""
    return super().get_builder_config(name, version) or parse_config(name)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    max_objects = max(config.counts)
    return tfds.core.DatasetInfo(
        builder=self,
        description='Scenes of non-overlapping MNIST digits on a blank canvas (Eslami et al., 2016, '
                    "Attend, Infer, Repeat). boxes are (top, left, height, width) of each digit's "
                    'ink; boxes and labels are padded with -1.',
        features=tfds.features.FeaturesDict({
            k: tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)
            for k, shape, dtype in (('image', (config.canvas_size, config.canvas_size), np.uint8),
                                    ('count', (), np.int32),
                                    ('boxes', (max_objects, 4), np.int32),
                                    ('labels', (max_objects,), np.int32))}),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    config, digits = self.builder_config, mnist.load_mnist(self.mnist_dir)
    sizes = {'train': (config.num_train, config.seed), 'test': (config.num_test, config.seed + 1)}
    return {split: self._generate_examples(multi_mnist.MultiMNIST(
        *digits.split(split), counts=config.counts, num_examples=num_examples, seed=seed,
        canvas_size=config.canvas_size), split) for split, (num_examples, seed) in sizes.items()}

  def _generate_examples(self, source, split: str = ''):
    progress = metrics.ProgressPrinter(f'composing {split} scenes', lambda s: print(s, flush=True))
    for i in range(len(source)):
      yield i, source[i]
      progress(i + 1, len(source))  # with rate and ETA (tfds' own bar knows no total)


def build(data_dir, counts: Sequence[int] = (0, 1, 2), num_train: int = 60_000, num_test: int = 10_000,
          seed: int = 1, canvas_size: int = 50, mnist_dir=None) -> MultiMnist:
  """Prepares the dataset in data_dir (None: tfds' default) unless already there; returns its builder."""
  builder = MultiMnist(config=config_name(counts, canvas_size, num_train, num_test, seed),
                       data_dir=data_dir, mnist_dir=mnist_dir)
  builder.download_and_prepare()
  return builder


def parse_counts(text: str) -> tuple[int, ...]:
  """'0,1,2' -> (0, 1, 2)."""
  try:
    return tuple(int(c) for c in text.split(','))
  except ValueError:
    raise ValueError(f'--counts must be comma-separated integers like 0,1,2, got {text!r}') from None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description='Build Multi-MNIST as a TFDS dataset (array_record).',
                                   exit_on_error=False)
  parser.add_argument('--data_dir', default=None, help='TFDS data folder (default ~/tensorflow_datasets)')
  parser.add_argument('--mnist_dir', default=None,
                      help=f'MNIST cache folder (default ${mnist.DATA_DIR_ENV} or ~/.cache/air_jax)')
  parser.add_argument('--counts', default='0,1,2', help='digits per scene, drawn uniformly from this list')
  parser.add_argument('--canvas_size', type=int, default=50)
  parser.add_argument('--num_train', type=int, default=60_000)
  parser.add_argument('--num_test', type=int, default=10_000)
  parser.add_argument('--seed', type=int, default=1, help='train scenes use seed, test scenes seed + 1')
  try:
    args, unknown = parser.parse_known_args(argv)
    if unknown:
      raise ValueError(f'unrecognized arguments: {" ".join(unknown)}')
    counts = parse_counts(args.counts)
    name = config_name(counts, args.canvas_size, args.num_train, args.num_test, args.seed)
  except (argparse.ArgumentError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  tfds.disable_progress_bar()  # ours (composing scenes, with an ETA) is printed instead
  try:
    builder = build(args.data_dir, counts, args.num_train, args.num_test, args.seed, args.canvas_size,
                    args.mnist_dir)
  except mnist.MnistUnavailableError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'multi_mnist/{name}: {args.num_train} train + {args.num_test} test scenes in {builder.data_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
