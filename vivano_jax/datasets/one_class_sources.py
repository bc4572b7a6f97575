"""Where the one-class builders' images come from: local copies of MNIST and CIFAR-10, or the
tfds catalog. Each loader returns a `Source`, read and validated completely before the builder
writes anything; `one_class.py` documents the files and the protocol.
"""

import dataclasses
import gzip
import io
import pathlib
import struct
import zipfile
import zlib

import numpy as np
import tensorflow_datasets as tfds

from vivano_jax import errors
from vivano_jax.datasets import image_files

MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck')

MNIST_FILES = {
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'train_images': 'train-images-idx3-ubyte',
}
MNIST_APPROX_NPZ = 'approx_tsuga_png_derived_mnist.npz'
CIFAR10_TRAIN_ZIP = 'train_jpg_stored.zip'
# What dataset.manual_dir must hold, per catalog name, for the error messages.
LOCAL_LAYOUTS = {
    'mnist': (f'a folder with the MNIST idx files {MNIST_FILES["test_images"]}.gz, '
              f'{MNIST_FILES["test_labels"]}.gz, {MNIST_FILES["train_labels"]}.gz and '
              f'{MNIST_FILES["train_images"]}.gz (or {MNIST_APPROX_NPZ}); uncompressed works too'),
    'cifar10': ('a folder with CIFAR-10 as JPEG files: test/<class>/*.jpg and train/<class>/*.jpg '
                f'(or {CIFAR10_TRAIN_ZIP} holding train/<class>/*.jpg), classes '
                f'{", ".join(CIFAR10_CLASSES)}'),
}


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
    message = f'{path}: unreadable or truncated file ({type(e).__name__}: {e})'
    raise errors.DataError(message) from None
  if len(data) < 4:
    raise errors.DataError(f'{path}: too short for an idx file ({len(data)} bytes)')
  zero, dtype_code, ndim = struct.unpack('>HBB', data[:4])
  if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
    raise errors.DataError(f'{path}: not an idx file of unsigned bytes (magic 0x{data[:4].hex()})')
  offset = 4 + 4 * ndim
  if len(data) < offset:
    raise errors.DataError(f'{path}: truncated idx header')
  dims = struct.unpack(f'>{ndim}I', data[4:offset])
  if len(data) - offset != int(np.prod(dims)):
    raise errors.DataError(f'{path}: truncated or padded: the header announces {dims} = '
                           f'{int(np.prod(dims))} values, the file holds {len(data) - offset}')
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _find_idx(root: pathlib.Path, name: str) -> pathlib.Path | None:
  for candidate in (root / f'{name}.gz', root / name):
    if candidate.is_file():
      return candidate
  return None


def _check_mnist(images: np.ndarray, labels: np.ndarray, images_path, labels_path) -> None:
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise errors.DataError(f'{images_path}: expected images [N, 28, 28], got {images.shape}')
  if labels.ndim != 1 or len(labels) != len(images):
    raise errors.DataError(f'{labels_path}: {labels.shape} labels for {len(images)} images in '
                           f'{images_path}')
  if labels.max(initial=0) > 9:
    raise errors.DataError(f'{labels_path}: labels must be 0..9, found {labels.max()}')


def _read_approx_npz(path: pathlib.Path, train_labels: np.ndarray) -> np.ndarray:
  """x_train of the npz with the inversion undone: uint8 [60000, 28, 28] (approximate pixels)."""
  try:
    with np.load(path, allow_pickle=False) as npz:  # Never unpickle.
      x, y = npz['x_train'], npz['y_train'] if 'y_train' in npz.files else None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    message = f'{path}: unreadable npz or no x_train in it ({type(e).__name__}: {e})'
    raise errors.DataError(message) from None
  if x.dtype != np.uint8 or x.shape != (len(train_labels), 28, 28):
    raise errors.DataError(f'{path}: x_train must be uint8 [{len(train_labels)}, 28, 28], got '
                           f'{x.dtype} {x.shape}')
  if y is not None and not np.array_equal(y, train_labels):
    raise errors.DataError(f'{path}: y_train differs from train-labels-idx1-ubyte: the npz is not '
                           'in the official order')
  return 255 - x  # The npz stores inverted digits (white background).


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
    raise errors.DataError(f'{class_dir}: missing folder, and no {zip_path} to read it from.')
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
    raise errors.DataError(f'{zip_path}: unreadable zip file ({e})') from None
  if not files and not problems:
    raise errors.DataError(f'{zip_path}: no {prefix}* members')
  return files


def load_cifar10_local(root: pathlib.Path, normal_class: int) -> Source:
  """Reads the CIFAR-10 test set and the normal class's training images from JPEG class folders."""
  test_dir, problems = root / 'test', []
  if not test_dir.is_dir():
    raise errors.DataError(f'{test_dir}: missing folder; expected test/<class>/*.jpg for the '
                           f'classes {", ".join(CIFAR10_CLASSES)}')
  for entry in image_files.entries(test_dir, problems):
    if entry.name not in CIFAR10_CLASSES:
      problems.append(f'{test_dir / entry.name}: not a CIFAR-10 class folder')
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
    raise errors.DataError(f'{root}: no training images of class {CIFAR10_CLASSES[normal_class]!r}')
  return Source(
      kind='local_jpg',
      train_images=np.stack(train_images),
      train_names=tuple(train_names),
      test_images=np.stack(test_images),
      test_labels=np.asarray(test_labels, np.int64),
      test_names=tuple(test_names),
  )


def local_kind(dataset: str, root: pathlib.Path) -> str:
  """The `Source.kind` that `load_local(dataset, root, ...)` returns, from a listing alone."""
  if dataset == 'cifar10':
    return 'local_jpg'
  return 'local_idx' if _find_idx(root, MNIST_FILES['train_images']) else 'local_npz_approx'


def local_files(root: pathlib.Path) -> list[pathlib.Path]:
  """The files a local copy may be read from: those in `root` itself and under its train/ and
  test/ folders (what a prepared dataset's fingerprint covers)."""
  files = [p for p in root.iterdir() if p.is_file()]
  for part in ('train', 'test'):
    if (root / part).is_dir():
      files += [p for p in (root / part).rglob('*') if p.is_file()]
  return files


def load_local(dataset: str, root: pathlib.Path, normal_class: int) -> Source:
  """Reads the local copy of `dataset` ('mnist' or 'cifar10') in `root` (see LOCAL_LAYOUTS)."""
  loader = load_cifar10_local if dataset == 'cifar10' else load_mnist_local
  return loader(root, normal_class)


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
    reason = (str(e).splitlines() or [''])[0]
    message = (f'could not load the tfds catalog dataset {dataset!r} ({type(e).__name__}: '
               f'{reason}); it needs the network once, or set dataset.manual_dir to '
               f'{LOCAL_LAYOUTS[dataset]}')
    raise errors.DataError(message) from e

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

