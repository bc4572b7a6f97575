"""Batch size x learning rate on the default configuration, learning rate scaled by sqrt(B / 32).

The learning rates below are the rates at batch 32 (train.lr_scaling='sqrt',
train.base_batch_size=32); a run at batch 128 trains with twice its rate (sqrt(128 / 32) = 2),
which `--dry_run` shows and each run's config.json records ('effective'). 3 x 3 = 9 runs, each a
full default run (a few minutes on 2 CPU cores):

  python -m vivano_jax.sweep run --sweep=sweeps/example.py --root=runs/example
  python -m vivano_jax.sweep gather --root=runs/example
"""

import ml_collections


def get_sweep():
  sweep = ml_collections.ConfigDict()
  sweep.base_config = '../configs/default.py'  # Relative to this file.
  # A ConfigDict cannot hold 'train.batch_size' as a key, so the grid nests like the config.
  sweep.grid = {'train': {'batch_size': [16, 32, 128],
                          'learning_rate': [3e-4, 1e-3, 3e-3]}}
  sweep.fixed = {'train': {'lr_scaling': 'sqrt', 'base_batch_size': 32}}
  return sweep
