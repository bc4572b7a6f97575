"""Default: the small CPU configuration on the embedded `textures/brick` data.

128 px grayscale tiles, patch 16 (an 8 x 8 patch grid), ViT width 192, depth 4, 4 heads, latent 32
per patch, 10 Gaussians conditioned on the patch position. Trains in a few minutes on 2 CPU cores.
"""

from vivano_jax import config_defaults


def get_config():
  return config_defaults.base_config()
