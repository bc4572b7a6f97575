"""`python -m vivano_jax.main` with two test hooks, for test_multiprocess.py.

  python tests/multiprocess_main.py DUMP_DIR <vivano_jax.main flags...>

1. Training batches are synthetic and depend on the global batch only: the global batch of step t
   is drawn from a generator seeded by (seed, t), and each process feeds its rows of it, in process
   order (the order of the devices in `sharding.make_mesh`). Any number of processes therefore trains
   on exactly the same data, which the real input pipeline does not give (each process reads its
   own shard in its own permutation; see test_multiprocess.py).
2. Before the evaluation, every process writes its own copy of the parameters and BatchNorm
   statistics to DUMP_DIR/process<i>.npz, so the test can check that all processes hold the same.
Everything else (distributed start-up, mesh, train step, checkpoints, evaluation) is main's code.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vivano_jax import cli  # noqa: E402
from vivano_jax import input_pipeline  # noqa: E402
from vivano_jax import train  # noqa: E402


def synthetic_train_batches(data, cfg, local_batch, seed, start_step=0, process_index=None):
  """Local rows of a global batch {'image': float32 [P * local_batch, S, S, C] in [-1, 1]}."""
  del data
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count()
  step = start_step
  while True:
    rng = np.random.default_rng([seed, step])
    images = rng.uniform(-1.0, 1.0, (n * local_batch, cfg.image_size, cfg.image_size, cfg.channels))
    yield {'image': images[p * local_batch:(p + 1) * local_batch].astype(np.float32)}
    step += 1


def dump_then_evaluate(dump_dir, evaluate_run):
  def wrapped(state, *args, **kwargs):
    tree = {'params': state.params, 'batch_stats': state.batch_stats}
    # A replicated array: this process's first local copy.
    flat = {'/'.join(str(k.key) for k in path): np.asarray(x.addressable_data(0))
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    np.savez(os.path.join(dump_dir, f'process{jax.process_index()}.npz'),
             step=int(state.step), num_devices=jax.device_count(),
             num_processes=jax.process_count(), **flat)
    return evaluate_run(state, *args, **kwargs)
  return wrapped


if __name__ == '__main__':
  dump_dir = sys.argv.pop(1)
  os.makedirs(dump_dir, exist_ok=True)
  input_pipeline.train_batches = synthetic_train_batches
  train.evaluate_run = dump_then_evaluate(dump_dir, train.evaluate_run)
  cli.main_for('train')
