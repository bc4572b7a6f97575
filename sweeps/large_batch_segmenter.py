"""The large-batch study on the segmenter recipe: sweeps/large_batch.py's runs (batches, methods,
20-epoch budget, seeds, 8 devices, run order and indices) with configs/magnetic_tile.py as the
base config, the recipe configs/magnetic_tile.py and configs/mvtec_ad.py train with (the
segmenter on synthetic anomalies; scored by the segmenter's map and its maximum over the 8 test-time
views) instead of the plain recipe of configs/magnetic_tile_plain.py. A run takes about twice as
long as the plain recipe's (the segmenter at full resolution).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 nice -n 5 python -m vivano_jax.sweep run \\
      --sweep=sweeps/large_batch_segmenter.py --root=runs/large_batch_segmenter \\
      --config.dataset.data_dir=/tmp/tfds \\
      --config.dataset.manual_dir=../shared/data/magnetic_tile \\
      --only=33,35,37,59,61,63    # brick, seed 0: AdamW (fixed rate), LARS (linear), 16/64/256
  python -m vivano_jax.sweep gather --root=runs/large_batch_segmenter --over=seed
"""

import os

from vivano_jax import config_files


def get_sweep():
  plain = config_files.load_function(
      os.path.join(os.path.dirname(__file__), 'large_batch.py'), 'get_sweep', 'sweep file')()
  return dict(plain, base_config='../configs/magnetic_tile.py')
