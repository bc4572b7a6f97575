"""`textures`: tiles of real texture photographs with procedural defects (the default dataset).

Needs no network: the photographs ship in scikit-image (`skimage.data.brick()`, `grass()`,
`gravel()`, 512 x 512 uint8 grayscale). One BuilderConfig per photograph: 'brick', 'grass',
'gravel'.

Examples are 128 x 128 x 1 uint8 tiles cut at seeded random offsets (numpy `default_rng`, a fixed
seed per config, so every run produces the same dataset). Train and test tiles come from DISJOINT
regions of the photograph, so a test tile never shares a pixel with any train tile:

  train  rows [0, 320)   : top-left row in 0..192, top-left column in 0..384.
  (gap)  rows [320, 336) : never used, a margin between the regions.
  test   rows [336, 512) : top-left row in 336..384, top-left column in 0..384.

Splits:
  train  400 normal tiles (label 0, defect_type 'good').
  test   150 tiles: 50 normal + 100 defective, 20 for each kind in `defects.DEFECT_KINDS`
         (label 1, defect_type = the kind). 'patch' defects are filled with content from the TEST
         region of one of the other two photographs (chosen at random per example).

Masks are the exact pixel footprint of the drawn defect (all zero for normal tiles); `has_mask` is
True for every example. Filenames are '<split>/<defect_type>_<index within type, 4 digits>.png'.
"""

import dataclasses
import functools
import os
from typing import Iterator

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TensorFlow is first imported.

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from vivano_jax.datasets import defects  # noqa: E402
from vivano_jax.datasets.features import example_features  # noqa: E402

TEXTURES = ('brick', 'grass', 'gravel')
PHOTO_SIZE = 512
TILE_SIZE = 128
TRAIN_ROWS = (0, 320)  # [start, stop) rows that train tiles may cover.
TEST_ROWS = (336, 512)  # [start, stop) rows that test tiles (and 'patch' sources) may cover.
NUM_TRAIN = 400
NUM_TEST_GOOD = 50
NUM_TEST_PER_DEFECT = 20
_SPLIT_STREAMS = {'train': 0, 'test': 1}  # Independent random streams per split.


@dataclasses.dataclass(eq=False)
class TexturesConfig(tfds.core.BuilderConfig):
  """BuilderConfig for one photograph; `seed` fixes the tile offsets and the defects."""
  seed: int = 0


@functools.cache
def load_photo(texture: str) -> np.ndarray:
  """The scikit-image photograph `texture`, uint8 [512, 512] grayscale (read-only, cached)."""
  if texture not in TEXTURES:
    raise ValueError(f'Unknown texture {texture!r}; valid textures: {", ".join(TEXTURES)}')
  photo = np.asarray(getattr(skimage.data, texture)())
  if photo.shape != (PHOTO_SIZE, PHOTO_SIZE) or photo.dtype != np.uint8:
    raise ValueError(f'unexpected photograph {texture}: {photo.dtype} {photo.shape}')
  photo.flags.writeable = False
  return photo


def tile_offsets(rng: np.random.Generator, num: int, rows: tuple[int, int]) -> np.ndarray:
  """Uniform random top-left corners int [num, 2] (row, col) of tiles covering only `rows`."""
  row = rng.integers(rows[0], rows[1] - TILE_SIZE + 1, size=num)
  col = rng.integers(0, PHOTO_SIZE - TILE_SIZE + 1, size=num)
  return np.stack([row, col], axis=-1)


def _example(tile: np.ndarray, mask: np.ndarray, defect_type: str, filename: str) -> dict:
  return {
      'image': tile[..., None],
      'mask': mask[..., None],
      'label': 0 if defect_type == 'good' else 1,
      'defect_type': defect_type,
      'filename': filename,
      'has_mask': True,
  }


def generate_split(texture: str, split: str, seed: int) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) pairs of `split` ('train' or 'test') in the `features.py` format.

  Deterministic in (texture, split, seed). Images and masks are uint8 [128, 128, 1].
  """
  if split not in _SPLIT_STREAMS:
    raise ValueError(f'Unknown split {split!r}; valid splits: {", ".join(_SPLIT_STREAMS)}')
  photo = load_photo(texture)
  rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
  if split == 'train':
    kinds = ['good'] * NUM_TRAIN
    offsets = tile_offsets(rng, NUM_TRAIN, TRAIN_ROWS)
  else:
    kinds = ['good'] * NUM_TEST_GOOD
    for kind in defects.DEFECT_KINDS:
      kinds += [kind] * NUM_TEST_PER_DEFECT
    offsets = tile_offsets(rng, len(kinds), TEST_ROWS)
  others = [t for t in TEXTURES if t != texture]
  counts = dict.fromkeys(kinds, 0)
  for kind, (row, col) in zip(kinds, offsets):
    tile = photo[row:row + TILE_SIZE, col:col + TILE_SIZE]
    if kind == 'good':
      mask = np.zeros_like(tile)
    else:
      source = None
      if kind == 'patch':
        source = load_photo(others[rng.integers(len(others))])[TEST_ROWS[0]:TEST_ROWS[1]]
      tile, mask = defects.draw_defect(kind, tile, rng, source)
    filename = f'{split}/{kind}_{counts[kind]:04d}.png'
    counts[kind] += 1
    yield filename, _example(np.ascontiguousarray(tile), mask, kind, filename)


class Textures(tfds.core.GeneratorBasedBuilder):
  """Tiles of scikit-image texture photographs; test tiles carry procedural defects."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      TexturesConfig(name=t, description=f'128 x 128 tiles of skimage.data.{t}()', seed=1000 + i)
      for i, t in enumerate(TEXTURES)
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=example_features(1),
        homepage='https://scikit-image.org/docs/stable/api/skimage.data.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the photographs ship with scikit-image.
    return {split: self._generate_examples(split) for split in _SPLIT_STREAMS}

  def _generate_examples(self, split: str):
    yield from generate_split(self.builder_config.name, split, self.builder_config.seed)


def make_builder(cfg, data_dir=None) -> tfds.core.DatasetBuilder:
  """Prepared (cached in `data_dir`) builder for `cfg.name`, one of 'textures/<texture>'."""
  valid = [f'textures/{t}' for t in TEXTURES]
  if cfg.name not in valid:
    raise ValueError(f'Unknown dataset name {cfg.name!r}; valid names: {", ".join(valid)}')
  builder = Textures(config=cfg.name.split('/', 1)[1], data_dir=data_dir)
  # No GCS lookup: this dataset is not hosted there, and the check needs the network.
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
