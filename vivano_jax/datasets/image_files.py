"""Scanning, validation and safe preparation for the builders that read image files from disk.

`mvtec_ad` and `folder` read the MVTec AD layout:

  <root>/train/good/<name>.<ext>                         defect-free training images
  <root>/test/<defect_type>/<name>.<ext>                 test images; 'good' = defect-free
  <root>/ground_truth/<defect_type>/<stem>_mask.<ext>    masks of the defective test images

Images: png, jpg, jpeg, bmp, tif, tiff (any case). Masks: any pixel value > 0 is defective (stored
as 0/1); a mask must have its image's size. Hidden files (names starting with '.', such as
.DS_Store or macOS '._*' resource forks) and Windows' Thumbs.db / desktop.ini are ignored.

Everything is checked before tfds writes anything: `scan_layout` checks the folder structure
(listing only), `validate_images` opens AND fully decodes every image and mask. Every problem is
reported as one `DatasetError` that names the file or folder, not as a TensorFlow stack trace.
`prepare` then runs `download_and_prepare` so that a failure leaves nothing in `data_dir` that tfds
would load as a finished dataset.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import os
import pathlib
import shutil
from typing import Iterable, Iterator, Sequence

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vivano_jax import image_io

IMAGE_EXTENSIONS = image_io.IMAGE_EXTENSIONS
IGNORED_NAMES = frozenset({'thumbs.db', 'desktop.ini'})
GOOD = 'good'
MASK_SUFFIX = '_mask'
TRAIN, TEST, GROUND_TRUTH = 'train', 'test', 'ground_truth'

# Modes PIL opens single-channel images in; 'P'/'PA' (palette) are decided by their palette.
_GRAY_MODES = frozenset({'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'})


class DatasetError(ValueError):
  """Bad dataset input (missing folder, corrupt image, missing mask, ...); names the file."""


def raise_problems(problems: Sequence[str], where: str | os.PathLike) -> None:
  """Raises one DatasetError listing `problems` ('<path>: <what is wrong>' lines), if any."""
  if not problems:
    return
  raise DatasetError(image_io.format_problems(problems, where))


def is_ignored(name: str) -> bool:
  """True for hidden files and OS droppings (.DS_Store, ._x, Thumbs.db) that never hold data."""
  return name.startswith('.') or name.lower() in IGNORED_NAMES


is_image_name = image_io.is_image_name


def check_root(path: str | os.PathLike | None, what: str = 'dataset folder') -> pathlib.Path:
  """The absolute, existing directory `path`; DatasetError when it is unset, missing or a file."""
  if path is None or not str(path).strip():
    raise DatasetError(f'No {what} given (cfg.manual_dir is {path!r}).')
  root = pathlib.Path(path).expanduser().resolve()
  if not root.exists():
    raise DatasetError(f'{root}: {what} does not exist.')
  if not root.is_dir():
    raise DatasetError(f'{root}: {what} is not a directory.')
  return root


def _entries(folder: pathlib.Path) -> list[os.DirEntry]:
  with os.scandir(folder) as it:
    return sorted((e for e in it if not is_ignored(e.name)), key=lambda e: e.name)


def list_class_folder(folder: pathlib.Path, problems: list[str]) -> list[str]:
  """Sorted image file names in a class folder; non-image files and subfolders become problems."""
  names = []
  for entry in _entries(folder):
    path = folder / entry.name
    if entry.is_dir():
      problems.append(f'{path}: unexpected folder inside a class folder (nesting is not supported)')
    elif not is_image_name(entry.name):
      problems.append(f'{path}: not an image file (expected one of '
                      f'{", ".join(sorted(IMAGE_EXTENSIONS))}; hidden files are ignored)')
    else:
      names.append(entry.name)
  return names


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image of a layout; paths are POSIX and relative to the layout's root."""
  relpath: str              # 'test/crack/000.png'
  defect_type: str          # 'good' or the defect folder's name
  mask_relpath: str | None  # 'ground_truth/crack/000_mask.png', None without a mask file
  has_mask: bool            # the mask is true pixel ground truth (always True for 'good')

  @property
  def label(self) -> int:
    return 0 if self.defect_type == GOOD else 1


@dataclasses.dataclass(frozen=True)
class Layout:
  """The files of one dataset folder in the MVTec AD layout (structure only, nothing decoded)."""
  root: pathlib.Path
  train: tuple[Entry, ...]
  test: tuple[Entry, ...]

  def split(self, name: str) -> tuple[Entry, ...]:
    return {TRAIN: self.train, TEST: self.test}[name]

  def counts(self) -> dict[str, int]:
    """Images per folder: {'train/good': n, 'test/good': n, 'test/<defect>': n, ...}."""
    counts = collections.Counter(f'{TRAIN}/{GOOD}' for _ in self.train)
    counts.update(f'{TEST}/{e.defect_type}' for e in self.test)
    return dict(counts)

  def files(self) -> list[str]:
    """Every file the dataset reads (images, then masks), relative to `root`."""
    entries = self.train + self.test
    return [e.relpath for e in entries] + [e.mask_relpath for e in entries if e.mask_relpath]


def _find_masks(gt_dir: pathlib.Path, problems: list[str]) -> dict[str, str]:
  """{image stem: mask file name} of a ground_truth/<defect> folder."""
  masks = {}
  for name in list_class_folder(gt_dir, problems):
    stem = os.path.splitext(name)[0]
    if not stem.endswith(MASK_SUFFIX):
      problems.append(f'{gt_dir / name}: not a mask name '
                      f'(expected <image stem>{MASK_SUFFIX}.<ext>)')
      continue
    image_stem = stem[:-len(MASK_SUFFIX)]
    if image_stem in masks:
      problems.append(f'{gt_dir / name}: two masks for image stem {image_stem!r} '
                      f'({masks[image_stem]} and {name})')
      continue
    masks[image_stem] = name
  return masks


def scan_layout(root: str | os.PathLike, *, masks_required: bool) -> Layout:
  """Lists and structurally checks a folder in the MVTec AD layout (no image is decoded here).

  Args:
    root: the dataset folder holding train/, test/ and optionally ground_truth/.
    masks_required: every defective test image must have a mask (MVTec AD). When False, a defect
      type without a ground_truth/<defect> folder gets has_mask False; one WITH that folder must
      still have a mask for each of its images.

  Returns:
    The Layout, entries sorted by path.

  Raises:
    DatasetError naming the folder or file: missing root, train/good or test; an empty train/good;
    a non-image file or a subfolder in a class folder; a defective image without its mask.
  """
  root = check_root(root)
  train_dir, test_dir, gt_root = root / TRAIN, root / TEST, root / GROUND_TRUTH
  good_dir = train_dir / GOOD
  if not good_dir.is_dir():
    raise DatasetError(f'{good_dir}: missing folder; the defect-free training images must be in '
                       f'{TRAIN}/{GOOD}/ under {root}.')
  if not test_dir.is_dir():
    raise DatasetError(f'{test_dir}: missing folder; test images must be in {TEST}/<defect_type>/ '
                       f'({TEST}/{GOOD}/ for defect-free ones).')
  problems = []
  for entry in _entries(train_dir):
    if entry.name != GOOD:
      problems.append(f'{train_dir / entry.name}: unexpected entry; {TRAIN}/ may only hold {GOOD}/ '
                      '(training images are defect-free)')
  train = tuple(Entry(f'{TRAIN}/{GOOD}/{n}', GOOD, None, True)
                for n in list_class_folder(good_dir, problems))
  if not train and not problems:
    raise DatasetError(f'{good_dir}: holds no images (expected at least one training image).')

  test, orphans = [], []
  for entry in _entries(test_dir):
    class_dir = test_dir / entry.name
    if not entry.is_dir():
      problems.append(f'{class_dir}: unexpected file; {TEST}/ may only hold <defect_type>/ folders')
      continue
    names = list_class_folder(class_dir, problems)
    if not names:
      logging.warning('%s: empty class folder, ignored.', class_dir)
    defect = entry.name
    if defect == GOOD:
      test += [Entry(f'{TEST}/{GOOD}/{n}', GOOD, None, True) for n in names]
      continue
    gt_dir = gt_root / defect
    if not gt_dir.is_dir():
      if masks_required and names:
        problems.append(f'{gt_dir}: missing mask folder for the {len(names)} images of {class_dir}')
      test += [Entry(f'{TEST}/{defect}/{n}', defect, None, False) for n in names]
      continue
    masks = _find_masks(gt_dir, problems)
    stems = collections.Counter(os.path.splitext(n)[0] for n in names)
    for name in names:
      stem = os.path.splitext(name)[0]
      if stems[stem] > 1:
        problems.append(f'{class_dir / name}: several images share the stem {stem!r}, so the mask '
                        f'{stem}{MASK_SUFFIX}.* is ambiguous')
      elif stem not in masks:
        problems.append(f'{class_dir / name}: no mask {gt_dir / (stem + MASK_SUFFIX)}.png '
                        '(or another image extension)')
      else:
        test.append(Entry(f'{TEST}/{defect}/{name}', defect,
                          f'{GROUND_TRUTH}/{defect}/{masks[stem]}', True))
    orphans += [f'{gt_dir / m}' for s, m in masks.items() if s not in stems]
  if gt_root.is_dir():
    for entry in _entries(gt_root):
      if not (test_dir / entry.name).is_dir() or entry.name == GOOD:
        logging.warning('%s: no matching defective test folder, ignored.', gt_root / entry.name)
  if orphans:
    logging.warning('%d masks without an image are ignored, e.g. %s', len(orphans), orphans[:3])
  raise_problems(problems, root)
  if not test:
    raise DatasetError(f'{test_dir}: holds no test images.')
  return Layout(root=root, train=train, test=tuple(test))


def fingerprint(layout: Layout) -> str:
  """sha256 hex digest of the layout's absolute root and (relative path, size, mtime) of its files.

  Cheap (stat only); it changes when a file is added, removed, renamed, rewritten or touched.
  """
  digest = hashlib.sha256(str(layout.root).encode())
  for relpath in layout.files():
    stat = (layout.root / relpath).stat()
    digest.update(f'\0{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()


def image_channels(image: Image.Image) -> int:
  """1 for a grayscale image (including a palette of grays), else 3; needs only the header."""
  if image.mode in _GRAY_MODES:
    return 1
  if image.mode in ('P', 'PA'):
    palette = np.asarray(image.getpalette('RGB') or [], dtype=np.uint8).reshape(-1, 3)
    return 1 if (palette == palette[:, :1]).all() else 3
  return 3


def _to_uint8(image: Image.Image, channels: int) -> np.ndarray:
  """The decoded PIL image as uint8 [H, W, channels]; 16-bit values are scaled by 1/257."""
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    values = np.asarray(image)
    if image.mode == 'F':
      raise DatasetError(f'{image.filename}: floating-point images are not supported '
                         '(their value range is unknown); save it as 8- or 16-bit.')
    if values.min() < 0 or values.max() > 65535:
      raise DatasetError(f'{image.filename}: values outside 0..65535 in a {image.mode} image.')
    if image.mode == 'I' and values.max() <= 255:  # 8-bit data stored in a 32-bit container.
      gray = values.astype(np.uint8)
    else:
      gray = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], channels, axis=-1)
  array = np.asarray(image.convert('L' if channels == 1 else 'RGB'))  # Drops any alpha channel.
  return array.reshape(array.shape[:2] + (channels,))


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
  """Decodes an image file to uint8 [H, W, channels] (color -> luminance, or gray -> 3 copies).

  EXIF orientation is deliberately not applied: masks are drawn on the stored pixel grid.
  """
  with Image.open(path) as image:
    image.load()
    return _to_uint8(image, channels)


def _mask_values(image: Image.Image) -> np.ndarray:
  """The decoded PIL mask as uint8 [H, W, 1]: 1 where any (non-alpha) channel is > 0, else 0."""
  return image_io.mask_values(image).astype(np.uint8)[..., None]


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """Decodes a mask file to uint8 [H, W, 1] in {0, 1} (any value > 0 is defective)."""
  with Image.open(path) as image:
    image.load()
    return _mask_values(image)


def _check_file(path: pathlib.Path, is_mask: bool) -> tuple[tuple[int, int], int]:
  """Fully decodes one file as `read_image`/`read_mask` do; returns ((width, height), channels)."""
  try:
    with Image.open(path) as image:
      image.load()  # Open only parses the header; load() decodes and catches truncated data.
      channels = image_channels(image)
      if is_mask:
        _mask_values(image)
      else:
        _to_uint8(image, channels)
      return image.size, channels
  except DatasetError:
    raise
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files.
    raise DatasetError(f'{path}: corrupt, truncated or unreadable image '
                       f'({type(e).__name__}: {e})') from None


def check_files(paths: Iterable[tuple[pathlib.Path, bool]],
                num_workers: int | None = None) -> tuple[dict[pathlib.Path, tuple], list[str]]:
  """Decodes (path, is_mask) pairs in parallel (PIL releases the GIL while decoding).

  Returns:
    ({path: ((width, height), channels)} of the good files, ['<path>: <problem>', ...]).
  """
  paths = list(paths)
  num_workers = num_workers or min(8, os.cpu_count() or 1)
  info, problems = {}, []
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    futures = {pool.submit(_check_file, p, m): p for p, m in paths}
    for future in concurrent.futures.as_completed(futures):
      try:
        info[futures[future]] = future.result()
      except DatasetError as e:
        problems.append(str(e))
  return info, sorted(problems)


def validate_images(layout: Layout) -> int:
  """Fully decodes every image and mask of `layout` and checks each mask's size against its image.

  Returns:
    The dataset's channel count: 1 if every image (masks aside) is grayscale, else 3.

  Raises:
    DatasetError listing every corrupt/truncated/unreadable file and every size mismatch.
  """
  entries = layout.train + layout.test
  files = [(layout.root / e.relpath, False) for e in entries]
  files += [(layout.root / e.mask_relpath, True) for e in entries if e.mask_relpath]
  logging.info('Decoding %d files under %s to validate them.', len(files), layout.root)
  info, problems = check_files(files)
  for e in entries:
    image, mask = layout.root / e.relpath, e.mask_relpath and layout.root / e.mask_relpath
    if mask and image in info and mask in info and info[image][0] != info[mask][0]:
      problems.append(f'{mask}: mask size {info[mask][0]} (width, height) differs from its image '
                      f'{image} of size {info[image][0]}')
  raise_problems(problems, layout.root)
  return 1 if all(info[layout.root / e.relpath][1] == 1 for e in entries) else 3


def encode_png(array: np.ndarray) -> bytes:
  """PNG bytes of a uint8 [H, W, C] array, C in {1, 3}, as `features.py` Image features store it.

  Encoded here with PIL at zlib level 1 rather than handing tfds the array: tfds encodes through a
  TF graph rebuilt for every new image shape (~15 ms per image for folders of varying sizes), and
  level 1 is 4x faster than the default 6 for ~15 % larger files.
  """
  if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3):
    raise ValueError(f'expected uint8 [H, W, 1 or 3], got {array.dtype} {array.shape}')
  buffer = io.BytesIO()
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(
      buffer, format='png', compress_level=1)
  return buffer.getvalue()


def image_png(path: str | os.PathLike, channels: int) -> tuple[bytes, tuple[int, int]]:
  """PNG bytes that decode to `read_image(path, channels)`, and the image's (H, W).

  An 8-bit single-frame PNG already in the target mode is copied byte for byte (no decoding or
  re-encoding: most MVTec AD-style datasets); anything else is decoded, converted and re-encoded.
  """
  with Image.open(path) as image:
    if (image.format == 'PNG' and image.mode == ('L' if channels == 1 else 'RGB')
        and len(image.tile) == 1 and image.tile[0].args == image.mode  # Not 1/2/4/16-bit.
        and 'transparency' not in image.info and getattr(image, 'n_frames', 1) == 1):
      return pathlib.Path(path).read_bytes(), (image.height, image.width)
    image.load()
    array = _to_uint8(image, channels)
  return encode_png(array), array.shape[:2]


def generate_examples(layout: Layout, split: str, channels: int) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) of a layout's split in the `features.py` format.

  image: PNG of uint8 [H, W, channels] at native size; mask: PNG of uint8 [H, W, 1] in {0, 1} (all
  zero without a mask file); filename and key: the image's path relative to the root.
  """
  for e in layout.split(split):
    image, shape = image_png(layout.root / e.relpath, channels)
    if e.mask_relpath:
      mask = read_mask(layout.root / e.mask_relpath)
    else:
      mask = np.zeros(shape + (1,), np.uint8)
    yield e.relpath, {
        'image': image,
        'mask': encode_png(mask),
        'label': e.label,
        'defect_type': e.defect_type,
        'filename': e.relpath,
        'has_mask': e.has_mask,
    }


def _remove_unfinished(builder: tfds.core.DatasetBuilder) -> None:
  """Deletes whatever a failed preparation of `builder` left that could pass for a dataset.

  tfds 4.9.10 writes into `<config dir>/incomplete.<random>_<version>/` and renames it to
  `<version>/` only on success; its own `finally` removes the temporary folder on an exception, and
  tfds never loads a folder whose name is not a version. This also removes a version folder without
  dataset_info.json (should a later tfds rename first and fail after) and leaves the data_dir as
  clean as before.
  """
  data_path = pathlib.Path(os.fspath(builder.data_path))
  if data_path.exists() and not (data_path / 'dataset_info.json').exists():
    shutil.rmtree(data_path)
  config_dir = data_path.parent
  for path in (config_dir, config_dir.parent):  # Empty folders only; never another dataset.
    if path.is_dir() and not any(path.iterdir()):
      path.rmdir()


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | os.PathLike | None = None) -> None:
  """`builder.download_and_prepare` that leaves no finished-looking dataset behind when it fails.

  Callers validate their input first; this guards against failures during writing (a file changed
  since validation, a full disk, Ctrl-C).
  """
  config = tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir) if manual_dir else None,
      try_download_gcs=False)  # Never on GCS; and the lookup needs the network.
  try:
    builder.download_and_prepare(download_config=config)
  except BaseException:
    _remove_unfinished(builder)
    raise
