"""The segmenter study: configs/magnetic_tile.py's model with the discriminative head
(model/segmenter.py) trained on synthetic anomalies and scored by its map, on Magnetic Tile and the
three embedded textures, at seeds 0, 1 and 2. The runs without the head are sweeps/recipe.py's.

  segmenter  model.segmenter_features=16, train.synthetic_anomalies=0.5 (the head learns from
             them; the autoencoder still reconstructs the clean image), pixel map = the head's
             anomaly probability ('seg'), image score = its maximum ('seg_max'); the fields are
             written out, so the sweep does not depend on the defaults. Other scores of the same
             checkpoints are computed by rescoring (RESULTS.md section 1e);
  steps      1200 and 600 steps of batch 16.

Runs are listed 1200 steps first, then seed 0 first, Magnetic Tile first. Two runs at a time fit a
2-core machine (`--print_commands | xargs -P 2`).

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/segmenter.py --root=runs/segmenter \\
      --config.dataset.data_dir=/tmp/tfds --config.dataset.manual_dir=../shared/data/magnetic_tile
  python -m vivano_jax.sweep gather --root=runs/segmenter --over=seed
"""

import os

from vivano_jax import config_files

SEEDS = (0, 1, 2)
SEGMENTER = {'model.segmenter_features': 16, 'train.synthetic_anomalies': 0.5,
             'score.image': 'seg_max', 'score.pixel': 'seg', 'score.normalize': 'global'}
STEPS = (1200, 600)  # Training steps of batch 16; the runs of 1200 first.


DATASETS = ('folder', 'textures/brick', 'textures/grass', 'textures/gravel')


def get_sweep():
  dataset_fields = config_files.load_function(
      os.path.join(os.path.dirname(__file__), 'recipe.py'), 'dataset_fields', 'sweep file')
  runs = [dict(dataset_fields(name), seed=seed, **SEGMENTER,
               **{'train.num_steps': steps, 'train.checkpoint_every_steps': 600})
          for steps in STEPS for seed in SEEDS for name in DATASETS]
  return {'base_config': '../configs/magnetic_tile.py', 'runs': runs}
