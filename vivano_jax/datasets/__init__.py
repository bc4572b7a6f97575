"""tfds builders for vivano_jax and the one entry point that picks a builder from the config.

All builders share the example format in `features.py`. `get_builder(cfg.dataset)` returns the prepared
builder named by `dataset.name` ('<builder>' or '<builder>/<config>').
"""

import importlib

import ml_collections
import tensorflow_datasets as tfds

# Builder name -> module defining it (imported lazily: TF-heavy builders load only when used).
BUILDER_MODULES = {
    'textures': 'vivano_jax.datasets.textures',
    'digits': 'vivano_jax.datasets.digits',
    'mvtec_ad': 'vivano_jax.datasets.mvtec_ad',
    'folder': 'vivano_jax.datasets.folder',
    'mnist_one_class': 'vivano_jax.datasets.one_class',
    'cifar10_one_class': 'vivano_jax.datasets.one_class',
}


def get_builder(cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared tfds builder for `cfg` (= config.dataset); data goes to `cfg.data_dir` ('' = default)."""
  builder_name = cfg.name.split('/')[0]
  if builder_name not in BUILDER_MODULES:
    raise ValueError(f'dataset.name={cfg.name!r}: unknown dataset {builder_name!r}; '
                     f'known: {sorted(BUILDER_MODULES)}')
  module = importlib.import_module(BUILDER_MODULES[builder_name])
  return module.make_builder(cfg, data_dir=cfg.data_dir or None)
