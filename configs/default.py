"""Default: the 128 px CPU recipe on the embedded `textures/brick` data (README's first command).

128 px grayscale tiles, patch 16 (an 8 x 8 patch grid), ViT width 128, depth 3, 4 heads, latent 32
per patch, 10 Gaussians conditioned on the patch position, 600 steps of batch 16; scored by the
reconstruction error plus the mixture NLL, each standardised per pixel on 10 % held-out normals
(`config_defaults.plain_128px_config`, RESULTS.md section 1). About 2.5 minutes on 2 CPU cores
(BENCHMARKS.md). The recipe of configs/magnetic_tile.py and configs/mvtec_ad.py adds the segmenter
(RESULTS.md section 1e), which on brick detects no better (image AUROC 0.99 either way) and takes
twice the time: a first run stays short.
"""

from vivano_jax import config_defaults


def get_config():
  return config_defaults.plain_128px_config()
