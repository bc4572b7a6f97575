"""The paper's configuration (Section 4.1): 512 px, patch 64, width 512, depth 6, 8 heads, MLP 1024,
batch 16, learning rate 1e-5, 200 epochs, 3 channels.

The dataset defaults to the embedded textures; choose another with --config.dataset.name=... .
The paper gives no latent size, mixture size, warmup or loss weights: those keep the default's
values.
"""

from vivano_jax import config_defaults


def get_config():
  return config_defaults.paper_config()
