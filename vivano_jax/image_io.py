"""Image-file rules shared by the dataset builders and the offline evaluator.

numpy and PIL only (no TensorFlow, no JAX), so `python -m vivano_jax.evaluate` can use it. The
builders (datasets/image_files.py) and the evaluator read masks with the same `read_mask`, so a
mask means the same pixels when a dataset is built and when an export is scored.
"""

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageOps

from vivano_jax import errors

IMAGE_EXTENSIONS = frozenset(
    {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.pgm', '.ppm', '.pnm'})
MAX_LISTED_PROBLEMS = 20
_LOSSY_FORMATS = ('JPEG', 'MPO', 'WEBP')  # WebP may be lossy; a lossless mask reads the same.
_ORIENTATION = 0x0112  # The EXIF tag: how a viewer turns the stored pixels to show them.


IGNORED_NAMES = frozenset({'thumbs.db', 'desktop.ini', '__macosx'})  # Compared lower-case.


def is_browser_file(name: str) -> bool:
  """True for the files a file browser leaves in a folder it shows (.DS_Store, ._<name>,
  Thumbs.db, desktop.ini).

  The question it answers: may a folder holding this file be deleted, replaced as a whole (vivano
  export-model --output)? These are no one's data. Any other hidden name (.git, .env, .gitkeep) is
  someone's, and keeps the folder from being replaced: do not merge this rule with `is_ignored`,
  which skips every hidden name when reading a folder and deletes nothing."""
  lower = name.lower()
  return lower in ('.ds_store', 'thumbs.db', 'desktop.ini') or name.startswith('._')


def is_ignored(name: str) -> bool:
  """True for hidden names (every name starting with '.': .DS_Store, ._x, .git/, .x.png) and OS
  droppings (__MACOSX/, Thumbs.db, desktop.ini).

  The question it answers: is this entry of a folder being read for images or masks (a dataset,
  ground_truth/, predict --input) not an image to read? Readers skip it; predict also leaves such
  a file where it is in its --output's maps/ and overlays/. It never decides what may be deleted:
  a hidden .git is someone's data (`is_browser_file` answers that question)."""
  return name.startswith('.') or name.lower() in IGNORED_NAMES


def name_problem(path: str | os.PathLike) -> str | None:
  """'<path>: <problem>' when the path is not UTF-8 text (a name from another system's encoding;
  Python keeps its bytes as surrogates, which no CSV, JSON or dataset string can hold), else None.
  """
  try:
    os.fspath(path).encode('utf-8')
    return None
  except UnicodeEncodeError:
    shown = os.fsencode(path).decode('utf-8', 'replace')
    return f'{shown}: its name is not UTF-8 text (from another system?); rename it'


def is_image_name(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_turned(image: Image.Image) -> bool:
  """Whether a viewer shows the image turned or mirrored from its stored pixels (EXIF tag)."""
  return image.getexif().get(_ORIENTATION, 1) not in (1, None)


def smaller_than_patch(size: tuple[int, int], patch_size: int) -> bool:
  """Whether an image of (H, W) px has a side shorter than one model patch: upscaled to the model
  size, its few pixels are blurred over patches, so what the model learns from it (in training)
  or says of it (its score) means little. Training and predict warn alike (`too_small`)."""
  return min(size) < patch_size


def too_small(patch_size: int, image_size: int) -> str:
  """The words of the warnings about images `smaller_than_patch` (predict's per image, training's
  per dataset)."""
  return (f'smaller than one {patch_size} px patch at the model size images are upscaled to '
          f'({image_size} px)')


def open_image(path) -> Image.Image:
  """`Image.open(path)` (a path or a file object), but a TIFF file turned a quarter by its
  orientation tag (5-8) is opened from its bytes: Pillow 13 maps an uncompressed one (8-bit gray,
  palette, 16-bit, RGBA, CMYK) from the file at its turned size, which scrambles its rows; read
  from memory, it is turned as shown (Pillow turns TIFFs itself when it loads them). Its
  `filename` is then empty (with one, Pillow would map the file again)."""
  image = Image.open(path)
  if (image.format == 'TIFF' and isinstance(path, (str, os.PathLike))
      and image.tag_v2.get(_ORIENTATION) in (5, 6, 7, 8)):
    image.close()
    with open(path, 'rb') as f:
      image = Image.open(io.BytesIO(f.read()))
  return image


def check_single_frame(image: Image.Image, path) -> None:
  """DataError for an animation or a multi-page file (GIF, APNG, TIFF, WebP) at `path`: which of
  its frames is the picture is unknown, and reading the first would score it silently. A camera's
  MPO JPEG (the photo, then its previews) is read as its first image, the photo."""
  frames = getattr(image, 'n_frames', 1)
  if frames > 1 and image.format != 'MPO':
    where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else 'image'
    raise errors.DataError(f'{where}: holds {frames} frames (an animation or a multi-page file); '
                           'save the one frame to use as an image file')


def oriented(image: Image.Image) -> Image.Image:
  """The decoded image as a viewer shows it: turned or mirrored by its EXIF orientation tag (a
  phone's photo), so that a mask drawn on the image as shown lines up; `image` itself without one.
  """
  if not is_turned(image):
    return image
  shown = ImageOps.exif_transpose(image)
  shown.format, shown.filename = image.format, getattr(image, 'filename', '')  # For messages.
  return shown


def mask_values(image: Image.Image) -> np.ndarray:
  """A decoded PIL mask as bool [H, W]: True where any colour channel is > 0; in a JPEG (or WebP),
  above half the mask's maximum (lossy compression leaves faint values around every drawn edge,
  which > 0 would count as defect: 1.5-2x the true area of MVTec AD masks saved at quality 75).
  A mask whose transparency varies (strokes painted on a transparent layer) is read as shown over
  black: a fully transparent pixel is no defect, whatever colour it stores; uniform alpha is
  ignored."""
  lossy = image.format in _LOSSY_FORMATS
  if image.mode in ('P', 'PA'):  # Palette index 0 need not be black: look at the colours.
    image = image.convert('RGBA' if image.mode == 'PA' or 'transparency' in image.info else 'RGB')
  values = np.asarray(image)
  if image.mode in ('LA', 'La', 'RGBA', 'RGBa'):
    alpha, values = values[..., -1:], values[..., :-1]
    if alpha.size and alpha.min() != alpha.max():  # Seen over black: transparent is no defect.
      values = np.where(alpha > 0, values, 0)
  if values.ndim == 3:
    values = values.max(axis=-1)
  return values > (values.max() / 2 if lossy and values.size else 0)


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """Decodes a mask file to bool [H, W] as shown (`oriented`; `mask_values`: any colour channel
  > 0, JPEG masks above half their maximum, painted pixels of a transparent layer).

  Raises what PIL raises for a missing, corrupt or truncated file (OSError, SyntaxError, ...),
  which callers turn into their own one-line message, and DataError for a file of several frames.
  """
  with open_image(path) as image:
    check_single_frame(image, path)
    image.load()  # Open only parses the header; load() decodes and catches truncated data.
    return mask_values(oriented(image))


def format_problems(problems: Sequence[str], where: str | os.PathLike) -> str:
  """One message listing '<path>: <what is wrong>' lines (the first MAX_LISTED_PROBLEMS of them).

  A single problem is returned as is: it already names its file, and one line reads best.
  """
  if len(problems) == 1:
    return problems[0]
  shown = [f'  - {p}' for p in problems[:MAX_LISTED_PROBLEMS]]
  if len(problems) > MAX_LISTED_PROBLEMS:
    shown.append(f'  ... and {len(problems) - MAX_LISTED_PROBLEMS} more')
  return f'{len(problems)} problem(s) in {where}:\n' + '\n'.join(shown)


def resize(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """[h, w] float map -> shape [H, W], bilinear with half-pixel centres (as score_maps.upsample);
  a bool mask -> nearest neighbour. Returned as is when already of that shape."""
  if x.shape == tuple(shape):
    return x
  if x.dtype == bool:
    return np.asarray(Image.fromarray(x.astype(np.uint8) * 255).resize(
        (shape[1], shape[0]), Image.NEAREST)) > 0
  return np.asarray(Image.fromarray(x.astype(np.float32), mode='F').resize(
      (shape[1], shape[0]), Image.BILINEAR))
