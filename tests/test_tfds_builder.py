"""The TFDS Multi-MNIST builder, on a fake MNIST cache: no download, no TensorFlow."""
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from air_jax.data import mnist
from air_jax.data import multi_mnist
from air_jax.data import pipeline
from air_jax.data import tfds_builder
from tests import helpers

COUNTS, NUM_TRAIN, NUM_TEST, SEED = (0, 1, 2), 16, 8, 3


@pytest.fixture(scope='module')
def fake_mnist(tmp_path_factory):
  """(folder, Mnist) of a 12 + 6 digit MNIST cache; $AIR_JAX_DATA_DIR points at it too."""
  folder = tmp_path_factory.mktemp('mnist')
  digits = helpers.fake_mnist(seed=0, num_train=12, num_test=6)
  mnist.save_cache(digits, folder / mnist.CACHE_NAME)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(mnist.DATA_DIR_ENV, str(folder))
    yield folder, digits


@pytest.fixture(scope='module')
def built(fake_mnist, tmp_path_factory):
  """(data_dir, builder) of a 16 + 8 scene dataset."""
  data_dir = tmp_path_factory.mktemp('tfds')
  builder = tfds_builder.build(data_dir, counts=COUNTS, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=SEED,
                               mnist_dir=fake_mnist[0])
  return data_dir, builder


def reference(digits: mnist.Mnist, split: str) -> multi_mnist.MultiMNIST:
  num_examples, seed = (NUM_TRAIN, SEED) if split == 'train' else (NUM_TEST, SEED + 1)
  return multi_mnist.MultiMNIST(*digits.split(split), counts=COUNTS, num_examples=num_examples, seed=seed)


def assert_same(actual, expected):
  assert actual.keys() == expected.keys()
  for k in expected:
    assert actual[k].dtype == expected[k].dtype, k
    assert actual[k].shape == expected[k].shape, k
    np.testing.assert_array_equal(actual[k], expected[k], err_msg=k)


def test_no_tensorflow(built):
  assert 'tensorflow' not in sys.modules


def test_array_record_files(built):
  _, builder = built
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert list(builder.data_path.glob('multi_mnist-train.array_record-*'))


@pytest.mark.parametrize('split', ['train', 'test'])
def test_examples_match_multi_mnist(built, fake_mnist, split):
  source, expected = built[1].as_data_source(split), reference(fake_mnist[1], split)
  assert len(source) == len(expected) == (NUM_TRAIN if split == 'train' else NUM_TEST)
  for i in range(len(expected)):
    assert_same(source[i], expected[i])
  assert {int(source[i]['count']) for i in range(len(source))} <= set(COUNTS)


def test_get_batch(built, fake_mnist):
  source, indices = built[1].as_data_source('train'), np.array([5, 0, 15, 5])
  batch = pipeline.get_batch(source, indices)
  assert_same(batch, pipeline.get_batch(reference(fake_mnist[1], 'train'), indices))
  assert batch['image'].shape == (4, 50, 50) and batch['image'].dtype == np.uint8
  assert batch['count'].shape == (4,) and batch['count'].dtype == np.int32
  assert batch['boxes'].shape == (4, 2, 4) and batch['labels'].shape == (4, 2)


def test_tfds_data_source_by_name(built, fake_mnist):
  name = tfds_builder.config_name(COUNTS, 50, NUM_TRAIN, NUM_TEST, SEED)
  sources = tfds.data_source(f'multi_mnist/{name}', data_dir=built[0], download=False)
  assert set(sources) == {'train', 'test'} and len(sources['test']) == NUM_TEST
  assert_same(sources['test'][7], reference(fake_mnist[1], 'test')[7])
  assert_same(pipeline.get_batch(sources['test'], range(3)),
              pipeline.get_batch(reference(fake_mnist[1], 'test'), range(3)))


def test_config_names():
  name = tfds_builder.config_name((1, 3), 60, 10, 5, 0)
  assert name == 'counts_1_3-canvas_60-train_10-test_5-seed_0'
  config = tfds_builder.parse_config(name)
  fields = config.counts, config.canvas_size, config.num_train, config.num_test, config.seed
  assert fields == ((1, 3), 60, 10, 5, 0)
  assert tfds_builder.parse_config('counts_01_3-canvas_60-train_10-test_5-seed_0') is None
  with pytest.raises(ValueError, match='canvas_size'):
    tfds_builder.config_name(canvas_size=20)


def test_main(fake_mnist, tmp_path, capsys):
  argv = [f'--data_dir={tmp_path}', f'--mnist_dir={fake_mnist[0]}', '--counts=1,2', '--num_train=4',
          '--num_test=2']
  assert tfds_builder.main(argv) == 0
  name = 'counts_1_2-canvas_50-train_4-test_2-seed_1'
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last == f'multi_mnist/{name}: 4 train + 2 test scenes in {tmp_path / "multi_mnist" / name / "1.0.0"}'


@pytest.mark.parametrize('flag', ['--counts=0,x', '--counts=-1', '--num_train=abc', '--num_test=0',
                                  '--nmu_train=3'])
def test_main_bad_flags(tmp_path, capsys, flag):
  assert tfds_builder.main([f'--data_dir={tmp_path}', flag]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err
  assert not list(tmp_path.iterdir())
