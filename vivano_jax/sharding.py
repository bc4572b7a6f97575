"""The device mesh, and moving rows between processes and the mesh.

Every array a step sees is global: its batch axis is sharded along the mesh axis 'data' (one slice
per device, across all hosts) and the train state is replicated. Each process feeds and reads back
only its own rows; the helpers here assemble and gather them.
"""

from typing import Optional

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from vivano_jax import errors


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh over every device of every process, axis 'data'."""
  return Mesh(np.array(devices if devices is not None else jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(batch_size: int, field: str, mesh: Mesh, grad_accum_steps: int = 1) -> None:
  """A global batch must split evenly over the devices and the processes; with gradient
  accumulation each of its `grad_accum_steps` microbatches is split over every device."""
  n, k = mesh.devices.size, grad_accum_steps
  if k < 1:
    raise errors.UsageError(f'train.grad_accum_steps must be a positive int, got {k}')
  if batch_size <= 0 or batch_size % (n * k):
    of = (f'the number of devices ({n})' if k == 1 else
          f'{n * k}: the number of devices ({n}) x train.grad_accum_steps={k}')
    raise errors.UsageError(f'{field}={batch_size} must be a positive multiple of {of}')
  if batch_size % jax.process_count():
    raise errors.UsageError(f'{field}={batch_size} must divide by the number of processes '
                            f'({jax.process_count()})')


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch from every process's local rows."""
  sharded = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharded, x), local)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # A row block may be replicated on several local devices.
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


def gather_rows(x: np.ndarray) -> np.ndarray:
  """Every process's rows of `x` (any number each), concatenated in process order."""
  if jax.process_count() == 1:
    return x
  n = multihost_utils.process_allgather(np.array(len(x)))
  pad = int(n.max()) - len(x)
  allx = multihost_utils.process_allgather(np.concatenate([x, np.zeros((pad,) + x.shape[1:],
                                                                       x.dtype)]))
  return np.concatenate([allx[i, :int(n[i])] for i in range(len(n))])


def sum_over_processes(x) -> np.ndarray:
  """The sum of `x` (a number or an array of one shape on every process) over all processes."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)


def any_process(flag: bool) -> bool:
  """True when `flag` is true on any process."""
  return bool(sum_over_processes(np.array(bool(flag), np.int64)))
