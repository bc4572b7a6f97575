"""The mixture rows of the ablations, remeasured with the current code (the density head's
position embedding learns; gradients are clipped per part): the number of components K and the
conditioning of the head, on Magnetic Tile and textures/brick, at seeds 0, 1 and 2.

Every run is configs/magnetic_tile_plain.py (the recipe's training) scored by the paper's NLL alone
(image: max patch NLL; pixels: the NLL map, globally standardised), so the rows show what the
head itself detects. The reference row (K = 10, condition 'position') trains exactly as the
recipe does: to only rescore, copy the recipe run's checkpoints/ into the row's workdir before
the sweep reaches it (main then skips training and evaluates).

Runs are listed seed first, then brick, then Magnetic Tile, so a partial sweep gives every row at
one seed before any at two. Two runs at a time fit a 2-core machine. The Magnetic Tile folder
(MVTec layout) is the user's to give, here the copy next to the repository; it reaches only the
Magnetic Tile runs (`dataset_fields` in sweeps/recipe.py).

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/ablations_nll.py \\
      --root=runs/ablations_nll --config.dataset.data_dir=/tmp/tfds \\
      --config.dataset.manual_dir=../shared/data/magnetic_tile
  python -m vivano_jax.sweep gather --root=runs/ablations_nll --over=seed
"""

import os

from vivano_jax import config_files

SEEDS = (0, 1, 2)
DATASETS = ('textures/brick', 'folder')
NLL = {'score.image': 'nll_max', 'score.pixel': 'nll', 'score.normalize': 'global'}
ROWS = (
    {},  # Reference: K = 10, condition 'position'.
    {'density.num_components': 1},
    {'density.num_components': 4},
    {'density.num_components': 32},
    {'density.num_components': 150},
    {'density.condition': 'none'},
    {'density.condition': 'self'},
    {'density.condition': 'class_token'},
)


def get_sweep():
  dataset_fields = config_files.load_function(
      os.path.join(os.path.dirname(__file__), 'recipe.py'), 'dataset_fields', 'sweep file')
  runs = [dict(dataset_fields(name), seed=seed, **NLL, **row)
          for seed in SEEDS for name in DATASETS for row in ROWS]
  return {'base_config': '../configs/magnetic_tile_plain.py', 'runs': runs}
