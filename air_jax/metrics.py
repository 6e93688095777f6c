"""Metrics and what a run writes: confusion matrices, progress lines, TensorBoard scalars, the
run's config and its evaluation history (history.jsonl)."""
import json
import pathlib
import time
from typing import Any, Callable, Dict

import ml_collections
import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, max_count: int) -> np.ndarray:
  """[max_count + 1, max_count + 1] int: row = true count, column = inferred count."""
  matrix = np.zeros((max_count + 1, max_count + 1), np.int64)
  np.add.at(matrix, (np.clip(true, 0, max_count), np.clip(predicted, 0, max_count)), 1)
  return matrix


def format_evaluation(result: Dict[str, Any], note: str = '') -> str:
  """evaluation.evaluate's result in lines: a line of figures (then `note`), then the confusion
  where the counts are known (and the accuracy by layout where reported), else the share of
  images using each number of steps."""
  line = (f'count accuracy {result["count_accuracy"]:.4f}  ' if 'count_accuracy' in result else '') + (
      f'elbo {result["elbo"]:.1f}  '
      + (f'importance bound {result["importance_bound"]:.1f}  ' if 'importance_bound' in result else '')
      + f'reconstruction mse {result["reconstruction_mse"]:.5f}  '
      f'mean steps {result["mean_steps"]:.2f}  {note}').rstrip()
  if 'accuracy_by_layout' in result:
    line += '\nby layout: ' + ' | '.join(f'{name} {accuracy:.3f} ({scenes})'
                                         for name, (accuracy, scenes) in result['accuracy_by_layout'].items())
  if 'objects' in result:  # 3D: the objects matched by position
    line += '\nobjects: ' + '  '.join(f'{name.replace("_", " ")} {value:.4g}' for name, value in result['objects'].items())
  if 'confusion' in result:
    return line + '\n' + format_confusion(result['confusion'])
  return line + '\nsteps used: ' + '  '.join(f'{c}: {share:.3f}' for c, share in enumerate(result['steps_used']))


def format_confusion(matrix: np.ndarray) -> str:
  """Rows: true count, columns: inferred count (only rows with examples)."""
  header = 'true\\inferred ' + ' '.join(f'{j:>6d}' for j in range(matrix.shape[1]))
  rows = [f'{i:>13d} ' + ' '.join(f'{v:>6d}' for v in row) for i, row in enumerate(matrix) if row.sum()]
  return '\n'.join([header] + rows)


def format_duration(seconds: float) -> str:
  """45s, 12m05s, 3h07m."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def format_rate(per_second: float) -> str:
  """120/s, 2.5/s, or 40s each when slower than one a second."""
  if per_second >= 10:
    return f'{per_second:.0f}/s'
  if per_second >= 1:
    return f'{per_second:.1f}/s'
  return f'{format_duration(1 / max(per_second, 1e-9))} each'


def progress_line(step: int, total: int, m: Dict[str, float], train_seconds: float) -> str:
  """One line of training progress; the object KLs are the metrics named kl_<latent>."""
  eta = format_duration((total - step) / max(m['steps_per_second'], 1e-9))
  object_kls = ''.join(f' {k[3:]} {v:.2f}' for k, v in m.items() if k.startswith('kl_') and k != 'kl_pres')
  accuracy = f' train acc {m["train_count_accuracy"]:.3f}' if 'train_count_accuracy' in m else ''
  return (f'step {step}/{total} | {m["steps_per_second"]:.1f} steps/s {m["images_per_second"]:.0f} img/s '
          f'| elbo {m["elbo"]:.1f} (log p(x|z) {m["log_likelihood"]:.1f}, kl pres {m["kl_pres"]:.2f}'
          f'{object_kls}) | count {m["count"]:.2f}{accuracy} | t {train_seconds:.0f}s eta {eta}')


def plot_evaluations(workdirs, path, panels, labels=None) -> None:
  """PNG (matplotlib): one panel per (history key, y label) of `panels`, each workdir's evaluations
  (history.jsonl 'eval' records) of that key against training time, labelled labels[i] (default:
  the workdir's name)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
  for workdir, label in zip(workdirs, labels or [pathlib.Path(w).name for w in workdirs]):
    evaluations = read_evaluations(workdir)
    for ax, (key, _) in zip(axes[0], panels):
      ax.plot([r['train_seconds'] for r in evaluations], [r[key] for r in evaluations], marker='o', label=label)
  for ax, (_, ylabel) in zip(axes[0], panels):
    ax.set(xlabel='training time (s)', ylabel=ylabel)
    ax.grid(True, color='0.9')
    ax.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


class ProgressPrinter:
  """progress(done, total) calls log with the count done, the rate and the ETA, at most every
  `every` seconds (every=0: at every call) and never once all is done."""

  def __init__(self, what: str, log: Callable[[str], None], every: float = 5.0):
    self.what, self.log, self.every = what, log, every
    self.start = self.last = time.time()

  def __call__(self, done: int, total: int) -> None:
    now = time.time()
    if now - self.last >= self.every and 0 < done < total:
      rate = done / max(now - self.start, 1e-9)
      self.log(f'{self.what}: {done}/{total} ({format_rate(rate)}, eta {format_duration((total - done) / rate)})')
      self.last = now


class SummaryWriter:
  """TensorBoard scalars and images under <workdir>/tensorboard (tensorboardX: no TensorFlow needed).
  writes=False (a process other than the lead one of a multi-process run): touches no file."""

  def __init__(self, workdir: pathlib.Path, writes: bool = True):
    from tensorboardX import SummaryWriter as _Writer
    self._writer = _Writer(str(pathlib.Path(workdir) / 'tensorboard')) if writes else None

  def scalars(self, step: int, values: Dict[str, Any]) -> None:
    if self._writer is None:
      return
    for name, value in values.items():
      if np.ndim(value) == 0 and np.isfinite(value):  # NaN: not measured (train acc without counts)
        self._writer.add_scalar(name if '/' in name else f'train/{name}', float(value), step)
    self._writer.flush()

  def image(self, step: int, tag: str, array: np.ndarray) -> None:
    """One image summary: array [H, W, 3] uint8 (or [H, W] greyscale; floats are taken as 0-1)."""
    if self._writer is None:
      return
    array = np.asarray(array)
    self._writer.add_image(tag, array, step, dataformats='HWC' if array.ndim == 3 else 'HW')
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def save_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  (pathlib.Path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads((pathlib.Path(workdir) / 'config.json').read_text()))


def read_history(workdir: pathlib.Path):
  """The records of <workdir>/history.jsonl (read only; [] when there is none)."""
  path = pathlib.Path(workdir) / 'history.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_evaluations(workdir: pathlib.Path):
  """The evaluation records (kind 'eval') of <workdir>/history.jsonl, in step order."""
  return [r for r in read_history(workdir) if r.get('kind') == 'eval']


def first_crossing(evaluations, threshold: float):
  """(step, train_seconds) of the first evaluation record whose count accuracy is >= threshold,
  or None."""
  for record in evaluations:
    if record['count_accuracy'] >= threshold:
      return record['step'], record['train_seconds']
  return None


def summarise_count_accuracy(workdir: pathlib.Path, thresholds) -> dict:
  """A run's held-out count accuracy from its history: final_step, final_accuracy, best_accuracy,
  crossings {threshold: first_crossing or None} and curve [(step, train_seconds, accuracy)]."""
  evaluations = read_evaluations(workdir)
  if not evaluations:
    raise ValueError(f'{workdir} has no evaluations in history.jsonl')
  if 'count_accuracy' not in evaluations[-1]:
    raise ValueError(f'{workdir} has no count accuracy to summarise: its data have no true counts '
                     f'(its evaluations report elbo and mean_steps instead)')
  return count_accuracy_summary(evaluations, thresholds)


def count_accuracy_summary(evaluations, thresholds) -> dict:
  """summarise_count_accuracy of a run's evaluation records (each with a count_accuracy)."""
  return dict(final_step=evaluations[-1]['step'], final_accuracy=evaluations[-1]['count_accuracy'],
              best_accuracy=max(r['count_accuracy'] for r in evaluations),
              crossings={t: first_crossing(evaluations, t) for t in thresholds},
              curve=[(r['step'], r['train_seconds'], r['count_accuracy']) for r in evaluations])


class History:
  """history.jsonl: one record per evaluation and per checkpoint. Reopened at a resumed step, it
  drops records newer than that step, so a resumed run's history matches an uninterrupted one.
  writes=False (a process other than the lead one): keeps the records, touches no file."""

  def __init__(self, workdir: pathlib.Path, resume_step: int = 0, writes: bool = True):
    self.path = pathlib.Path(workdir) / 'history.jsonl'
    self.writes = writes
    self.records = [r for r in read_history(workdir) if r['step'] <= resume_step]
    if writes:
      self._rewrite()

  def _rewrite(self) -> None:
    tmp = self.path.with_suffix('.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in self.records))
    tmp.replace(self.path)

  def append(self, record: Dict[str, Any]) -> None:
    self.records.append(record)
    if not self.writes:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def train_seconds(self) -> float:
    """Training time up to the last checkpoint record (0 for a new run)."""
    saved = [r['train_seconds'] for r in self.records if r.get('kind') == 'checkpoint']
    return saved[-1] if saved else 0.0

  def evaluations(self):
    return [r for r in self.records if r.get('kind') == 'eval']


def run_summary(workdir, seed: int, thresholds=(0.95, 0.98)) -> dict:
  """A finished run's figures from its history: its last evaluation, and where it has counts
  summarise_count_accuracy's (first evaluations at each threshold, final and best accuracy) and
  the lowest accuracy after the first at >= 98%."""
  evaluations = read_evaluations(workdir)
  if not evaluations:
    raise ValueError(f'{workdir} has no evaluations in history.jsonl')
  final = evaluations[-1]
  row = dict(seed=seed, final_step=final['step'], train_seconds=final['train_seconds'], elbo=final['elbo'],
             reconstruction_mse=final['reconstruction_mse'], mean_steps=final['mean_steps'])
  if 'count_accuracy' in final:
    counts = count_accuracy_summary(evaluations, thresholds)
    reached = counts['crossings'].get(0.98)
    row.update(final_accuracy=counts['final_accuracy'], best_accuracy=counts['best_accuracy'],
               confusion=final['confusion'],
               crossings={str(t): counts['crossings'][t] for t in thresholds},
               lowest_after_98=(min(r['count_accuracy'] for r in evaluations if r['step'] >= reached[0])
                                if reached else None),
               curve=counts['curve'])
  for name in ('accuracy_by_layout', 'objects'):
    if name in final:
      row[name] = final[name]
  return row
