"""Magnetic Tile Surface Defects with the paper's recipe (Section 4.1): 512 px, 3 channels, patch
64, ViT width 512, depth 6, 8 heads, MLP 1024, batch 16, learning rate 1e-5, 200 epochs; scores by
the mixture NLL (image: maximum patch NLL; pixels: the NLL map upsampled, Section 4.3).

Data: `dataset.name='folder'`; pass the folder with
`--config.dataset.manual_dir=<folder in MVTec layout>` (the copy next to the repository is
../shared/data/magnetic_tile). The grayscale photos are replicated to 3 channels, as the paper's
input is RGB. Far too slow for a CPU (hours a run); `configs/magnetic_tile.py` is the reduced
variant. The config argument is unused. Which choices are the paper's and which are ours (where it
is silent): `config_defaults.paper_config`.
"""

from vivano_jax import config_defaults


def get_config(arg=None):
  del arg  # One category.
  config = config_defaults.paper_config()
  config.dataset.name = 'folder'  # dataset.manual_dir stays '': the folder is the user's to give.
  return config
