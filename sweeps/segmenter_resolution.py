"""The segmenter at half resolution (`model.segmenter_resolution='half'`, model/segmenter.py)
against section 1g's runs at full resolution (RESULTS.md), at seeds 0, 1 and 2:

  folder    configs/magnetic_tile.py as it is (1500 steps, the head's scores, 8 test-time views),
            with the head at half resolution;
  textures  brick, grass and gravel as section 1e trained them (1200 steps), scored as
            configs/mvtec_ad.py scores (ensemble image score, combined per-pixel standardised map,
            8 views), with the head at half resolution.

Runs are listed seed 0 first, Magnetic Tile first. Two runs at a time fit a 2-core machine
(`--print_commands | xargs -P 2`).

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/segmenter_resolution.py \\
      --root=runs/segmenter_half --config.dataset.data_dir=/tmp/tfds \\
      --config.dataset.manual_dir=../shared/data/magnetic_tile
  python -m vivano_jax.sweep gather --root=runs/segmenter_half --over=seed
"""

from vivano_jax import config_defaults

SEEDS = (0, 1, 2)
DATASETS = ('folder', 'textures/brick', 'textures/grass', 'textures/gravel')
# configs/mvtec_ad.py's scores (config_defaults.small_128px_config), which configs/magnetic_tile.py
# replaces with the head's own.
MVTEC_SCORES = {f'score.{k}': config_defaults.small_128px_config().score[k]
                for k in ('image', 'ensemble', 'pixel', 'normalize', 'combine')}


def _run(name: str, seed: int) -> dict:
  run = {'dataset.name': name, 'seed': seed, 'model.segmenter_resolution': 'half'}
  if name != 'folder':
    # An embedded texture: no manual_dir (the Magnetic Tile folder of the command line is the
    # folder runs'; a run's own values win over the command line's).
    run.update({'dataset.manual_dir': '', 'train.num_steps': 1200,
                'train.checkpoint_every_steps': 600}, **MVTEC_SCORES)
  return run


def get_sweep():
  return {'base_config': '../configs/magnetic_tile.py',
          'runs': [_run(name, seed) for seed in SEEDS for name in DATASETS]}
