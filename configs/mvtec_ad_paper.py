"""MVTec AD, one category, with the paper's recipe (Section 4.1, Tables 3 and 4): 512 px, 3
channels, patch 64, ViT width 512, depth 6, 8 heads, MLP 1024, batch 16, learning rate 1e-5, 200
epochs; scores by the mixture NLL (image: maximum patch NLL; pixels: the NLL map upsampled,
Section 4.3).

Pass the data with `--config.dataset.manual_dir=`: one category's folder (it holds train/good/), or
the folder holding the extracted categories with the category named in the config argument,
`--config=configs/mvtec_ad_paper.py:bottle` (as `configs/mvtec_ad.py`). No augmentation,
as the paper describes none. Which choices are the paper's and which are ours (where it is silent):
`config_defaults.paper_config`.
"""

from vivano_jax import config_defaults
from vivano_jax.datasets.mvtec_ad import category


def get_config(arg=None):
  name = category(arg)
  config = config_defaults.paper_config()
  # No argument: the category is the one in dataset.manual_dir, found when the run starts.
  config.dataset.name = f'mvtec_ad/{name}' if name else 'mvtec_ad'
  return config
