"""The paper's configuration (Section 4.1): 512 px, patch 64, width 512, depth 6, 8 heads, MLP 1024,
batch 16, learning rate 1e-5, 200 epochs, 3 channels.

The dataset defaults to the embedded textures; choose another with --config.dataset.name=... . The paper
gives no latent size, mixture size, warmup or loss weights: those keep the default's values.
"""

from vivano_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.dataset.image_size = 512
  config.dataset.channels = 3
  config.model.patch_size = 64
  config.model.width = 512
  config.model.depth = 6
  config.model.num_heads = 8
  config.model.mlp_dim = 1024
  config.model.decoder_base_features = 256
  config.score.image = 'nll_max'  # Section 4.3: maximum per-patch log-likelihood loss...
  config.score.pixel = 'nll'  # ...upsampled bilinearly to a heat map.
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.learning_rate = 1e-5
  config.train.num_steps = 0
  config.train.num_epochs = 200
  config.train.checkpoint_every_steps = 2000
  return config
