"""Data parallelism on any number of devices: one mesh axis 'data', one jit-compiled step.

The batch is sharded P('data') over all devices; parameters, optimiser state and the baseline's
running statistics are replicated P(); `jax.jit` with these shardings compiles one SPMD program and
inserts the gradient all-reduce itself. This is what `jax.pmap` did, in its current form (pmap is
in maintenance mode since JAX 0.8). The same code runs on 1 CPU, 8 GPUs or a TPU pod (multi-host:
call `jax.distributed.initialize()` first; each process then feeds its slice of the global batch).
Random draws use threefry in its partitionable form (JAX's default), so a sample does not depend on
how the batch is split over devices.
"""
from typing import Any, Callable, Dict, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divisible(batch_size: int, mesh: Mesh, name: str = 'batch_size') -> None:
  """Raises ValueError unless the batch splits evenly over the mesh's devices (and processes)."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(f'{name}={batch_size} is not divisible by the {devices} devices')


def process_slice(global_size: int) -> slice:
  """This process's contiguous share of a global batch."""
  local = global_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def put_batch(local_batch: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, jax.Array]:
  """Process-local arrays -> global arrays sharded over the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicated_init(init_fn: Callable[[jax.Array], Any], mesh: Mesh) -> Callable[[jax.Array], Any]:
  """jit(init_fn) whose outputs are created directly replicated over the mesh (shapes from
  jax.eval_shape): never materialised on one device and copied."""
  abstract = jax.eval_shape(init_fn, jax.random.key(0))
  return jax.jit(init_fn, out_shardings=jax.tree.map(lambda _: replicated(mesh), abstract))


def create_replicated(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh) -> Any:
  """init_fn(key), created replicated over the mesh."""
  return replicated_init(init_fn, mesh)(key)


def to_host(tree: Any) -> Any:
  """Global arrays -> numpy on this host (gathered from every process when there are several)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def run_padded(fn: Callable[[np.ndarray], Any], array: np.ndarray, batch_size: int,
               to_host: Callable[[Any], Any] = jax.device_get) -> Any:
  """fn of array [n <= batch_size, ...] padded with zeros to batch_size rows (one compiled shape
  for every batch), brought to the host, each output's first n rows."""
  n = len(array)
  if not 0 < n <= batch_size:
    raise ValueError(f'run_padded takes 1 to batch_size={batch_size} rows, got {n}')
  if n < batch_size:
    array = np.concatenate([array, np.zeros((batch_size - n,) + array.shape[1:], array.dtype)])
  return jax.tree.map(lambda x: np.asarray(x)[:n], to_host(fn(array)))


def map_padded(fn: Callable[[np.ndarray, int], Any], array: np.ndarray, batch_size: int) -> Any:
  """fn(chunk, start) over array in chunks of batch_size rows (run_padded), outputs concatenated."""
  if not len(array):
    raise ValueError('map_padded: no rows to run on')
  outputs = [run_padded(lambda chunk: fn(chunk, start), array[start:start + batch_size], batch_size)
             for start in range(0, len(array), batch_size)]
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
