"""Several processes, one run: joining them, and who writes what.

Every process runs the same command and feeds its share of each global batch (parallel.py); the
mesh spans the devices of all of them. Joining: `initialize` calls `jax.distributed.initialize`
with a coordinator address, the number of processes and this process's id (flags, or the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or with nothing
on clusters JAX detects itself (TPU pods, SLURM, ...). On CPU the processes exchange gradients over
gloo (TCP), so two processes on one machine, or CPU hosts on a network, train as one.

Who writes: every process takes part in each Orbax checkpoint (Orbax's multi-process protocol:
each writes its shards, the primary the metadata); only the lead process (index 0) writes
TensorBoard, history.jsonl, config.json and prints progress. Evaluation is sharded over the
processes and gathered, so every process holds the same figures.

A lost process: the others' next collective fails (gloo: the peer closed the connection) or the
coordination service stops seeing its heartbeat (HEARTBEAT_TIMEOUT_SECONDS); `exit_in_one_line`
turns that (and any error of a multi-process run) into one line and exit status 1. Restarting every process resumes from the last
checkpoint.
"""
import os
import re
import socket
import sys

from absl import flags
import jax

HEARTBEAT_TIMEOUT_SECONDS = 30  # a process silent this long is taken as dead by the coordinator
JOIN_TIMEOUT_SECONDS = 300  # how long each process waits for all the others to start
FLAGS = ('coordinator_address', 'num_processes', 'process_id')  # the settings, as flags and arguments
ENVIRONMENT = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')  # and as variables


def settings(coordinator_address: str | None, num_processes: int | None,
             process_id: int | None) -> tuple | None:
  """(address, processes, id) from the arguments, else the environment; None when none is set.
  Raises ValueError unless all three are set and consistent."""
  given = [coordinator_address, num_processes, process_id]
  values = [value if value not in (None, '') else os.environ.get(name) or None
            for value, name in zip(given, ENVIRONMENT)]
  if all(v is None for v in values):
    return None
  missing = [f'--{flag} ({env})' for flag, env, v in zip(FLAGS, ENVIRONMENT, values) if v is None]
  if missing:
    raise ValueError(f'a multi-process run needs the coordinator address, the number of processes and '
                     f'this process\'s id: missing {", ".join(missing)}')
  address = str(values[0])
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit():
    raise ValueError(f'the coordinator address must be host:port (e.g. 10.0.0.1:1234), got {address!r}')
  try:
    count, index = int(values[1]), int(values[2])
  except ValueError:
    raise ValueError(f'the number of processes and the process id must be integers, got {values[1]!r} '
                     f'and {values[2]!r}') from None
  if count < 1 or not 0 <= index < count:
    raise ValueError(f'the process id must be in 0..{count - 1} for {count} process(es), got {index}')
  return address, count, index


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto_detect: bool = False,
               log=lambda line: print(line, flush=True)) -> None:
  """Joins this process to the others (see the module docstring); nothing when nothing is set.
  Waits up to JOIN_TIMEOUT_SECONDS for them. Call before any other JAX work."""
  joined = settings(coordinator_address, num_processes, process_id)
  if joined is None and not auto_detect:
    return
  # CPU collectives across processes (JAX's default CPU client has none); accelerators keep theirs.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  where = dict(zip(FLAGS, joined or ()))
  if joined:
    log(f'process {joined[2]} of {joined[1]}: joining the others at {joined[0]} '
        f'(waiting up to {JOIN_TIMEOUT_SECONDS} s)')
  # Past the timeout JAX itself ends the process (a native 'DEADLINE_EXCEEDED ... RegisterTask' abort,
  # which Python cannot catch): the line above says what it was waiting for.
  jax.distributed.initialize(**where, initialization_timeout=JOIN_TIMEOUT_SECONDS,
                             heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS)


def define_flags():
  """The launch flags of a multi-process run (absl): --distributed, or --coordinator_address,
  --num_processes and --process_id. Returns join(): joins the processes as the flags say (nothing
  when none is set); ValueError on bad settings. Call join() before any other JAX work."""
  auto = flags.DEFINE_bool(
      'distributed', False, 'Several processes on a cluster JAX detects itself (TPU pod, SLURM, ...): '
      'every process runs this same command and feeds its share of each global batch.')
  address = flags.DEFINE_string(
      'coordinator_address', None, 'Several processes, set by hand: host:port of process 0 '
      '(or $JAX_COORDINATOR_ADDRESS); with --num_processes and --process_id.')
  count = flags.DEFINE_integer('num_processes', None, 'Processes in the run (or $JAX_NUM_PROCESSES).')
  index = flags.DEFINE_integer('process_id', None, "This process's index, 0 first (or $JAX_PROCESS_ID).")
  return lambda: initialize(address.value, count.value, index.value, auto_detect=auto.value)


def is_lead() -> bool:
  """Whether this is the process that writes summaries, history and pictures (index 0)."""
  return jax.process_index() == 0


def say(line: str) -> None:
  """Prints line (flushed) on the lead process only: progress appears once, not once per process."""
  if is_lead():
    print(line, flush=True)


def free_local_port() -> int:
  """A TCP port free on 127.0.0.1 now: a coordinator address for processes on this machine."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def exit_in_one_line(error: Exception) -> None:
  """In a multi-process run, any error ends this process with one line on stderr and exit status 1
  at once, skipping JAX's and Orbax's shutdown (which wait on a dead process, then abort with long
  native and background-thread traces). A failed collective or barrier means another process
  stopped. Returns (does nothing) in a single-process run."""
  if jax.process_count() == 1:
    return
  # The root cause is at the end: 'INTERNAL: Error dispatching computation: ... Gloo all-reduce failed: ...'.
  cause = re.sub(r'(Error dispatching computation: )+', '', ' '.join(str(error).split()))[-240:]
  sys.stderr.write(f'error: process {jax.process_index()} of {jax.process_count()}: {cause} (if another process '
                   'stopped, restart every process with the same command to resume from the last checkpoint)\n')
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access
