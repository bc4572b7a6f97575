"""Listing, decoding and encoding the image files that the builders (and `predict`) read from disk.

Images: png, jpg, jpeg, bmp, tif, tiff (any case). Hidden files (names starting with '.', such as
.DS_Store or macOS '._*' resource forks), the __MACOSX folder of a zip made on a Mac and Windows'
Thumbs.db / desktop.ini are ignored. Every
problem is reported as one `errors.DataError` that names the file, never as a PIL, OS or
TensorFlow stack trace: a symlink that leads nowhere (dangling or looping) is found while listing,
and every file is fully decoded before a builder writes anything (`check_files`).

`read_image` is the one way an image is decoded; masks are read with `image_io.read_mask`, the
reader the offline evaluator uses too.
"""

import concurrent.futures
import io
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from vivano_jax import errors
from vivano_jax import image_io


# Modes PIL opens single-channel images in; 'P'/'PA' (palette) are decided by their palette.
_GRAY_MODES = frozenset({'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'})


def raise_problems(problems: Sequence[str], where: str | os.PathLike) -> None:
  """Raises one DataError listing `problems` ('<path>: <what is wrong>' lines), if any."""
  if problems:
    raise errors.DataError(image_io.format_problems(problems, where))


is_ignored = image_io.is_ignored
is_image_name = image_io.is_image_name


def directory(path: str | os.PathLike, what: str) -> pathlib.Path:
  """The absolute path of the existing directory `path`; DataError naming it and `what` else."""
  try:
    root = pathlib.Path(path).expanduser().resolve()
  except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13).
    raise errors.DataError(f'{path}: unusable {what} path ({e})') from None
  if not root.is_dir():
    raise errors.DataError(f'{root}: {what} ' + ('is not a directory.' if root.exists()
                                                 else 'does not exist.'))
  problem = image_io.name_problem(root)
  if problem:
    raise errors.DataError(problem)
  return root


def broken_link(path, reason: str = '') -> str:
  """The problem line for a link that leads nowhere (or round in a loop)."""
  because = f' ({reason})' if reason else ''
  return f'{path}: broken symlink{because}; remove it or point it at an existing file'


def entries(folder: pathlib.Path, problems: list[str]) -> list[os.DirEntry]:
  """The entries of `folder` that are not ignored, sorted by name, each safe to stat.

  A symlink that leads nowhere (its target is missing, or it loops) is appended to `problems`
  instead: stat-ing it later would raise an OSError far from its name; so is a name that is not
  UTF-8 text.
  """
  found = []
  with os.scandir(folder) as it:
    for entry in it:
      if is_ignored(entry.name):
        continue
      problem = image_io.name_problem(folder / entry.name)
      if problem:
        problems.append(problem)
        continue
      if entry.is_symlink():
        try:
          entry.stat()  # Follows the link; cached, so is_dir() below cannot raise.
        except OSError as e:
          problems.append(broken_link(folder / entry.name, e.strerror or str(e)))
          continue
      found.append(entry)
  return sorted(found, key=lambda e: e.name)


def list_class_folder(folder: pathlib.Path, problems: list[str]) -> list[str]:
  """Sorted image file names in a class folder; non-image files and subfolders become problems."""
  names = []
  for entry in entries(folder, problems):
    path = folder / entry.name
    if entry.is_dir():
      problems.append(f'{path}: unexpected folder inside a class folder (nesting is not supported)')
    elif not is_image_name(entry.name):
      problems.append(f'{path}: not an image file (expected one of '
                      f'{", ".join(sorted(image_io.IMAGE_EXTENSIONS))}; hidden files are ignored)')
    else:
      names.append(entry.name)
  return names


def image_channels(image: Image.Image) -> int:
  """1 for a grayscale image (including a palette of grays), else 3; needs only the header."""
  if image.mode in _GRAY_MODES:
    return 1
  if image.mode in ('P', 'PA'):
    palette = np.asarray(image.getpalette('RGB') or [], dtype=np.uint8).reshape(-1, 3)
    return 1 if (palette == palette[:, :1]).all() else 3
  return 3


def _to_uint8(image: Image.Image, channels: int, where: str) -> np.ndarray:
  """The decoded PIL image (of the file `where`) as uint8 [H, W, channels]; 16-bit values are
  scaled by 1/257, each file alike (a 32-bit integer TIFF or a floating-point image is a
  DataError)."""
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    values = np.asarray(image)
    if image.mode == 'F':
      raise errors.DataError(f'{where}: floating-point images are not supported '
                             '(their value range is unknown); save it as 8- or 16-bit.')
    if image.mode == 'I' and image.format == 'TIFF':
      # 8-, 12- or 16-bit data in a 32-bit container look alike: scaling each file by its own
      # values would make one dark image of a folder 257 times brighter than its neighbours.
      raise errors.DataError(
          f'{where}: 32-bit integer TIFFs are not supported (the range of their values '
          'is unknown); save it as an 8- or 16-bit image.')
    if values.min() < 0 or values.max() > 65535:
      raise errors.DataError(f'{where}: values outside 0..65535 in a {image.mode} image.')
    # 16-bit data (PNG, TIFF; PIL scales a PGM's maxval to 65535 in mode 'I'), whatever its values.
    gray = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], channels, axis=-1)
  array = np.asarray(image.convert('L' if channels == 1 else 'RGB'))  # Drops any alpha channel.
  return array.reshape(array.shape[:2] + (channels,))


def read_image(path, channels: int | None = None) -> np.ndarray:
  """Decodes an image file (path or file object) to uint8 [H, W, channels].

  `channels` None keeps the file's own count (1 for grayscale, else 3); otherwise color becomes
  luminance, or gray 3 copies. The image is read as a viewer shows it (image_io.oriented: turned
  by its EXIF orientation tag), as its mask is drawn. An animation or a multi-page file is a
  DataError (image_io.check_single_frame).
  """
  where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else 'image'
  with image_io.open_image(path) as image:
    image_io.check_single_frame(image, path)
    image.load()  # Open only parses the header; load() decodes and catches truncated data.
    return _to_uint8(image_io.oriented(image), channels or image_channels(image), where)


def _check_file(path: pathlib.Path, is_mask: bool) -> tuple[tuple[int, int], int]:
  """Fully decodes one file as the builders do; returns ((width, height), channels)."""
  try:
    if is_mask:
      height, width = image_io.read_mask(path).shape
      return (width, height), 1
    height, width, channels = read_image(path).shape
    return (width, height), channels
  except errors.DataError:
    raise
  except Image.DecompressionBombError as e:  # Refused from its header, not corrupt.
    raise errors.DataError(f'{path}: too large to decode ({e}); downscale it') from None
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files.
    raise errors.DataError(f'{path}: corrupt, truncated or unreadable image '
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
      except errors.DataError as e:
        problems.append(str(e))
  return info, sorted(problems)


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


def _is_stored_format(image: Image.Image, channels: int) -> bool:
  """True for an 8-bit single-frame PNG whose bytes decode to `read_image(..., channels)`."""
  return (image.format == 'PNG' and image.mode == ('L' if channels == 1 else 'RGB')
          and len(image.tile) == 1 and image.tile[0].args == image.mode  # Not 1/2/4/16-bit.
          and 'transparency' not in image.info and getattr(image, 'n_frames', 1) == 1
          and not image_io.is_turned(image))


def image_png(path: str | os.PathLike, channels: int) -> tuple[bytes, tuple[int, int]]:
  """PNG bytes that decode to `read_image(path, channels)`, and the image's (H, W).

  A PNG already in the stored format is copied byte for byte (no decoding or re-encoding: most
  MVTec AD-style datasets); anything else is decoded, converted and re-encoded.
  """
  with Image.open(path) as image:  # Reads the header only.
    if _is_stored_format(image, channels):
      return pathlib.Path(path).read_bytes(), (image.height, image.width)
  array = read_image(path, channels)
  return encode_png(array), array.shape[:2]
