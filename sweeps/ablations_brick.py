"""Ablations on textures/brick with the reduced Magnetic Tile model (configs/magnetic_tile_plain.py:
128 px, patch 16, width 128, depth 3, 600 steps), each at seeds 0, 1 and 2: the runs of
`sweeps/ablations_magnetic_tile.py` with the dataset switched (its docstring says what each run is,
and how to only rescore the runs that differ from the reference in score.* alone). The reference
runs are those named 'seed=S'. The embedded textures need no folder.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/ablations_brick.py \\
      --root=runs/ablations_brick --config.dataset.data_dir=/tmp/tfds
  python -m vivano_jax.sweep gather --root=runs/ablations_brick --over=seed
"""

import os

from vivano_jax import config_files


def get_sweep():
  magnetic_tile = config_files.load_function(
      os.path.join(os.path.dirname(__file__), 'ablations_magnetic_tile.py'), 'get_sweep',
      'sweep file')
  # An empty folder, written out, keeps the runs' flags (and so their restart records) as they were.
  return dict(magnetic_tile(),
              fixed={'dataset.name': 'textures/brick', 'dataset.manual_dir': ''})
