"""What the collectives between processes cost: the train step's images/s in one process over both
cores, in one process on one core, and in two processes of one core each (gloo over localhost).

    python experiments/benchmark_processes.py --output=docs/results/processes

Each layout runs `experiments/benchmark.py` (compiled step, timed blocks, median) pinned to its
cores with `taskset`, at the same global batch; the two processes join as in a multi-process
training run (air_jax/distributed.py) and each feeds half the batch. Writes <output>.json and .md.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

from air_jax import distributed
from air_jax import launch

_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Global batch size (the default task trains at 64).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Steps per timed block.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed blocks (the median is reported).')
_OUTPUT = flags.DEFINE_string('output', None, 'Path without suffix: writes <output>.json and <output>.md.')
flags.mark_flags_as_required(['output'])
BENCHMARK = pathlib.Path(__file__).resolve().parent / 'benchmark.py'
# layout -> the cores of each of its processes
LAYOUTS = {'1 process x 2 cores': ['0,1'], '1 process x 1 core': ['0'], '2 processes x 1 core': ['0', '1']}


def run_layout(cores: list, folder: pathlib.Path) -> dict:
  """benchmark.py's row for this layout (written by process 0)."""
  output = folder / 'row.json'
  common = [sys.executable, str(BENCHMARK), f'--batch_sizes={_BATCH_SIZE.value}', '--precisions=float32',
            f'--steps={_STEPS.value}', f'--repeats={_REPEATS.value}', f'--output={output}']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # one CPU device a process
  port = distributed.free_local_port()
  processes = []
  for index, core_list in enumerate(cores):
    joined = ([f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={len(cores)}', f'--process_id={index}']
              if len(cores) > 1 else [])
    processes.append(subprocess.Popen(['taskset', '-c', core_list] + common + joined, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for process in processes:
    out, err = process.communicate()
    if process.returncode:
      launch.fail(f'benchmark.py on cores {core_list} failed: {err.strip().splitlines()[-1] if err.strip() else out}')
  return json.loads(output.read_text())['rows'][0]


def main(argv):
  del argv
  if shutil.which('taskset') is None:
    launch.fail('taskset (util-linux) is needed to pin each process to its cores')
  if (os.cpu_count() or 1) < 2:
    launch.fail('this benchmark needs at least 2 CPU cores')
  rows = {}
  for name, cores in LAYOUTS.items():
    with tempfile.TemporaryDirectory() as folder:
      row = run_layout(cores, pathlib.Path(folder))
    rows[name] = dict(cores=cores, images_per_second=row['images_per_second'],
                      steps_per_second=row['steps_per_second'], compile_seconds=row['compile_seconds'])
    print(f'{name}: {row["images_per_second"]:.0f} images/s', flush=True)
  two_processes, one_process = rows['2 processes x 1 core'], rows['1 process x 2 cores']
  record = dict(launch.provenance('python experiments/benchmark_processes.py'), batch_size=_BATCH_SIZE.value,
                layouts=rows, two_processes_over_one=two_processes['images_per_second'] / one_process['images_per_second'],
                two_processes_over_one_core=two_processes['images_per_second']
                / rows['1 process x 1 core']['images_per_second'])
  lines = [f'Command: `{record["command"]}`', '', f'Commit {record["commit"]}, {record["machine"]}, {record["date"]}; '
           f'global batch {record["batch_size"]}, the default task\'s train step (float32).', '',
           '| layout | cores | images/s | steps/s |', '|---|---|---|---|']
  lines += [f'| {name} | {" + ".join(r["cores"])} | {r["images_per_second"]:.0f} | {r["steps_per_second"]:.2f} |'
            for name, r in rows.items()]
  lines += ['', f'2 processes x 1 core / 1 process x 2 cores: {record["two_processes_over_one"]:.2f}; '
            f'/ 1 process x 1 core: {record["two_processes_over_one_core"]:.2f}.']
  pathlib.Path(_OUTPUT.value).parent.mkdir(parents=True, exist_ok=True)
  launch.write_results(_OUTPUT.value, record, '\n'.join(lines) + '\n')
  print('\n'.join(lines[4:]))


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
