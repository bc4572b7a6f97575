"""Runs a few train steps of the tiny config on every local device; saves parameters and losses.

Used by test_train.py, in a subprocess with 8 devices (XLA_FLAGS) and in its own process (1):
  python tests/data_parallel_run.py OUT.npz TFDS_DIR
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.conftest import load_config  # noqa: E402
from vivano_jax import input_pipeline  # noqa: E402
from vivano_jax import model as model_lib  # noqa: E402
from vivano_jax import sharding  # noqa: E402
from vivano_jax import train_step  # noqa: E402


def main(out_path, tfds_dir):
  config = load_config('tiny')
  config.dataset.data_dir = tfds_dir
  mesh = sharding.make_mesh()
  errors = []
  try:
    sharding.check_batch_size(12, 'train.batch_size', mesh)
  except ValueError as e:
    errors.append(str(e))
  data = input_pipeline.load(config, ('train',))['train']
  batches = input_pipeline.train_batches(data, config.dataset, config.train.batch_size, config.seed)
  state = train_step.create_train_state(config, model_lib.create_model(config), 10, mesh)
  step = train_step.make_train_step(config, mesh)
  losses = []
  for _ in range(4):
    state, m = step(state, sharding.global_batch(next(batches), mesh))
    losses.append(float(m.loss.compute()))
  flat = {'/'.join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(
              {'params': state.params, 'batch_stats': state.batch_stats})[0]}
  np.savez(out_path, losses=np.array(losses), num_devices=len(jax.devices()),
           errors=np.array(errors), **flat)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
