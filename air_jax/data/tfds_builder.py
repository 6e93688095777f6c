"""Multi-MNIST scenes and Omniglot characters as TFDS datasets, written as array_record files
without TensorFlow.

tfds 4.9 builds a `GeneratorBasedBuilder` without TensorFlow as long as the file format is
array_record (tfrecord would need `tf.io.TFRecordWriter`) and every feature is a `Tensor` (the
`Image` feature encodes PNGs with TF): examples are serialised with tfds' own copy of the
tf.Example protos and read back by `as_data_source` through `array_record` and numpy.

The train split is `MultiMNIST(MNIST train digits, seed=seed)`, the test split
`MultiMNIST(MNIST test digits, seed=seed + 1)`; example i of a split is example i of that source
(shuffling is disabled). The default seed 1 thus gives the scenes of `air_jax/configs/multi_mnist.py`
(train seed 1, eval seed 2). Features are stored as raw bytes, so the data source yields what
`MultiMNIST` does: dicts of numpy arrays of the same dtypes and shapes (`count` as a 0-d array;
arrays are read-only views, and an index out of range raises ValueError), and
`pipeline.get_batch` takes it as it is. Every setting is part of the config name, so a built
config loads by name, even without this module:

    python -m air_jax.data.tfds_builder --data_dir=DIR --counts=0,1,2 --num_train=60000 --num_test=10000

    import tensorflow_datasets as tfds
    train = tfds.data_source('multi_mnist/counts_0_1_2-canvas_50-train_60000-test_10000-seed_1',
                             split='train', data_dir=DIR, download=False)

Omniglot (`OmniglotCharacters`: the splits of air_jax.scenes.omniglot, named by the archives and
the canvas):

    python -m air_jax.data.tfds_builder --dataset=omniglot --data_dir=DIR [--archive_dir=FULL]
    tfds.data_source('omniglot_characters/images_background_small1-images_background_small2-canvas_50', ...)
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
from air_jax.data import omniglot
from air_jax.data import sources

NAME_PATTERN = re.compile(r'counts_(\d+(?:_\d+)*)-canvas_(\d+)-train_(\d+)-test_(\d+)-seed_(\d+)')


def config_name(counts: Sequence[int] = (0, 1, 2), canvas_size: int = 50, num_train: int = 60_000,
                num_test: int = 10_000, seed: int = 1) -> str:
  """The config name holding these settings: 'counts_0_1_2-canvas_50-train_60000-test_10000-seed_1'."""
  counts = tuple(int(c) for c in counts)
  sources.check_counts('counts', counts)
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
    return examples_of(source, f'composing {split} scenes')


def examples_of(source, what: str):
  """(i, source[i]) for every example of a random-access source, with progress lines (rate, ETA:
  tfds' own bar knows no total)."""
  progress = metrics.ProgressPrinter(what, lambda s: print(s, flush=True))
  for i in range(len(source)):
    yield i, source[i]
    progress(i + 1, len(source))


OMNIGLOT_NAME = re.compile(r'([\w.()]+)-([\w.()]+)-canvas_(\d+)')


def omniglot_config_name(train_archive: str = omniglot.SAMPLE_TRAIN,
                         eval_archive: str = omniglot.SAMPLE_EVAL, canvas_size: int = 50) -> str:
  """'images_background_small1-images_background_small2-canvas_50': the archives' stems and the canvas."""
  stems = [str(epath.Path(name).stem) for name in (train_archive, eval_archive)]
  if not all(OMNIGLOT_NAME.fullmatch(f'{s}-x-canvas_1') for s in stems):
    raise ValueError(f'archive names must be letters, digits, _ . ( ) only, got {stems}')
  return f'{stems[0]}-{stems[1]}-canvas_{int(canvas_size)}'


class OmniglotCharacters(tfds.core.GeneratorBasedBuilder):
  """Omniglot characters as `air_jax.scenes.omniglot` reads them: train = the train archive's,
  test = the held-out archive's less the train archive's alphabets; example i of a split is example
  i of that source (image uint8 [canvas, canvas], count -1, alphabet, character)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=omniglot_config_name())]

  def __init__(self, *, archive_dir: str = '', file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs):
    """archive_dir: the folder holding the config's archives ('' = the shipped sample)."""
    self.archive_dir = archive_dir
    super().__init__(file_format=file_format, **kwargs)

  code_path = MultiMnist.code_path

  @classmethod
  def get_builder_config(cls, name, version=None):
    """Any name made by `omniglot_config_name`."""
    return super().get_builder_config(name, version) or (
        tfds.core.BuilderConfig(name=name) if OMNIGLOT_NAME.fullmatch(name) else None)

  def _split(self, split: str) -> omniglot.Omniglot:
    train, held_out, canvas = OMNIGLOT_NAME.fullmatch(self.builder_config.name).groups()
    return omniglot.split_of(split, self.archive_dir, f'{train}.zip', f'{held_out}.zip', int(canvas))

  def _info(self) -> tfds.core.DatasetInfo:
    size = int(OMNIGLOT_NAME.fullmatch(self.builder_config.name).group(3))
    return tfds.core.DatasetInfo(
        builder=self,
        description='Omniglot characters (Lake et al., 2015): strokes white on black, area-averaged '
                    'to the canvas; the test split holds only alphabets the train split lacks.',
        features=tfds.features.FeaturesDict({
            k: tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)
            for k, shape, dtype in (('image', (size, size), np.uint8), ('count', (), np.int32),
                                    ('alphabet', (), np.int32), ('character', (), np.int32))}),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(self._split(split), split) for split in ('train', 'test')}

  def _generate_examples(self, source, split: str = ''):
    return examples_of(source, f'reading {split} characters')


def build_omniglot(data_dir, train_archive: str = omniglot.SAMPLE_TRAIN,
                   eval_archive: str = omniglot.SAMPLE_EVAL, canvas_size: int = 50,
                   archive_dir: str = '') -> OmniglotCharacters:
  """Prepares the Omniglot dataset in data_dir unless already there; returns its builder."""
  builder = OmniglotCharacters(config=omniglot_config_name(train_archive, eval_archive, canvas_size),
                               data_dir=data_dir, archive_dir=archive_dir)
  builder.download_and_prepare()
  return builder


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
  parser.add_argument('--dataset', choices=('multi_mnist', 'omniglot'), default='multi_mnist',
                      help='omniglot: characters of --train_archive and --eval_archive (less its '
                           'alphabets the train archive has) in --archive_dir (default: the shipped sample)')
  parser.add_argument('--archive_dir', default='')
  parser.add_argument('--train_archive', default=omniglot.SAMPLE_TRAIN)
  parser.add_argument('--eval_archive', default=omniglot.SAMPLE_EVAL)
  try:
    args, unknown = parser.parse_known_args(argv)
    if unknown:
      raise ValueError(f'unrecognized arguments: {" ".join(unknown)}')
    if args.dataset == 'omniglot':
      name = omniglot_config_name(args.train_archive, args.eval_archive, args.canvas_size)
    else:
      counts = parse_counts(args.counts)
      name = config_name(counts, args.canvas_size, args.num_train, args.num_test, args.seed)
  except (argparse.ArgumentError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  tfds.disable_progress_bar()  # ours (composing scenes, with an ETA) is printed instead
  if args.dataset == 'omniglot':
    try:
      builder = build_omniglot(args.data_dir, args.train_archive, args.eval_archive, args.canvas_size,
                               args.archive_dir)
    except ValueError as e:  # omniglot.OmniglotUnavailableError: a missing or malformed archive
      print(f'error: {e}', file=sys.stderr)
      return 1
    sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
    print(f'omniglot_characters/{name}: {sizes["train"]} train + {sizes["test"]} test characters '
          f'in {builder.data_dir}')
    return 0
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
