"""tfds builders for vivano_jax and the one entry point that picks a builder from the config.

All builders share the example format in `features.py` and the checks and writing in `builder.py`.
`get_builder(cfg.dataset)` returns the prepared builder named by `dataset.name` ('<builder>' or
'<builder>/<config>'). Modules, in the order a dataset is made:

  features.py            the example format
  builder.py             config checks (dataset.name, dataset.manual_dir) and safe writing
  digits.py, textures.py embedded datasets (scikit-learn digits; scikit-image photos + defects.py)
  image_files.py         listing, decoding and encoding image files on disk
  mvtec_layout.py        the MVTec AD folder layout, read by mvtec_ad.py and folder.py
  one_class.py           MNIST / CIFAR-10 one-class builders (their sources: one_class_sources.py)
"""

import importlib
import os
import sys
from typing import TYPE_CHECKING

from vivano_jax import console
from vivano_jax import errors

if TYPE_CHECKING:  # Each builder module imports tfds itself: image_files alone needs neither.
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

# The builders of a user's own image files, whose sizes no config chose (train.py warns of those
# smaller than one patch); the others' are fixed (8 px digits, 28 px MNIST: upscaled by design).
USER_IMAGES = ('folder', 'mvtec_ad')


def get_builder(cfg: 'ml_collections.ConfigDict') -> 'tfds.core.DatasetBuilder':
  """The prepared tfds builder for `cfg` (= config.dataset); data in `cfg.data_dir` ('' = default).

  Raises:
    errors.UsageError for an unknown dataset.name or an empty dataset.manual_dir where one is
    needed; errors.DataError for missing, unreadable or invalid files.
  """
  builder_name = cfg.name.split('/')[0]
  if builder_name not in BUILDER_MODULES:
    raise errors.UsageError(f'unknown dataset.name={cfg.name!r}: no builder {builder_name!r}; '
                            f'known builders: {", ".join(sorted(BUILDER_MODULES))}')
  module = importlib.import_module(BUILDER_MODULES[builder_name])
  return module.make_builder(cfg, data_dir=cfg.data_dir or None)


def resolve_config(config: 'ml_collections.ConfigDict') -> None:
  """Fills in, in place, what a config leaves to the data: the MVTec AD category of
  `configs/mvtec_ad.py` without an argument, found in dataset.manual_dir (with its augmentation);
  augmentation it leaves unset on another dataset is warned of (off). Other datasets are left as
  they are. A relative dataset.manual_dir or data_dir becomes absolute:
  config.json must name the same folders from any working directory (an export run elsewhere
  would read another folder of that name). Runs before anything of the run is written."""
  for field in ('manual_dir', 'data_dir'):
    value = str(config.dataset.get(field) or '').strip()
    if value:
      config.dataset[field] = os.path.abspath(os.path.expanduser(value))
  data_dir = config.dataset.get('data_dir')
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    # Else tfds fails on '<data_dir>/downloads: Not a directory', naming no field.
    raise errors.UsageError(f'dataset.data_dir={data_dir}: is a file, not a folder (where '
                            'prepared datasets are kept)')
  module = BUILDER_MODULES.get(config.dataset.name.split('/')[0])
  resolve = getattr(importlib.import_module(module), 'resolve_config', None) if module else None
  if resolve is not None:
    resolve(config)
  _warn_unset_augmentation(config)


def _warn_unset_augmentation(config: 'ml_collections.ConfigDict') -> None:
  """configs/mvtec_ad.py leaves dataset.augment to the MVTec AD category; another dataset (a
  product of one's own: dataset.name=folder) has none to give. The fields left None are off, in
  training and in the test-time views, and stay None (a run's config.json holds them so, and its
  reruns and exports are compared with it); the console says so, and how to turn them on."""
  augment = config.dataset.get('augment') or {}
  unset = [field for field, value in augment.items() if value is None]
  if unset:
    console.say(f'warning: dataset {config.dataset.name!r} has no MVTec AD category to take '
                f'dataset.augment.{", ".join(unset)} from: off in training; set '
                '--config.dataset.augment.<field>=True for each flip or turn under which the '
                'product still looks normal', sys.stderr)
