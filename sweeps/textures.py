"""The embedded textures (brick, grass, gravel) with the reduced Magnetic Tile model
(configs/magnetic_tile_plain.py: 128 px, patch 16, width 128, depth 3, 600 steps), reconstruction
scores.
About 3 minutes a texture on 2 CPU cores.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/textures.py --root=runs/textures \\
      --config.dataset.data_dir=/tmp/tfds
  python -m vivano_jax.sweep gather --root=runs/textures
"""


def get_sweep():
  return {'base_config': '../configs/magnetic_tile_plain.py',
          'grid': {'dataset.name': [f'textures/{t}' for t in ('brick', 'grass', 'gravel')]},
          'fixed': {'dataset.manual_dir': ''}}
