"""The TFDS Multi-MNIST builder, on a fake MNIST cache: no download, no TensorFlow."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from air_jax.data import mnist
from air_jax.data import multi_mnist
from air_jax.data import pipeline
from air_jax.data import tfds_builder
from air_jax import models as models_lib
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


# Run in a fresh interpreter (argv: stand-in folder, data_dir, mnist_dir, arrays.npz). A stand-in
# `tensorflow` package that imports fine is put on sys.path; then every finder on sys.meta_path is
# wrapped so that it finds no tensorflow module: `import tensorflow` (or tensorflow.*) raises
# ImportError and importlib.util.find_spec('tensorflow') is None, exactly as where TensorFlow is not
# installed (etils and tfds probe it both ways, and take 'tensorflow' in sys.modules to mean it is
# loaded, so neither sys.modules['tensorflow'] = None nor a finder that raises will do). Then the
# dataset is built, read back and its arrays saved.
NO_TENSORFLOW_BUILD = textwrap.dedent("""
    import importlib.util, json, sys
    stand_in, data_dir, mnist_dir, arrays = sys.argv[1:]
    sys.path.insert(0, stand_in)
    import tensorflow  # importable before the block ...
    assert tensorflow.IS_THE_TEST_STAND_IN
    del sys.modules['tensorflow'], tensorflow
    looked_up = []

    class FindsNoTensorFlow:
      def __init__(self, finder):
        self.finder = finder
      def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.'):
          looked_up.append(name)
          return None
        return self.finder.find_spec(name, path, target)
      def __getattr__(self, name):
        return getattr(self.finder, name)

    sys.meta_path[:] = [FindsNoTensorFlow(f) for f in sys.meta_path]
    try:  # ... and not after it
      import tensorflow
      blocked = False
    except ImportError:
      blocked = importlib.util.find_spec('tensorflow') is None
    looked_up.clear()

    import numpy as np
    from air_jax.data import pipeline, tfds_builder
    builder = tfds_builder.build(data_dir, counts=(%s), num_train=%d, num_test=%d, seed=%d, mnist_dir=mnist_dir)
    sources = {split: builder.as_data_source(split) for split in ('train', 'test')}
    batches = {split: pipeline.get_batch(source, range(len(source))) for split, source in sources.items()}
    np.savez(arrays, **{f'{split}/{k}': v for split, batch in batches.items() for k, v in batch.items()})
    print(json.dumps(dict(blocked=blocked, loaded=[m for m in sys.modules if m.split('.')[0] == 'tensorflow'],
                          looked_up=sorted(set(looked_up)), file_format=str(builder.info.file_format))))
""") % (','.join(map(str, COUNTS)), NUM_TRAIN, NUM_TEST, SEED)


def test_no_tensorflow(fake_mnist, tmp_path):
  """With `import tensorflow` failing (even where a TensorFlow package is installed: the stand-in
  here), a fresh build succeeds and its splits read back as MultiMNIST's scenes."""
  (tmp_path / 'fake_tf' / 'tensorflow').mkdir(parents=True)
  (tmp_path / 'fake_tf' / 'tensorflow' / '__init__.py').write_text('IS_THE_TEST_STAND_IN = True\n')
  process = subprocess.run(
      [sys.executable, '-c', NO_TENSORFLOW_BUILD, str(tmp_path / 'fake_tf'), str(tmp_path / 'tfds'),
       str(fake_mnist[0]), str(tmp_path / 'arrays.npz')],
      cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  report = json.loads(process.stdout.strip().splitlines()[-1])
  assert report['blocked'], 'the block did not stop `import tensorflow`'
  assert report['loaded'] == []  # (tfds may look for it: report['looked_up'])
  assert report['file_format'] == str(tfds.core.FileFormat.ARRAY_RECORD)
  with np.load(tmp_path / 'arrays.npz') as arrays:
    for split in ('train', 'test'):
      expected = pipeline.get_batch(reference(fake_mnist[1], split), range(NUM_TRAIN if split == 'train' else NUM_TEST))
      assert_same({k: arrays[f'{split}/{k}'] for k in expected}, expected)


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


@pytest.mark.parametrize('flag, fragment', [
    ('--counts=0,x', "--counts must be comma-separated integers like 0,1,2, got '0,x'"),
    ('--counts=-1', 'counts must be a non-empty set of counts >= 0, got (-1,)'),
    ('--num_train=abc', "argument --num_train: invalid int value: 'abc'"),
    ('--num_test=0', 'num_train and num_test must be positive, got 60000 and 0'),
    ('--nmu_train=3', 'unrecognized arguments: --nmu_train=3')])
def test_main_bad_flags(tmp_path, capsys, flag, fragment):
  code = tfds_builder.main([f'--data_dir={tmp_path}', flag])
  helpers.assert_one_error_line((code, capsys.readouterr().err), (), fragment, returncode=2)
  assert not list(tmp_path.iterdir())  # nothing written into --data_dir


def test_omniglot_characters(tmp_path, capsys):
  """Omniglot's splits as TFDS array_record, read back by name as the scene kind's sources."""
  from air_jax.configs import omniglot as omniglot_config  # pylint: disable=g-import-not-at-top
  from tests import test_omniglot  # pylint: disable=g-import-not-at-top
  members = {}
  for alphabet, characters in (('Alpha', 2), ('Bravo', 1)):
    for c in range(1, characters + 1):
      drawing = test_omniglot.paper()
      drawing[:10 * c, :30] = False
      members[f'{alphabet}/character0{c}/{alphabet}{c}.png'] = test_omniglot.png_bytes(drawing)
  test_omniglot.write_archive(tmp_path / 'train_part.zip', members)
  test_omniglot.write_archive(tmp_path / 'held_out.zip', {  # Alpha is left out of the test split
      **{k: v for k, v in members.items() if k.startswith('Alpha/')},
      'Charlie/character01/c.png': test_omniglot.png_bytes(test_omniglot.paper())})
  argv = [f'--data_dir={tmp_path / "tfds"}', '--dataset=omniglot', f'--archive_dir={tmp_path}',
          '--train_archive=train_part.zip', '--eval_archive=held_out.zip', '--canvas_size=21']
  assert tfds_builder.main(argv) == 0
  name = 'train_part-held_out-canvas_21'
  assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
      f'omniglot_characters/{name}: 3 train + 1 test characters in ')
  sources = tfds.data_source(f'omniglot_characters/{name}', data_dir=tmp_path / 'tfds', download=False)
  config = omniglot_config.get_config()
  config.data.archive_dir, config.data.canvas_size = str(tmp_path), 21
  config.data.train_archive, config.data.eval_archive = 'train_part.zip', 'held_out.zip'
  scene = models_lib.build(config).scene
  for split in ('train', 'test'):
    expected = scene.scenes(split)
    assert len(sources[split]) == len(expected)
    assert_same(pipeline.get_batch(sources[split], range(len(expected))),
                pipeline.get_batch(expected, range(len(expected))))
  code = tfds_builder.main([f'--data_dir={tmp_path / "none"}', '--dataset=omniglot', f'--archive_dir={tmp_path}',
                            '--train_archive=missing.zip'])
  helpers.assert_one_error_line((code, capsys.readouterr().err), (), 'no Omniglot archive at', returncode=1)
