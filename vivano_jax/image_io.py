"""Image-file rules shared by the dataset builders and the offline evaluator.

numpy and PIL only (no TensorFlow, no JAX), so `python -m vivano_jax.evaluate` can use it.
"""

import os
from typing import Sequence

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff'})
MAX_LISTED_PROBLEMS = 20


def is_image_name(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def mask_values(image: Image.Image) -> np.ndarray:
  """A decoded PIL mask as bool [H, W]: True where any non-alpha channel is > 0."""
  if image.mode in ('P', 'PA'):  # Palette index 0 need not be black: look at the colours.
    image = image.convert('RGBA' if image.mode == 'PA' else 'RGB')
  values = np.asarray(image)
  if image.mode in ('LA', 'La', 'RGBA', 'RGBa'):
    values = values[..., :-1]  # Alpha is transparency, not a defect marker.
  if values.ndim == 3:
    values = values.max(axis=-1)
  return values > 0


def format_problems(problems: Sequence[str], where: str | os.PathLike) -> str:
  """One message listing '<path>: <what is wrong>' lines (the first MAX_LISTED_PROBLEMS of them)."""
  shown = [f'  - {p}' for p in problems[:MAX_LISTED_PROBLEMS]]
  if len(problems) > MAX_LISTED_PROBLEMS:
    shown.append(f'  ... and {len(problems) - MAX_LISTED_PROBLEMS} more')
  return f'{len(problems)} problem(s) in {where}:\n' + '\n'.join(shown)
