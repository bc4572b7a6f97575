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

import functools
from typing import Iterator

import numpy as np
import skimage.data

from vivano_jax.datasets import builder
from vivano_jax.datasets import defects
from vivano_jax.datasets import features

TEXTURES = ('brick', 'grass', 'gravel')
PHOTO_SIZE = 512
TILE_SIZE = 128
TRAIN_ROWS = (0, 320)  # [start, stop) rows that train tiles may cover.
TEST_ROWS = (336, 512)  # [start, stop) rows that test tiles (and 'patch' sources) may cover.
NUM_TRAIN = 400
NUM_TEST_GOOD = 50
NUM_TEST_PER_DEFECT = 20
_SPLIT_STREAMS = {'train': 0, 'test': 1}  # Independent random streams per split.


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
    yield features.example(filename, np.ascontiguousarray(tile)[..., None], mask[..., None], kind,
                           has_mask=True)


class Textures(builder.EmbeddedBuilder):
  """Tiles of scikit-image texture photographs; test tiles carry procedural defects."""

  HOMEPAGE = 'https://scikit-image.org/docs/stable/api/skimage.data.html'
  BUILDER_CONFIGS = [
      builder.SeededConfig(name=t, description=f'128 x 128 tiles of skimage.data.{t}()',
                           seed=1000 + i)
      for i, t in enumerate(TEXTURES)
  ]
  generate_split = staticmethod(generate_split)


def make_builder(cfg, data_dir=None) -> Textures:
  """Prepared (cached in `data_dir`) builder for `cfg.name`, one of 'textures/<texture>'."""
  return builder.make_embedded(Textures, cfg, data_dir)
