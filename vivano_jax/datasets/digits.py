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

import dataclasses
import functools
import os
from typing import Iterator

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TensorFlow is first imported.

import numpy as np  # noqa: E402
import sklearn.datasets  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from vivano_jax.datasets.features import example_features  # noqa: E402

DIGITS = tuple(str(d) for d in range(10))
_SPLITS = ('train', 'test')


@dataclasses.dataclass(eq=False)
class DigitsConfig(tfds.core.BuilderConfig):
  """BuilderConfig for one normal digit; `seed` fixes its train/test permutation."""
  seed: int = 0


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


def generate_split(digit: int, split: str, seed: int) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) pairs of `split` in the `features.py` format; images uint8 [8, 8, 1]."""
  if split not in _SPLITS:
    raise ValueError(f'Unknown split {split!r}; valid splits: {", ".join(_SPLITS)}')
  images, targets = load_images()
  mask = np.zeros((8, 8, 1), dtype=np.uint8)
  for index in split_indices(digit, seed)[split]:
    normal = targets[index] == digit
    filename = f'{split}/{index:04d}.png'
    yield filename, {
        'image': images[index][..., None],
        'mask': mask,
        'label': 0 if normal else 1,
        'defect_type': 'good' if normal else str(targets[index]),
        'filename': filename,
        'has_mask': bool(normal),
    }


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn handwritten digits, one normal digit per config (one-class protocol)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      DigitsConfig(name=d, description=f'Normal digit {d}; the other nine are anomalies.',
                   seed=2000 + int(d))
      for d in DIGITS
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=example_features(1),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the digits ship with scikit-learn.
    return {split: self._generate_examples(split) for split in _SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    yield from generate_split(int(config.name), split, config.seed)


def make_builder(cfg, data_dir=None) -> tfds.core.DatasetBuilder:
  """Prepared (cached in `data_dir`) builder for `cfg.name`, one of 'digits/0'..'digits/9'."""
  valid = [f'digits/{d}' for d in DIGITS]
  if cfg.name not in valid:
    raise ValueError(f'Unknown dataset name {cfg.name!r}; valid names: {", ".join(valid)}')
  builder = Digits(config=cfg.name.split('/', 1)[1], data_dir=data_dir)
  # No GCS lookup: this dataset is not hosted there, and the check needs the network.
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
