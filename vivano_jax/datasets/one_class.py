"""MNIST and CIFAR-10 in the one-class protocol (paper Section 4.2).

Builders `mnist_one_class` and `cifar10_one_class`, one BuilderConfig per normal class: '0'..'9' for
MNIST; airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck for CIFAR-10 (cfg.name
may also give the index: 'cifar10_one_class/3' = 'cat').

  train       the normal class's training images (label 0, defect_type 'good'): MNIST all of
              them (~6,000); CIFAR-10 4,500 of its 5,000
  validation  CIFAR-10 only: the other 500, chosen by a permutation seeded with VALIDATION_SEED
  test        the full official test set (10,000 images): label = (class != normal class),
              defect_type = the class name ('good' for the normal class)

Images uint8 [28, 28, 1] (MNIST) or [32, 32, 3] (CIFAR-10) at native size; masks all zero
[H, W, 1]; has_mask False for anomalies (no pixel ground truth), True for normal images.

Sources (recorded as metadata['source']; a cached dataset built from another kind of source is
refused rather than silently reused):
  * dataset.manual_dir unset: the tfds catalog datasets `mnist` / `cifar10`, prepared in the same
    data_dir (needs the network once). Filenames: '<split>/<index in the tfds split, 5 digits>'
    (MNIST) or the catalog's id (CIFAR-10, e.g. 'train_16399').
  * MNIST from dataset.manual_dir: the idx files t10k-images-idx3-ubyte.gz,
    t10k-labels-idx1-ubyte.gz and train-labels-idx1-ubyte.gz (also accepted uncompressed), parsed
    with numpy. Training images come from train-images-idx3-ubyte.gz when present, else from
    approx_tsuga_png_derived_mnist.npz (x_train [60000, 28, 28], official order), whose images are
    inverted and intensity-shifted: 255 - x undoes the inversion, so these training images are
    APPROXIMATE (on the test set, where exact pixels exist: mean absolute error 1.8 gray levels, at
    most 29, correlation 0.997); metadata['approximate_train_images'] is then True. Labels always
    come from the exact idx files. Filenames: '<split>/<official index, 5 digits>'.
  * CIFAR-10 from dataset.manual_dir: test/<class>/*.jpg and either train/<class>/*.jpg or the
    members train/<class>/*.jpg of train_jpg_stored.zip, read in place (JPEG re-encoded copies of
    the official images: not bit-exact). Filenames: the relative paths ('test/cat/0001.jpg').
"""

import dataclasses
import os
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from vivano_jax import errors
from vivano_jax.datasets import builder as builder_lib
from vivano_jax.datasets import features
from vivano_jax.datasets import image_files
from vivano_jax.datasets import one_class_sources as sources
from vivano_jax.datasets.one_class_sources import CIFAR10_CLASSES, MNIST_CLASSES

VALIDATION_SEED = 0  # Fixes CIFAR-10's 4,500 / 500 train / validation split.
VALIDATION_FRACTION = 0.1  # 500 of 5,000, as in the paper.


def mnist_digit(arg) -> str:
  """A config argument as an MNIST class: '0'..'9'; None or '' -> '0'."""
  try:
    return MnistOneClass.config_name('0' if arg in (None, '') else str(arg))
  except errors.UsageError:
    raise errors.UsageError(f'MNIST digit must be 0-9, got {arg!r}') from None


def cifar10_class(arg) -> str:
  """A config argument as a CIFAR-10 class name: '3' or 'cat' -> 'cat'; None or '' -> 'airplane'."""
  try:
    return Cifar10OneClass.config_name('0' if arg in (None, '') else str(arg))
  except errors.UsageError:
    raise errors.UsageError(
        f'CIFAR-10 class must be 0-9 or one of {CIFAR10_CLASSES}, got {arg!r}') from None


def split_train_indices(num: int, with_validation: bool) -> dict[str, np.ndarray]:
  """Indices into a Source's training images: {'train': [...]} (+ 'validation', seeded) sorted."""
  if not with_validation:
    return {'train': np.arange(num)}
  num_validation = max(1, int(round(num * VALIDATION_FRACTION))) if num > 1 else 0
  perm = np.random.default_rng(VALIDATION_SEED).permutation(num)
  return {'train': np.sort(perm[num_validation:]), 'validation': np.sort(perm[:num_validation])}


@dataclasses.dataclass(eq=False)
class OneClassConfig(tfds.core.BuilderConfig):
  """The normal class, as an index 0..9."""
  normal_class: int = 0


def one_class_configs(class_names: tuple[str, ...], noun: str) -> list[OneClassConfig]:
  """One config per normal class, named after it; `noun` ('digit', 'class') for the description."""
  return [OneClassConfig(name=c, description=f'Normal {noun} {c}; the other nine are anomalies.',
                         normal_class=i)
          for i, c in enumerate(class_names)]


class _OneClassBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared one-class logic; subclasses set the name, class names, configs and homepage.

  The tfds catalog dataset and the local loaders are named by `catalog_name()`: the builder name
  without '_one_class' ('mnist', 'cifar10').
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES: tuple = ()
  CHANNELS = 1
  HAS_VALIDATION = False
  HOMEPAGE = ''

  def __init__(self, *, manual_dir: str | os.PathLike | None = None, **kwargs):
    """`manual_dir`: the local copy to read; None = the tfds catalog dataset."""
    super().__init__(**kwargs)
    self.manual_dir = pathlib.Path(manual_dir) if manual_dir else None
    self.catalog_data_dir = kwargs.get('data_dir')
    self.source = None  # Set by make_builder: sources are read (and validated) before writing.

  @classmethod
  def catalog_name(cls) -> str:
    return cls.name.removesuffix('_one_class')

  @classmethod
  def config_name(cls, token: str) -> str:
    """The config name for a class name or index ('3' -> 'cat' for CIFAR-10)."""
    if token in cls.CLASS_NAMES:
      return token
    if token.isdigit() and int(token) < len(cls.CLASS_NAMES):
      return cls.CLASS_NAMES[int(token)]
    raise errors.UsageError(f'unknown {cls.name} class {token!r} in dataset.name; valid: '
                            f'{", ".join(cls.CLASS_NAMES)} (or the index 0..9)')

  def source_kind(self) -> str:
    """The `Source.kind` this builder reads (known before reading it)."""
    if self.manual_dir is None:
      return 'tfds_catalog'
    return sources.local_kind(self.catalog_name(), self.manual_dir)

  def local_fingerprint(self) -> str:
    """`builder_lib.files_fingerprint` of the local copy in manual_dir."""
    return builder_lib.files_fingerprint(self.manual_dir,
                                         sorted(sources.local_files(self.manual_dir)))

  def load_source(self) -> sources.Source:
    normal_class = self.builder_config.normal_class
    if self.manual_dir is None:
      return sources.load_catalog(self.catalog_name(), normal_class, self.catalog_data_dir)
    return sources.load_local(self.catalog_name(), self.manual_dir, normal_class)

  def _info(self) -> tfds.core.DatasetInfo:
    return builder_lib.LocalDatasetInfo(
        builder=self,
        description=__doc__,
        features=features.example_features(self.CHANNELS),
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Sources are read by load_source (catalog or local files).
    source = self.source or self.load_source()
    self.info.metadata['source'] = source.kind
    if self.manual_dir is not None:  # What make_builder checks a reuse by.
      self.info.metadata['made_from'] = str(self.manual_dir)
      self.info.metadata['fingerprint'] = self.local_fingerprint()
    self.info.metadata['approximate_train_images'] = source.kind == 'local_npz_approx'
    splits = {name: self._generate_examples(source, 'train', indices) for name, indices in
              split_train_indices(len(source.train_images), self.HAS_VALIDATION).items()}
    splits['test'] = self._generate_examples(source, 'test', np.arange(len(source.test_images)))
    return splits

  def _generate_examples(self, source: sources.Source, part: str, indices: np.ndarray):
    """Yields (filename, example) for `indices` into the source's 'train' or 'test' images."""
    normal_name = self.CLASS_NAMES[self.builder_config.normal_class]
    images = source.train_images if part == 'train' else source.test_images
    mask = image_files.encode_png(np.zeros(images.shape[1:3] + (1,), np.uint8))  # Same for all.
    for i in indices:
      if part == 'train':
        filename, class_name = source.train_names[i], normal_name
      else:
        filename, class_name = source.test_names[i], self.CLASS_NAMES[source.test_labels[i]]
      normal = class_name == normal_name
      yield features.example(filename, image_files.encode_png(images[i]), mask,
                             features.GOOD if normal else class_name, has_mask=normal)


class MnistOneClass(_OneClassBuilder):
  """MNIST, one normal digit per config; images uint8 [28, 28, 1]."""

  name = 'mnist_one_class'
  CLASS_NAMES = MNIST_CLASSES
  BUILDER_CONFIGS = one_class_configs(MNIST_CLASSES, 'digit')
  HOMEPAGE = 'http://yann.lecun.com/exdb/mnist/'


class Cifar10OneClass(_OneClassBuilder):
  """CIFAR-10, one normal class per config; images uint8 [32, 32, 3], 10 % of train held out."""

  name = 'cifar10_one_class'
  CLASS_NAMES = CIFAR10_CLASSES
  BUILDER_CONFIGS = one_class_configs(CIFAR10_CLASSES, 'class')
  CHANNELS = 3
  HAS_VALIDATION = True
  HOMEPAGE = 'https://www.cs.toronto.edu/~kriz/cifar.html'


BUILDERS = {MnistOneClass.name: MnistOneClass, Cifar10OneClass.name: Cifar10OneClass}


def make_builder(cfg, data_dir=None) -> tfds.core.DatasetBuilder:
  """The prepared builder for cfg.name = 'mnist_one_class/<digit>' or 'cifar10_one_class/<class>'.

  Reads dataset.manual_dir (local copy) when set, else the tfds catalog. A dataset already prepared
  in `data_dir` from the same kind of source is returned as is; from a local copy, only when made
  from the same files (else it is prepared again: another copy of the same kind, such as a
  corrupted variant of MNIST, was used without a word).
  """
  builder_name, _, token = cfg.name.partition('/')
  if builder_name not in BUILDERS:
    raise errors.UsageError(f'unknown dataset.name={cfg.name!r}; valid names: '
                            + ', '.join(f'{b}/<class>' for b in BUILDERS))
  builder_cls = BUILDERS[builder_name]
  config = builder_cls.config_name(token)
  manual_dir = None
  if cfg.get('manual_dir'):
    manual_dir = builder_lib.manual_root(cfg, sources.LOCAL_LAYOUTS[builder_cls.catalog_name()])
  builder = builder_cls(config=config, data_dir=data_dir, manual_dir=manual_dir)
  kind = builder.source_kind()
  if builder.is_prepared():
    stored = builder.info.metadata.get('source')
    if stored != kind:
      raise errors.DataError(
          f'{builder.data_path}: this {builder_name}/{config} was built from source {stored!r}, '
          f'but dataset.manual_dir={manual_dir} asks for {kind!r}; delete that folder or use '
          'another data_dir to rebuild.')
    if manual_dir is None or not builder_lib.remove_if_made_elsewhere(
        builder, manual_dir, builder.local_fingerprint()):
      return builder
    builder = builder_cls(config=config, data_dir=data_dir, manual_dir=manual_dir)
  builder.source = builder.load_source()
  if builder.source.kind == 'local_npz_approx':
    logging.warning('%s/%s: training images come from %s, an APPROXIMATE copy of MNIST.',
                    builder_name, config, sources.MNIST_APPROX_NPZ)
  builder_lib.prepare(builder)
  return builder
