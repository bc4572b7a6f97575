"""MVTec AD, one category, with the paper's recipe (Section 4.1, Tables 3 and 4): 512 px, 3
channels, patch 64, ViT width 512, depth 6, 8 heads, MLP 1024, batch 16, learning rate 1e-5, 200
epochs; scores by the mixture NLL (image: maximum patch NLL; pixels: the NLL map upsampled,
Section 4.3).

Select the category with the config argument: `--config=configs/mvtec_ad_paper.py:bottle` (default
'bottle'); pass `--config.dataset.manual_dir=/path/to/mvtec_anomaly_detection`. No augmentation,
as the paper describes none. Which choices are the paper's and which are ours (where it is silent):
`config_defaults.paper_config`.
"""

from vivano_jax import config_defaults
from vivano_jax.datasets.mvtec_ad import category


def get_config(arg=None):
  name = category(arg)
  config = config_defaults.paper_config()
  config.dataset.name = f'mvtec_ad/{name}'
  return config
