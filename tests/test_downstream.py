"""Downstream tasks: labels on hand-built scenes, AIR slot features, classifiers, and the
experiment's smoke mode end to end (with its one-line errors)."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import evaluation
from air_jax import steps
from air_jax import downstream
from air_jax import metrics
from air_jax import models as models_lib
from tests import helpers


def box(top, left, height=20, width=10):
  return [top, left, height, width]


NONE = [-1, -1, -1, -1]
# (labels listed in arbitrary order, their ink boxes, sum, ascending left to right)
SCENES = [
    ([3, 5], [box(5, 30), box(10, 5)], 8, 0),    # left to right: 5, 3
    ([5, 3], [box(5, 30), box(10, 2)], 8, 1),    # left to right: 3, 5
    ([2, 9], [box(0, 1), box(25, 36)], 11, 1),   # 2 left of 9
    ([7, 7], [box(0, 20), box(25, 3)], 14, 1),   # equal digits: non-decreasing counts as ascending
    ([4, -1], [box(3, 40), NONE], 4, 1),         # one digit: trivially ascending
    ([-1, -1], [NONE, NONE], 0, 1),              # no digit: sum 0, trivially ascending
    ([0, 9], [box(0, 40), box(2, 0, width=28)], 9, 0),  # centres 45 vs 14: 9 is left of 0
    ([6, 1], [box(25, 20), box(0, 20)], 7, 1),   # same centre x: the upper one (1) reads first
]


def scene_arrays():
  labels = np.array([s[0] for s in SCENES], np.int32)
  boxes = np.array([s[1] for s in SCENES], np.int32)
  return labels, boxes


def test_task_labels_on_hand_built_scenes():
  labels, boxes = scene_arrays()
  np.testing.assert_array_equal(downstream.task_labels('sum', labels, boxes), [s[2] for s in SCENES])
  np.testing.assert_array_equal(downstream.task_labels('order', labels, boxes), [s[3] for s in SCENES])
  np.testing.assert_array_equal(downstream.left_to_right(labels, boxes)[:3], [[5, 3], [3, 5], [2, 9]])
  np.testing.assert_array_equal(downstream.left_to_right(labels, boxes)[4:6], [[4, -1], [-1, -1]])
  assert downstream.num_classes('sum', 2) == 19 and downstream.num_classes('order', 2) == 2
  with pytest.raises(ValueError, match='unknown task'):
    downstream.task_labels('product', labels, boxes)


def test_task_labels_on_composed_scenes_follow_the_boxes(scene_batch):
  """On real composed scenes: the sum matches the labels, and 'ascending' matches reading the
  digits' box centres left to right by hand."""
  labels, boxes, counts = scene_batch['labels'], scene_batch['boxes'], scene_batch['count']
  sums = downstream.digit_sum(labels)
  order = downstream.ascending(labels, boxes)
  for i in range(len(labels)):
    centres = [(boxes[i, k, 1] + boxes[i, k, 3] / 2, boxes[i, k, 0] + boxes[i, k, 2] / 2, labels[i, k])
               for k in range(counts[i])]
    read = [d for _, _, d in sorted(centres)]
    assert sums[i] == sum(read)
    assert order[i] == int(all(a <= b for a, b in zip(read, read[1:])))


def latents(x, present, d=2):
  """z_pres, z_where, z_what [1, N, ...] whose slot i has x position x[i] and z_what = i + 1."""
  n = len(x)
  z_pres = jnp.array([present], jnp.float32)
  z_where = jnp.array([[[0.7, xi, 0.1 * i] for i, xi in enumerate(x)]], jnp.float32)
  z_what = jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32)[None, :, None], (1, n, d))
  return z_pres, z_where, z_what


def test_slot_features_sort_present_slots_left_to_right_and_zero_absent_ones():
  slots = downstream.slot_features(*latents([0.5, -0.3, -0.9], [1, 1, 0]))
  assert slots.shape == (1, 3, 1 + 3 + 2)
  np.testing.assert_allclose(slots[0, 0], [1, 0.7, -0.3, 0.1, 2, 2], atol=1e-6)  # AIR's step 2
  np.testing.assert_allclose(slots[0, 1], [1, 0.7, 0.5, 0.0, 1, 1], atol=1e-6)  # AIR's step 1
  np.testing.assert_array_equal(slots[0, 2], np.zeros(6))  # absent, although its x is leftmost


def test_slot_features_do_not_depend_on_the_order_air_found_the_objects():
  z_pres, z_where, z_what = latents([0.5, -0.3, 0.1], [1, 1, 1])
  swapped = [2, 0, 1]
  np.testing.assert_array_equal(downstream.slot_features(z_pres, z_where, z_what),
                                downstream.slot_features(z_pres[:, swapped], z_where[:, swapped],
                                                         z_what[:, swapped]))


def test_slot_classifier_ignores_absent_slots_and_cnn_shapes():
  slots = np.asarray(downstream.slot_features(*latents([0.5, -0.3, 0.2], [1, 1, 0])))
  classifier = downstream.SlotClassifier(num_classes=19, hidden=16)
  params = classifier.init(jax.random.key(0), slots)['params']
  garbage = slots.copy()
  garbage[0, 2, 1:] = 5.0  # z_pres stays 0: the classifier must not read the rest
  np.testing.assert_allclose(classifier.apply({'params': params}, slots),
                             classifier.apply({'params': params}, garbage), atol=1e-6)
  cnn = downstream.CNN(num_classes=2, channels=(4, 4), hidden=8)
  images = np.zeros((3, 50, 50), np.uint8)
  logits = cnn.apply(cnn.init(jax.random.key(0), images), images)
  assert logits.shape == (3, 2)


def one_hot_digits(*digits):
  """[1, N, 10] digit distributions: one-hot for a digit, uniform for None."""
  return jnp.stack([jax.nn.one_hot(d, 10) if d is not None else jnp.full(10, 0.1) for d in digits])[None]


def test_digit_head_computes_the_tasks_from_per_slot_digits():
  present = jnp.array([[1.0, 1.0, 0.0]])
  dist = downstream.sum_distribution(one_hot_digits(3, 5, 7), present)  # the absent 7 is ignored
  assert dist.shape == (1, 28)
  np.testing.assert_allclose(dist[0], jax.nn.one_hot(8, 28), atol=1e-6)
  uniform = downstream.sum_distribution(one_hot_digits(None, None, None), jnp.ones((1, 3)))
  np.testing.assert_allclose(uniform.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose((uniform[0] * jnp.arange(28)).sum(), 3 * 4.5, rtol=1e-5)
  np.testing.assert_allclose(uniform[0, 0], 1e-3, rtol=1e-4)  # 0 + 0 + 0
  # Order: slots are already left to right.
  cases = [((3, 5, 0), (1, 1, 0), 1.0), ((5, 3, 0), (1, 1, 0), 0.0), ((4, 4, 9), (1, 1, 0), 1.0),
           ((7, 2, 1), (1, 0, 0), 1.0), ((7, 2, 1), (0, 0, 0), 1.0), ((1, 2, 2), (1, 1, 1), 1.0),
           ((1, 3, 2), (1, 1, 1), 0.0)]
  for digits, mask, expected in cases:
    p = downstream.ascending_probability(one_hot_digits(*digits), jnp.array([mask], jnp.float32))
    np.testing.assert_allclose(p, [expected], atol=1e-6, err_msg=str((digits, mask)))
  half = one_hot_digits(2, 4).at[0, 0].set(0.5 * (jax.nn.one_hot(2, 10) + jax.nn.one_hot(6, 10)))
  np.testing.assert_allclose(downstream.ascending_probability(half, jnp.ones((1, 2))), [0.5], atol=1e-6)


def test_digit_slot_classifier_gives_log_probabilities():
  slots = np.asarray(downstream.slot_features(*latents([0.5, -0.3, 0.2], [1, 1, 0])))
  for task, classes in (('sum', 19), ('order', 2)):
    head = downstream.DigitSlotClassifier(task, classes, hidden=16)
    logits = head.apply(head.init(jax.random.key(0), slots), slots)
    assert logits.shape == (1, classes)
    total = jax.scipy.special.logsumexp(logits, axis=-1)
    assert total[0] <= 1e-5 and (task == 'sum' or abs(total[0]) < 1e-5)


def test_fit_learns_a_separable_task_and_standardizer_keeps_absent_slots_zero():
  rng = np.random.default_rng(0)
  slots = rng.normal(size=(40, 2, 3)).astype(np.float32)
  slots[:, :, 0] = 1.0
  slots[::4, 1] = 0.0  # some scenes with an absent second slot
  targets = (slots[:, 0, 1] > 0).astype(np.int32)
  standardized = downstream.Standardizer(slots)(slots)
  np.testing.assert_array_equal(standardized[::4, 1], 0.0)
  np.testing.assert_array_equal(standardized[:, 0, 0], 1.0)
  module = downstream.SlotClassifier(num_classes=2, hidden=16)
  params, loss = downstream.fit(module, standardized, targets, num_steps=150, batch_size=16,
                                learning_rate=1e-2, weight_decay=0.0, seed=0)
  assert loss < 0.2
  assert (downstream.predict(module, params, standardized, batch_size=7) == targets).mean() == 1.0


def test_encoder_gives_sorted_slot_features_of_air():
  config = helpers.smoke_config('')
  config.model.z_pres_logit_bias = 20.0  # every step present
  images = np.zeros((3, 50, 50), np.uint8)
  images[:, 10:30, 5:20] = 200
  params = models_lib.build(config).core.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                                            jnp.zeros((1, 50, 50)))['params']
  slots = downstream.make_encoder(models_lib.build(config), batch_size=2)(params, images)  # 2 batches, one padded
  assert slots.shape == (3, config.model.max_steps, 1 + 3 + config.model.z_what_size)
  np.testing.assert_array_equal(slots[..., 0], 1.0)
  assert np.all(np.diff(slots[..., 2], axis=1) >= 0)  # x increases along the slots


def slots_by_hand(config, params, images):
  """slot_features' docstring applied to AIR.apply(use_mode=True), in numpy: per image, [z_pres,
  z_where, z_what] of the present steps ordered by z_where's x (stable), then zeros."""
  out = models_lib.build(config).core.apply({'params': params}, images.astype(np.float32) / 255.0, use_mode=True)
  z_pres, z_where, z_what = (np.asarray(a) for a in (out.z_pres, out.objects['z_where'], out.objects['z_what']))
  slots = np.zeros(z_pres.shape + (1 + 3 + z_what.shape[-1],), np.float32)
  for b in range(len(images)):
    present = np.flatnonzero(z_pres[b] > 0)
    order = present[np.argsort(z_where[b, present, 1], kind='stable')]
    slots[b, :len(order)] = np.concatenate([z_pres[b, order, None], z_where[b, order], z_what[b, order]], -1)
  return slots


def test_encoder_of_a_trained_air_gives_the_slots_of_its_modes(smoke_run, scene_batch):
  """On the smoke run's latest checkpoint (restored as a whole TrainState): the encoder's features
  are slot_features of AIR's modes; the params-only restore the experiment uses (load_air:
  evaluation.restore_model_params) gives the same parameters; the step-2 checkpoint gives other
  features, so the comparison would see the wrong parameters."""
  workdir, _, _, config = smoke_run
  assert not steps.uses_ema(config)
  params = helpers.restore_train_state(workdir, config).params['model']
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(evaluation.restore_model_params(workdir, models_lib.build(config))), params)
  images = scene_batch['image'][:5]
  slots = downstream.make_encoder(models_lib.build(config), batch_size=4)(params, images)  # a full and a padded batch
  expected = slots_by_hand(config, params, images)
  present = expected[..., 0] > 0
  assert present.any() and not present.all()  # some slots present (sorted), some absent (zeroed)
  np.testing.assert_array_equal(slots[..., 0], expected[..., 0])
  np.testing.assert_allclose(slots, expected, rtol=1e-5, atol=1e-5)
  earlier = slots_by_hand(config, helpers.restore_train_state(workdir, config, step=2).params['model'], images)
  assert not np.allclose(slots, earlier, rtol=1e-5, atol=1e-3)


def run_cli(*args, timeout=900):
  return subprocess.run([sys.executable, 'experiments/downstream.py', *args], cwd=helpers.REPO,
                        env=helpers.subprocess_env(), capture_output=True, text=True, timeout=timeout)


OUTPUTS = ('downstream.md', 'downstream.json', 'downstream.png', 'runs')


def test_smoke_mode_end_to_end(tmp_path):
  root = tmp_path / 'ds'
  mnist_dir = tmp_path / 'mnist'  # its own: the run caches scenes beside the digits
  helpers.write_fake_mnist(mnist_dir)
  run = run_cli(f'--workdir={root}', '--smoke', f'--data_dir={mnist_dir}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'training AIR' in run.stdout
  summary = json.loads((root / 'downstream.json').read_text())
  assert {(r['task'], r['model'], r['budget']) for r in summary['table']} == {
      (t, m, b) for t in ('sum', 'order') for m in ('air', 'air_digits', 'cnn') for b in (4, 8)}
  for r in summary['runs']:
    assert 0.0 <= r['accuracy'] <= 1.0 and r['settings']['num_eval'] == 16
  table = (root / 'downstream.md').read_text()
  assert '| labelled scenes | sum: AIR + MLP | sum: AIR + digit head | sum: CNN | order: AIR + MLP |' in table
  assert 'majority class' in table and table in run.stdout + '\n'
  assert (root / 'downstream.png').read_bytes()[:4] == b'\x89PNG'

  # Again, on the AIR it trained: every run is reused, nothing is encoded or trained.
  again = run_cli(f'--workdir={root}', '--smoke', f'--data_dir={mnist_dir}', f'--air_workdir={root / "air"}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert '12 of 12 runs finished earlier' in again.stdout and 'encoding' not in again.stdout
  assert json.loads((root / 'downstream.json').read_text())['runs'] == summary['runs']

  before = helpers.files_under(root)
  too_many = run_cli(f'--workdir={root}', '--smoke', f'--data_dir={mnist_dir}',
                     f'--air_workdir={root / "air"}', '--budgets=1000')
  helpers.assert_one_error_line(too_many, (), '--budgets', '1000', '64', returncode=1)
  assert helpers.files_under(root) == before  # no table, plot or run rewritten or added


def test_bad_air_workdir_is_one_error_line(tmp_path):
  outputs = [tmp_path / 'ds' / name for name in OUTPUTS]
  helpers.assert_one_error_line(run_cli(f'--workdir={tmp_path / "ds"}', f'--air_workdir={tmp_path / "nowhere"}'),
                                outputs, 'no such directory', returncode=1)
  untrained = tmp_path / 'untrained'
  untrained.mkdir()
  metrics.save_config(helpers.smoke_config(''), untrained)
  helpers.assert_one_error_line(run_cli(f'--workdir={tmp_path / "ds"}', f'--air_workdir={untrained}'),
                                outputs, 'has no checkpoint yet', returncode=1)
  assert [p.name for p in untrained.iterdir()] == ['config.json']  # no checkpoint folder made there
  helpers.assert_one_error_line(run_cli(f'--workdir={tmp_path / "ds"}', '--tasks=product'), outputs, '--tasks',
                                returncode=1)
  assert helpers.files_under(tmp_path / 'ds') == {}
