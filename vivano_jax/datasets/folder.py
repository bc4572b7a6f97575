"""`folder`: any local image folder in the MVTec AD layout (cfg.name = 'folder').

`cfg.manual_dir` is the folder's root:

  train/good/*                                    defect-free training images (required)
  test/<defect_type>/*                            test images; test/good/ is optional
  ground_truth/<defect_type>/<stem>_mask.<ext>    optional pixel masks

Images: png, jpg, jpeg, bmp, tif, tiff (any case). Defect types are the test folder names. A defect
type with a ground_truth/<defect_type>/ folder must have a mask for each image (any value > 0 is
defective; empty masks are valid, but a defect type whose masks are all empty, or all mark most
of their image, is warned about); a defect type without one gets all-zero masks and has_mask
False, so pixel metrics report it as unavailable. Channels: 1 if every image is grayscale, else 3
(grayscale images are then converted). Images keep their native size: image uint8 [H, W, C], mask
uint8 [H, W, 1]. Filenames are paths relative to the root.

Caching: different folders must not share a cache entry in the tfds data_dir, and a changed folder
must be rebuilt, so the builder config name is derived from the folder:

  <base name>_<path hash>_<content hash>, e.g. 'magnetic_tile_b6a0dd41_162cc441'
  path hash     sha256(absolute path)[:8]
  content hash  sha256(absolute path, then (relative path, size, mtime) of every file read)[:8]

Adding, removing, rewriting or touching a file gives a new name, hence a fresh build; the old entry
stays in data_dir until deleted (same path hash, other content hash). `make_builder` recomputes the
name from a stat-only listing, so re-loading a cached folder is cheap.
"""

import dataclasses
import hashlib
import os
import re

import tensorflow_datasets as tfds

from vivano_jax.datasets import builder as builder_lib
from vivano_jax.datasets import mvtec_layout
from vivano_jax.datasets.features import example_features

EXPECTED = ('the image folder holding train/good/* (defect-free images), test/<defect_type>/* and '
            'optionally ground_truth/<defect_type>/<stem>_mask.<ext>')


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """A user folder: `root` (absolute path) and the dataset's `channels` (1 or 3)."""
  root: str = ''
  channels: int = 3


def config_name(layout: mvtec_layout.Layout) -> str:
  """'<base name>_<path hash>_<content hash>' (see the module docstring); valid as a tfds name."""
  slug = re.sub(r'[^a-z0-9]+', '_', layout.root.name.lower()).strip('_')[:40] or 'root'
  path_hash = hashlib.sha256(str(layout.root).encode()).hexdigest()[:8]
  return f'{slug}_{path_hash}_{mvtec_layout.fingerprint(layout)[:8]}'


class Folder(tfds.core.GeneratorBasedBuilder):
  """A local folder in the MVTec AD layout; make_builder makes its config (see `config_name`)."""

  name = 'folder'
  VERSION = tfds.core.Version('1.0.1')
  RELEASE_NOTES = {'1.0.0': 'Initial release.',
                   '1.0.1': 'TIFFs turned by their orientation tag read as shown.'}

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.validated_layout = None  # Set by make_builder so that files are not decoded twice.

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return builder_lib.LocalDatasetInfo(
        builder=self,
        description=f'{__doc__}\nRoot: {config.root}',
        features=example_features(config.channels),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local.
    layout = self.validated_layout
    if layout is None:
      layout = mvtec_layout.scan_layout(self.builder_config.root, masks_required=False)
      mvtec_layout.validate_images(layout)
    return {split: self._generate_examples(layout, split) for split in ('train', 'test')}

  def _generate_examples(self, layout, split):
    yield from mvtec_layout.generate_examples(layout, split, self.builder_config.channels)


def make_builder(cfg, data_dir=None) -> tfds.core.DatasetBuilder:
  """The prepared builder for the folder cfg.manual_dir (cfg.name = 'folder').

  Scans the folder (listing only); if a dataset with the same config name is prepared in `data_dir`
  it is returned, else every file is decoded and validated before the dataset is written.
  """
  builder_lib.check_name(cfg.name, [Folder.name])
  root = builder_lib.manual_root(cfg, EXPECTED)
  layout = mvtec_layout.scan_layout(root, masks_required=False)
  name = config_name(layout)
  # The features (channel count) come from the data: read them from the cache when there is one.
  probe = Folder(config=FolderConfig(name=name, root=str(root)), data_dir=data_dir)
  if probe.is_prepared():
    features = tfds.features.FeatureConnector.from_config(os.fspath(probe.data_path))
    channels = features['image'].shape[-1]
    return Folder(config=FolderConfig(name=name, root=str(root), channels=channels),
                  data_dir=data_dir)
  channels = mvtec_layout.validate_images(layout)
  builder = Folder(config=FolderConfig(name=name, root=str(root), channels=channels),
                   data_dir=data_dir)
  builder.validated_layout = layout
  builder_lib.prepare(builder)
  return builder
