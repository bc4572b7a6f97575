"""`digits`: scikit-learn's real handwritten digits in the one-class anomaly protocol.

Needs no network: `sklearn.datasets.load_digits()` ships 1,797 8 x 8 images (values 0..16) of the
digits 0-9. One BuilderConfig per normal digit, '0'..'9':

  train  80 % (n * 4 // 5) of the normal digit's images, chosen by a permutation seeded per config
         (label 0, defect_type 'good').
  test   the other 20 % of the normal digit's images (label 0, defect_type 'good') plus ALL images
         of the other nine digits (label 1, defect_type = that digit as a string, e.g. '7').

Images are uint8 [8, 8, 1] scaled to 0..255 (round(v * 255 / 16)). Masks are all zero: anomalies
have no pixel ground truth (`has_mask` False), normal images have none to mark (`has_mask` True).
Filenames are '<split>/<index in load_digits, 4 digits>.png'.
"""

import functools
from typing import Iterator

import numpy as np
import sklearn.datasets

from vivano_jax.datasets import builder
from vivano_jax.datasets import features

DIGITS = tuple(str(d) for d in range(10))


@functools.cache
def load_images() -> tuple[np.ndarray, np.ndarray]:
  """All of `load_digits`: images uint8 [1797, 8, 8] in 0..255, targets int64 [1797] (read-only)."""
  data = sklearn.datasets.load_digits()
  images = np.round(data.images * 255.0 / 16.0).astype(np.uint8)
  targets = data.target.astype(np.int64)
  images.flags.writeable = False
  targets.flags.writeable = False
  return images, targets


def split_indices(digit: int, seed: int) -> dict[str, np.ndarray]:
  """Indices into `load_digits` per split: {'train': [n * 4 // 5], 'test': [rest + all others]}.

  Test holds the held-out normals first, then the other digits' images in `load_digits` order.
  """
  _, targets = load_images()
  normal = np.flatnonzero(targets == digit)
  perm = np.random.default_rng(seed).permutation(normal)
  num_train = len(normal) * 4 // 5
  return {
      'train': np.sort(perm[:num_train]),
      'test': np.concatenate([np.sort(perm[num_train:]), np.flatnonzero(targets != digit)]),
  }


def generate_split(digit: str, split: str, seed: int) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) pairs of `split` in the `features.py` format; images uint8 [8, 8, 1]."""
  if split not in Digits.SPLITS:
    raise ValueError(f'Unknown split {split!r}; valid splits: {", ".join(Digits.SPLITS)}')
  images, targets = load_images()
  mask = np.zeros((8, 8, 1), dtype=np.uint8)
  for index in split_indices(int(digit), seed)[split]:
    normal = str(targets[index]) == digit
    yield features.example(f'{split}/{index:04d}.png', images[index][..., None], mask,
                           features.GOOD if normal else str(targets[index]), has_mask=normal)


class Digits(builder.EmbeddedBuilder):
  """scikit-learn handwritten digits, one normal digit per config (one-class protocol)."""

  HOMEPAGE = 'https://scikit-learn.org/stable/datasets/toy_dataset.html'
  BUILDER_CONFIGS = [
      builder.SeededConfig(name=d, description=f'Normal digit {d}; the other nine are anomalies.',
                           seed=2000 + int(d))
      for d in DIGITS
  ]
  generate_split = staticmethod(generate_split)


def make_builder(cfg, data_dir=None) -> Digits:
  """Prepared (cached in `data_dir`) builder for `cfg.name`, one of 'digits/0'..'digits/9'."""
  return builder.make_embedded(Digits, cfg, data_dir)
