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
  * cfg.manual_dir unset: the tfds catalog datasets `mnist` / `cifar10`, prepared in the same
    data_dir (needs the network once). Filenames: '<split>/<index in the tfds split, 5 digits>'
    (MNIST) or the catalog's id (CIFAR-10, e.g. 'train_16399').
  * MNIST from cfg.manual_dir: the idx files t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
    and train-labels-idx1-ubyte.gz (also accepted uncompressed), parsed with numpy. Training images
    come from train-images-idx3-ubyte.gz when present, else from approx_tsuga_png_derived_mnist.npz
    (x_train [60000, 28, 28], official order), whose images are inverted and intensity-shifted:
    255 - x undoes the inversion, so these training images are APPROXIMATE (on the test set, where
    exact pixels exist: mean absolute error 1.8 gray levels, at most 29, correlation 0.997);
    metadata['approximate_train_images'] is then True. Labels always come from the exact idx
    files. Filenames: '<split>/<official index, 5 digits>'.
  * CIFAR-10 from cfg.manual_dir: test/<class>/*.jpg and either train/<class>/*.jpg or the members
    train/<class>/*.jpg of train_jpg_stored.zip, read in place (JPEG re-encoded copies of the
    official images: not bit-exact). Filenames: the relative paths ('test/cat/0001.jpg').
"""

import dataclasses
import gzip
import io
import os
import pathlib
import struct
import zipfile
import zlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from vivano_jax.datasets import image_files
from vivano_jax.datasets.features import example_features
from vivano_jax.datasets.image_files import DatasetError

VALIDATION_SEED = 0  # Fixes CIFAR-10's 4,500 / 500 train / validation split.
VALIDATION_FRACTION = 0.1  # 500 of 5,000, as in the paper.

MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck')


def mnist_digit(arg) -> str:
  """A config argument as an MNIST class: '0'..'9'; None or '' -> '0'."""
  try:
    return MnistOneClass.config_name('0' if arg in (None, '') else str(arg))
  except ValueError:
    raise ValueError(f'MNIST digit must be 0-9, got {arg!r}') from None


def cifar10_class(arg) -> str:
  """A config argument as a CIFAR-10 class name: '3' or 'cat' -> 'cat'; None or '' -> 'airplane'."""
  try:
    return Cifar10OneClass.config_name('0' if arg in (None, '') else str(arg))
  except ValueError:
    raise ValueError(
        f'CIFAR-10 class must be 0-9 or one of {CIFAR10_CLASSES}, got {arg!r}') from None


MNIST_FILES = {
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'train_images': 'train-images-idx3-ubyte',
}
MNIST_APPROX_NPZ = 'approx_tsuga_png_derived_mnist.npz'
CIFAR10_TRAIN_ZIP = 'train_jpg_stored.zip'


@dataclasses.dataclass(frozen=True)
class Source:
  """Images of one normal class's protocol, read from any source, in a deterministic order."""
  kind: str                   # 'tfds_catalog', 'local_idx', 'local_npz_approx' or 'local_jpg'
  train_images: np.ndarray    # uint8 [N, H, W, C], the normal class's training images only
  train_names: tuple          # N unique filenames
  test_images: np.ndarray     # uint8 [M, H, W, C], the whole test set
  test_labels: np.ndarray     # int64 [M], class indices 0..9
  test_names: tuple           # M unique filenames


# --- MNIST files


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Parses an idx file (gzipped if named *.gz) of unsigned bytes: uint8 [dim0, dim1, ...]."""
  try:
    with (gzip.open(path, 'rb') if path.suffix == '.gz' else open(path, 'rb')) as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:  # Bad or truncated gzip stream.
    raise DatasetError(f'{path}: unreadable or truncated file ({type(e).__name__}: {e})') from None
  if len(data) < 4:
    raise DatasetError(f'{path}: too short for an idx file ({len(data)} bytes)')
  zero, dtype_code, ndim = struct.unpack('>HBB', data[:4])
  if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
    raise DatasetError(f'{path}: not an idx file of unsigned bytes (magic 0x{data[:4].hex()})')
  offset = 4 + 4 * ndim
  if len(data) < offset:
    raise DatasetError(f'{path}: truncated idx header')
  dims = struct.unpack(f'>{ndim}I', data[4:offset])
  if len(data) - offset != int(np.prod(dims)):
    raise DatasetError(f'{path}: truncated or padded: the header announces {dims} = '
                       f'{int(np.prod(dims))} values, the file holds {len(data) - offset}')
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _find_idx(root: pathlib.Path, name: str) -> pathlib.Path | None:
  for candidate in (root / f'{name}.gz', root / name):
    if candidate.is_file():
      return candidate
  return None


def _check_mnist(images: np.ndarray, labels: np.ndarray, images_path, labels_path) -> None:
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise DatasetError(f'{images_path}: expected images [N, 28, 28], got {images.shape}')
  if labels.ndim != 1 or len(labels) != len(images):
    raise DatasetError(f'{labels_path}: {labels.shape} labels for {len(images)} images in '
                       f'{images_path}')
  if labels.max(initial=0) > 9:
    raise DatasetError(f'{labels_path}: labels must be 0..9, found {labels.max()}')


def _read_approx_npz(path: pathlib.Path, train_labels: np.ndarray) -> np.ndarray:
  """x_train of the npz with the inversion undone: uint8 [60000, 28, 28] (approximate pixels)."""
  try:
    with np.load(path, allow_pickle=False) as npz:  # Never unpickle.
      x, y = npz['x_train'], npz['y_train'] if 'y_train' in npz.files else None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    message = f'{path}: unreadable npz or no x_train in it ({type(e).__name__}: {e})'
    raise DatasetError(message) from None
  if x.dtype != np.uint8 or x.shape != (len(train_labels), 28, 28):
    raise DatasetError(f'{path}: x_train must be uint8 [{len(train_labels)}, 28, 28], got '
                       f'{x.dtype} {x.shape}')
  if y is not None and not np.array_equal(y, train_labels):
    raise DatasetError(f'{path}: y_train differs from train-labels-idx1-ubyte: the npz is not in '
                       'the official order')
  return 255 - x  # The npz stores inverted digits (white background).


def mnist_source_kind(manual_dir: pathlib.Path | None) -> str:
  if manual_dir is None:
    return 'tfds_catalog'
  return 'local_idx' if _find_idx(manual_dir, MNIST_FILES['train_images']) else 'local_npz_approx'


def load_mnist_local(root: pathlib.Path, normal_class: int) -> Source:
  """Reads MNIST from local idx files (+ the approximate npz for training images if needed)."""
  paths = {key: _find_idx(root, name) for key, name in MNIST_FILES.items()}
  missing = [f'{root / name}.gz' for key, name in MNIST_FILES.items()
             if key != 'train_images' and paths[key] is None]
  if paths['train_images'] is None and not (root / MNIST_APPROX_NPZ).is_file():
    missing.append(f'{root / MNIST_FILES["train_images"]}.gz (or {root / MNIST_APPROX_NPZ})')
  image_files.raise_problems([f'{m}: missing file' for m in missing], root)
  test_images, test_labels = read_idx(paths['test_images']), read_idx(paths['test_labels'])
  _check_mnist(test_images, test_labels, paths['test_images'], paths['test_labels'])
  train_labels = read_idx(paths['train_labels'])
  if paths['train_images'] is not None:
    kind, train_images = 'local_idx', read_idx(paths['train_images'])
    _check_mnist(train_images, train_labels, paths['train_images'], paths['train_labels'])
  else:
    kind = 'local_npz_approx'
    train_images = _read_approx_npz(root / MNIST_APPROX_NPZ, train_labels)
  keep = np.flatnonzero(train_labels == normal_class)
  return Source(
      kind=kind,
      train_images=train_images[keep][..., None],
      train_names=tuple(f'train/{i:05d}' for i in keep),
      test_images=test_images[..., None],
      test_labels=test_labels.astype(np.int64),
      test_names=tuple(f'test/{i:05d}' for i in range(len(test_labels))),
  )


# --- CIFAR-10 files


def _decode_cifar(source, where: str, problems: list[str]) -> np.ndarray | None:
  """Decodes one CIFAR-10 image (path or file object) to uint8 [32, 32, 3]; None on a problem."""
  try:
    image = image_files.read_image(source, channels=3)
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files.
    problems.append(f'{where}: corrupt, truncated or unreadable image ({type(e).__name__}: {e})')
    return None
  if image.shape != (32, 32, 3):
    problems.append(f'{where}: {image.shape[1]} x {image.shape[0]} pixels; CIFAR-10 images are '
                    '32 x 32')
    return None
  return image


def _cifar_train_files(root: pathlib.Path, class_name: str, problems: list[str]) -> list[tuple]:
  """[(filename 'train/<class>/<name>', path or bytes)] of one class, from train/ or the zip."""
  class_dir = root / 'train' / class_name
  if class_dir.is_dir():
    return [(f'train/{class_name}/{n}', class_dir / n)
            for n in image_files.list_class_folder(class_dir, problems)]
  zip_path = root / CIFAR10_TRAIN_ZIP
  if not zip_path.is_file():
    raise DatasetError(f'{class_dir}: missing folder, and no {zip_path} to read it from.')
  prefix, files = f'train/{class_name}/', []
  try:
    with zipfile.ZipFile(zip_path) as archive:
      for member in sorted(archive.namelist()):
        name = member[len(prefix):]
        if not member.startswith(prefix) or not name or '/' in name or image_files.is_ignored(name):
          continue  # Other classes, folder entries, nested or hidden files.
        if not image_files.is_image_name(name):
          problems.append(f'{zip_path}:{member}: not an image file')
          continue
        try:
          files.append((member, archive.read(member)))
        except (zipfile.BadZipFile, zlib.error, OSError) as e:  # CRC error, truncated archive.
          problems.append(f'{zip_path}:{member}: damaged zip member ({e})')
  except (OSError, zipfile.BadZipFile) as e:
    raise DatasetError(f'{zip_path}: unreadable zip file ({e})') from None
  if not files and not problems:
    raise DatasetError(f'{zip_path}: no {prefix}* members')
  return files


def load_cifar10_local(root: pathlib.Path, normal_class: int) -> Source:
  """Reads the CIFAR-10 test set and the normal class's training images from JPEG class folders."""
  test_dir, problems = root / 'test', []
  if not test_dir.is_dir():
    raise DatasetError(f'{test_dir}: missing folder; expected test/<class>/*.jpg for the classes '
                       f'{", ".join(CIFAR10_CLASSES)}')
  for entry in sorted(os.listdir(test_dir)):
    if not image_files.is_ignored(entry) and entry not in CIFAR10_CLASSES:
      problems.append(f'{test_dir / entry}: not a CIFAR-10 class folder')
  test_images, test_labels, test_names = [], [], []
  for label, class_name in enumerate(CIFAR10_CLASSES):
    class_dir = test_dir / class_name
    if not class_dir.is_dir():
      problems.append(f'{class_dir}: missing class folder')
      continue
    for name in image_files.list_class_folder(class_dir, problems):
      image = _decode_cifar(class_dir / name, str(class_dir / name), problems)
      if image is not None:
        test_images.append(image)
        test_labels.append(label)
        test_names.append(f'test/{class_name}/{name}')
  train_images, train_names = [], []
  for name, data in _cifar_train_files(root, CIFAR10_CLASSES[normal_class], problems):
    if isinstance(data, pathlib.Path):
      image = _decode_cifar(data, str(data), problems)
    else:
      image = _decode_cifar(io.BytesIO(data), f'{root / CIFAR10_TRAIN_ZIP}:{name}', problems)
    if image is not None:
      train_images.append(image)
      train_names.append(name)
  image_files.raise_problems(problems, root)
  if not train_images:
    raise DatasetError(f'{root}: no training images of class {CIFAR10_CLASSES[normal_class]!r}')
  return Source(
      kind='local_jpg',
      train_images=np.stack(train_images),
      train_names=tuple(train_names),
      test_images=np.stack(test_images),
      test_labels=np.asarray(test_labels, np.int64),
      test_names=tuple(test_names),
  )


# --- tfds catalog


def _to_arrays(ds) -> dict[str, np.ndarray]:
  """A tf.data.Dataset of examples as one dict of stacked numpy arrays.

  Batched iteration rather than `batch_size=-1`, which aborts TensorFlow under
  `tfds.testing.mock_data` (std::length_error).
  """
  batches = list(tfds.as_numpy(ds.batch(4096)))
  return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def load_catalog(dataset: str, normal_class: int, data_dir: str | None = None) -> Source:
  """Reads the tfds catalog dataset `dataset` ('mnist' or 'cifar10'), preparing it if needed."""
  try:
    splits = tfds.load(dataset, split=['train', 'test'], data_dir=data_dir)
    train, test = (_to_arrays(ds) for ds in splits)
  except Exception as e:  # Mostly: no network. Say what to do instead.
    message = (f'Could not load the tfds catalog dataset {dataset!r} ({type(e).__name__}: {e}). '
               'It needs the network once; or set cfg.manual_dir to a local copy.')
    raise DatasetError(message) from e

  def names(split, examples):
    if 'id' in examples:  # CIFAR-10 ids ('train_16399') give a stable order independent of tfds.
      ids = [i.decode() if isinstance(i, bytes) else str(i) for i in examples['id']]
      return np.asarray(ids)
    return np.asarray([f'{split}/{i:05d}' for i in range(len(examples['label']))])

  train_names, test_names = names('train', train), names('test', test)
  keep = np.flatnonzero(train['label'] == normal_class)
  keep = keep[np.argsort(train_names[keep], kind='stable')]
  order = np.argsort(test_names, kind='stable')
  return Source(
      kind='tfds_catalog',
      train_images=np.asarray(train['image'][keep], np.uint8),
      train_names=tuple(str(n) for n in train_names[keep]),
      test_images=np.asarray(test['image'][order], np.uint8),
      test_labels=np.asarray(test['label'][order], np.int64),
      test_names=tuple(str(n) for n in test_names[order]),
  )


def split_train_indices(num: int, with_validation: bool) -> dict[str, np.ndarray]:
  """Indices into a Source's training images: {'train': [...]} (+ 'validation', seeded) sorted."""
  if not with_validation:
    return {'train': np.arange(num)}
  num_validation = max(1, int(round(num * VALIDATION_FRACTION))) if num > 1 else 0
  perm = np.random.default_rng(VALIDATION_SEED).permutation(num)
  return {'train': np.sort(perm[num_validation:]), 'validation': np.sort(perm[:num_validation])}


# --- builders


@dataclasses.dataclass(eq=False)
class OneClassConfig(tfds.core.BuilderConfig):
  """The normal class, as an index 0..9."""
  normal_class: int = 0


class _OneClassBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared one-class logic; subclasses set the class names, channels and sources."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES: tuple = ()
  CATALOG_NAME = ''
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
  def config_name(cls, token: str) -> str:
    """The config name for a class name or index ('3' -> 'cat' for CIFAR-10)."""
    if token in cls.CLASS_NAMES:
      return token
    if token.isdigit() and int(token) < len(cls.CLASS_NAMES):
      return cls.CLASS_NAMES[int(token)]
    raise ValueError(f'Unknown {cls.name} class {token!r}; valid: {", ".join(cls.CLASS_NAMES)} '
                     '(or the index 0..9)')

  @classmethod
  def source_kind(cls, manual_dir: pathlib.Path | None) -> str:
    raise NotImplementedError

  def load_source(self) -> Source:
    normal_class = self.builder_config.normal_class
    if self.manual_dir is None:
      return load_catalog(self.CATALOG_NAME, normal_class, self.catalog_data_dir)
    return self._load_local(image_files.check_root(self.manual_dir), normal_class)

  def _load_local(self, root: pathlib.Path, normal_class: int) -> Source:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=example_features(self.CHANNELS),
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Sources are read by load_source (catalog or local files).
    source = self.source or self.load_source()
    self.info.metadata['source'] = source.kind
    self.info.metadata['approximate_train_images'] = source.kind == 'local_npz_approx'
    splits = {name: self._generate_examples(source, 'train', indices) for name, indices in
              split_train_indices(len(source.train_images), self.HAS_VALIDATION).items()}
    splits['test'] = self._generate_examples(source, 'test', np.arange(len(source.test_images)))
    return splits

  def _generate_examples(self, source: Source, part: str, indices: np.ndarray):
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
      yield filename, {
          'image': image_files.encode_png(images[i]),
          'mask': mask,
          'label': 0 if normal else 1,
          'defect_type': image_files.GOOD if normal else class_name,
          'filename': filename,
          'has_mask': normal,
      }


class MnistOneClass(_OneClassBuilder):
  """MNIST, one normal digit per config; images uint8 [28, 28, 1]."""

  name = 'mnist_one_class'
  CLASS_NAMES = MNIST_CLASSES
  CATALOG_NAME = 'mnist'
  CHANNELS = 1
  HAS_VALIDATION = False
  HOMEPAGE = 'http://yann.lecun.com/exdb/mnist/'
  BUILDER_CONFIGS = [
      OneClassConfig(name=c, description=f'Normal digit {c}; the other nine are anomalies.',
                     normal_class=i)
      for i, c in enumerate(MNIST_CLASSES)
  ]

  @classmethod
  def source_kind(cls, manual_dir):
    return mnist_source_kind(manual_dir)

  def _load_local(self, root, normal_class):
    return load_mnist_local(root, normal_class)


class Cifar10OneClass(_OneClassBuilder):
  """CIFAR-10, one normal class per config; images uint8 [32, 32, 3]."""

  name = 'cifar10_one_class'
  CLASS_NAMES = CIFAR10_CLASSES
  CATALOG_NAME = 'cifar10'
  CHANNELS = 3
  HAS_VALIDATION = True
  HOMEPAGE = 'https://www.cs.toronto.edu/~kriz/cifar.html'
  BUILDER_CONFIGS = [
      OneClassConfig(name=c, description=f'Normal class {c}; the other nine are anomalies.',
                     normal_class=i)
      for i, c in enumerate(CIFAR10_CLASSES)
  ]

  @classmethod
  def source_kind(cls, manual_dir):
    return 'tfds_catalog' if manual_dir is None else 'local_jpg'

  def _load_local(self, root, normal_class):
    return load_cifar10_local(root, normal_class)


BUILDERS = {MnistOneClass.name: MnistOneClass, Cifar10OneClass.name: Cifar10OneClass}


def make_builder(cfg, data_dir=None) -> tfds.core.DatasetBuilder:
  """The prepared builder for cfg.name = 'mnist_one_class/<digit>' or 'cifar10_one_class/<class>'.

  Reads cfg.manual_dir (local copy) when set, else the tfds catalog. A dataset already prepared in
  `data_dir` from the same kind of source is returned as is.
  """
  builder_name, _, token = cfg.name.partition('/')
  if builder_name not in BUILDERS:
    raise ValueError(f'Unknown dataset name {cfg.name!r}; expected one of '
                     + ', '.join(f'{b}/<class>' for b in BUILDERS))
  builder_cls = BUILDERS[builder_name]
  config = builder_cls.config_name(token)
  manual_dir = cfg.get('manual_dir') or None
  if manual_dir is not None:
    manual_dir = image_files.check_root(manual_dir, f'dataset.manual_dir (local {builder_name} copy)')
  builder = builder_cls(config=config, data_dir=data_dir, manual_dir=manual_dir)
  kind = builder_cls.source_kind(manual_dir)
  if builder.is_prepared():
    stored = builder.info.metadata.get('source')
    if stored != kind:
      raise DatasetError(
          f'{builder.data_path}: this {builder_name}/{config} was built from source {stored!r}, '
          f'but cfg.manual_dir={manual_dir} asks for {kind!r}. Delete that folder or use another '
          'data_dir to rebuild.')
    return builder
  builder.source = builder.load_source()
  if builder.source.kind == 'local_npz_approx':
    logging.warning('%s/%s: training images come from %s, an APPROXIMATE copy of MNIST.',
                    builder_name, config, MNIST_APPROX_NPZ)
  image_files.prepare(builder)
  return builder
