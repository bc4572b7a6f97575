"""configs/magnetic_tile.py without the segmenter: the recipe RESULTS.md sections 1-1d were measured
with (`config_defaults.plain_128px_config`: 600 steps, pixel map = reconstruction error + mixture
NLL standardised per pixel position, image score = its maximum). The earlier sweeps in sweeps/ start
from it, so their tables stay reproducible. Pass the folder with
`--config.dataset.manual_dir=<folder in MVTec layout>`, as for configs/magnetic_tile.py.
"""

from vivano_jax import config_defaults


def get_config(arg=None):
  del arg  # One category.
  config = config_defaults.plain_128px_config()
  config.dataset.name = 'folder'
  config.dataset.channels = 1
  config.export.at_end = False
  return config
