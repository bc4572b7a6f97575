"""Magnetic Tile Surface Defects with the paper's recipe (Section 4.1): 512 px, 3 channels, patch 64,
ViT width 512, depth 6, 8 heads, MLP 1024, batch 16, learning rate 1e-5, 200 epochs; scores by the
mixture NLL (image: maximum patch NLL; pixels: the NLL map upsampled, Section 4.3).

Data: `dataset.name='folder'` at `dataset.manual_dir` (default ../shared/data/magnetic_tile). The
grayscale photos are replicated to 3 channels, as the paper's input is RGB. Far too slow for a CPU
(hours a run); `configs/magnetic_tile.py` is the reduced variant. The config argument is unused.
The paper gives no latent size, mixture size, warmup or loss weights: those keep the defaults.
"""

from vivano_jax import config_defaults

MANUAL_DIR = '../shared/data/magnetic_tile'


def get_config(arg=None):
  del arg  # One category.
  config = config_defaults.base_config()
  config.dataset.name = 'folder'
  config.dataset.manual_dir = MANUAL_DIR
  config.dataset.image_size = 512
  config.dataset.channels = 3
  config.model.patch_size = 64
  config.model.width = 512
  config.model.depth = 6
  config.model.num_heads = 8
  config.model.mlp_dim = 1024
  config.model.decoder_base_features = 256
  config.score.image = 'nll_max'  # Section 4.3: maximum per-patch NLL...
  config.score.pixel = 'nll'  # ...upsampled bilinearly to a heat map.
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.learning_rate = 1e-5
  config.train.num_steps = 0
  config.train.num_epochs = 200
  config.train.checkpoint_every_steps = 2000
  return config
