"""Held-out log-likelihood of a trained run: importance-weighted bounds L_K on log p(x) for several K,
and the count read from the importance weights beside q's mode (air_jax.bounds).

    python -m air_jax.evaluate --workdir=W [--num_samples=1,10,100,1000] [--num_images=1000]
    python -m air_jax.evaluate --workdir=W --split=validation --num_images=5000
    python -m air_jax.evaluate --workdir=W --images=IN.npz [--output=OUT.json]
    air-jax-evaluate ...  (the same, installed)

Without --images: the first --num_images scenes of the run's held-out split (config.data.eval_split,
or --split), with their true counts. --images: an npz (images [N, H, W], optional counts [N]) or a folder of
PNG/JPEG, as air_jax.infer reads them. Each image gets S draws from q (S the largest of
--num_samples; each K must divide S): L_K is the mean over the S / K groups of K draws, L_1 the
ELBO. Reported: each L_K's mean over images with its standard error (and per true count), the
count accuracy of q's mode and of the count with the largest posterior weight, each scored by the
kind's count-only evaluators (Multi-MNIST: accuracy by the nearest pair's distance and over scenes
holding a 1; the confusions in --output). --output writes them as JSON. Bad input ends with one line on stderr and exit status 1.
"""
import json
import pathlib
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax

from air_jax import bounds
from air_jax import checkpoints
from air_jax import evaluators as evaluators_lib
from air_jax import infer
from air_jax import launch
from air_jax import scenes
from air_jax.data import images as images_lib
from air_jax.data import sources


def parse_num_samples(text: str):
  """'1,10,100' -> (1, 10, 100); raises infer.InputError unless each is a positive integer
  dividing the largest."""
  try:
    values = tuple(sorted({int(v) for v in text.split(',') if v.strip()}))
  except ValueError:
    values = ()
  if not values or values[0] <= 0 or any(values[-1] % v for v in values):
    raise infer.InputError(f'--num_samples must be positive integers each dividing the largest '
                           f'(e.g. 1,10,100,1000), got {text!r}')
  return values


def evaluation_scenes(models, images_path, num_images: int, split: str | None = None):
  """(scenes {image [M, H, W], count [M] if known, the kind's truth}, what they are, whether they
  carry the kind's truth) of --images or of a split (default: the run's held-out split)."""
  if images_path:
    if split:
      raise infer.InputError('--split and --images exclude each other (--split picks the run\'s own scenes)')
    try:
      images, counts = images_lib.read(images_path, '--images', models.scene.image_shape[0], resize=True)
    except images_lib.ImagesError as e:
      raise infer.InputError(str(e)) from e
    return dict(image=images, **({} if counts is None else dict(count=counts))), str(images_path), False
  scene = models.scene
  split = split or scene.eval_split
  try:
    source = scene.scenes(split)
  except ValueError as e:  # the kind's data are missing or bad, or no such split
    raise infer.InputError(f'the run\'s {split} split: {e}') from e
  if not len(source):
    raise infer.InputError(f'the run\'s {split} split has no scenes')
  take = min(num_images, len(source))
  batch = dict(source.__getitems__(range(take)))
  if not scene.has_counts:
    batch.pop('count', None)
  return batch, f'the first {take} scenes of the {split} split', True


def count_readings(scene, scenes: dict, readings: dict, with_truth: bool, max_count: int) -> dict:
  """{reading: figures} of each reading of the count ({name: [M]}) against scenes['count']: the
  'counts' evaluator's and, where the scenes carry the kind's truth (with_truth), the figures of
  the kind's other count-only evaluators (air_jax.evaluators.COUNT_ONLY)."""
  names = [n for n in scene.all_evaluators() if n in evaluators_lib.COUNT_ONLY] if with_truth else ['counts']
  return {name: evaluators_lib.run(names, scenes, {'count': counts}, max_count) for name, counts in readings.items()}


def run(workdir, num_samples: str = '1,10,100,1000', images_path=None, num_images: int = 1000,
        batch_size: int = 100, seed: int = 0, log=print, split: str | None = None) -> dict:
  ks = parse_num_samples(num_samples)
  for name, value in (('num_images', num_images), ('batch_size', batch_size)):
    if value <= 0:
      raise infer.InputError(f'--{name} must be positive, got {value}')
  models = infer.load_models(workdir)
  scenes_batch, what, with_truth = evaluation_scenes(models, images_path, num_images, split)
  images, true_counts = scenes_batch['image'], scenes_batch.get('count')
  if true_counts is not None and (true_counts < 0).any():
    true_counts = None  # some counts unknown (-1): bounds and counts are not scored per count
  params = infer.load_params(workdir, models)
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  step = checkpointer.latest_step()
  checkpointer.close()
  start = time.time()
  log_w, drawn_counts = bounds.draw_log_weights(models, params, images, ks[-1], jax.random.key(seed),
                                                batch_size=batch_size, log=log)
  seconds = time.time() - start
  max_count = scenes.max_count(models.config)
  posterior = bounds.count_posterior(log_w, drawn_counts, max_count)
  mode_counts = infer.infer(models, params, sources.to_unit_interval(images), batch_size)['count']
  result = dict(workdir=str(workdir), checkpoint_step=step, images=what, num_images=len(images),
                draws=ks[-1], seconds=round(seconds, 1),
                bounds=bounds.summarise(log_w, ks, true_counts))
  if true_counts is not None:
    readings = count_readings(models.scene, scenes_batch, dict(mode=mode_counts, weights=posterior.argmax(-1)),
                              with_truth, max_count)
    result['count_accuracy_mode'] = readings['mode']['count_accuracy']
    result['count_accuracy_weights'] = readings['weights']['count_accuracy']
    result['count_readings'] = readings
  result['counts_differ'] = int((posterior.argmax(-1) != mode_counts).sum())
  return result


def report(result: dict) -> str:
  lines = [f'{result["workdir"]} (step {result["checkpoint_step"]}): {result["images"]}, '
           f'{result["draws"]} draws per image in {result["seconds"]:.0f}s']
  for k, entry in result['bounds'].items():
    per_count = ''.join(f'  count {c}: {v:.1f}' for c, v in entry.get('per_count', {}).items())
    lines.append(f'L_{k:<5} {entry["mean"]:9.2f} +- {entry["standard_error"]:.2f} nats' + per_count)
  if 'count_accuracy_mode' in result:
    lines.append(f'count accuracy: q\'s mode {result["count_accuracy_mode"]:.4f}, importance weights '
                 f'{result["count_accuracy_weights"]:.4f}')
    mode, weights = (result['count_readings'][r].get('accuracy_by_layout', {}) for r in ('mode', 'weights'))
    for layout, (accuracy, scenes_in) in mode.items():
      lines.append(f'  {layout} ({scenes_in} scenes): q\'s mode {accuracy:.3f}, importance weights {weights[layout][0]:.3f}')
  lines.append(f'images whose weighted count differs from the mode\'s: {result["counts_differ"]}')
  return '\n'.join(lines)


def define_flags() -> None:
  """The command's flags (defined only when it runs as a command)."""
  flags.DEFINE_string('workdir', None, 'Training workdir (its latest checkpoint is used).')
  flags.DEFINE_string('num_samples', '1,10,100,1000', 'K of the bounds L_K, each dividing the largest.')
  flags.DEFINE_string('images', None, 'npz or folder of PNG/JPEG to evaluate on (default: the held-out split).')
  flags.DEFINE_integer('num_images', 1000, 'Held-out scenes to evaluate on (without --images).')
  flags.DEFINE_string('split', None, 'The split to evaluate on (without --images; default: the run\'s held-out split).')
  flags.DEFINE_integer('batch_size', 100, 'Images per compiled call (x up to 50 draws each).')
  flags.DEFINE_integer('seed', 0, 'Seed of the draws.')
  flags.DEFINE_string('output', None, 'Also write the figures to this JSON file.')


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  args = flags.FLAGS
  if not args.workdir:
    launch.fail('--workdir is required')
  output = pathlib.Path(args.output) if args.output else None
  if output is not None and (output.is_dir() or not output.parent.is_dir()):
    launch.fail(f'--output: {output} is a directory or its folder does not exist')
  try:
    result = run(args.workdir, args.num_samples, args.images, args.num_images, args.batch_size, args.seed,
                 log=lambda s: print(s, file=sys.stderr, flush=True), split=args.split)
  except (infer.InputError, sources.UnavailableError) as e:
    launch.fail(str(e))
  print(report(result))
  if output is not None:
    try:
      output.write_text(json.dumps(dict(launch.provenance('python -m air_jax.evaluate'), **result), indent=1,
                                   default=lambda x: x.tolist()))
    except OSError as e:
      launch.fail(f'--output: cannot write {output} ({e})')
    print(f'wrote {output}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=launch.parse_flags)
