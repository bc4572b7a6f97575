"""Heatmap overlays: the side-by-side picture of an image, its anomaly map and its mask.

An overlay puts side by side, at the image's native size: the image | the anomaly map in colour
over a grey copy of it | the ground-truth mask (white on black; mid-grey when the image has no
pixel annotation; left out for new images). The map's colours run from blue at `display_range[0]`
to red at `display_range[1]`, one scale for every image of a run (export.py takes it from held-out
normal images), so colours compare across images.

numpy and Pillow only: `vivano predict --model` draws the same pictures as export without the
plotting and training libraries.
"""

import os
from typing import Optional

import numpy as np
from PIL import Image

from vivano_jax import image_io

_GAP = 4  # White pixels between panels.
_MASK_UNKNOWN = 128  # Grey mask panel: no pixel ground truth for this image.

# The 'jet' colour map: matplotlib's segment data (red, green, blue), linear between the points.
_JET = (((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
        ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
        ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)))


def jet_colors(n: int = 256) -> np.ndarray:
  """n colours of the 'jet' map from blue (0) to red (1), float32 [n, 3] in [0, 255]."""
  x = np.linspace(0.0, 1.0, n)
  return (np.stack([np.interp(x, *zip(*points)) for points in _JET], axis=-1) * 255).astype(
      np.float32)


_COLORS = jet_colors()


def overlay(image: np.ndarray, amap: np.ndarray, mask: Optional[np.ndarray],
            display_range: tuple[float, float], has_mask: bool = True) -> np.ndarray:
  """The side-by-side picture, uint8 [H, 2 W + gap or 3 W + 2 gaps, 3].

  Args:
    image: uint8 [H, W], [H, W, 1] or [H, W, 3] at native size.
    amap: float [h, w] anomaly map (resized bilinearly to [H, W] if needed).
    mask: bool [h, w] ground truth, or None for no mask panel.
    display_range: (lo, hi) map values drawn blue and red.
    has_mask: False draws the mask panel grey (no pixel ground truth).
  """
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
  h, w = rgb.shape[:2]
  lo, hi = float(display_range[0]), float(display_range[1])
  level = np.clip((image_io.resize(np.asarray(amap, np.float32), (h, w)) - lo)
                  / max(hi - lo, 1e-12), 0.0, 1.0)
  heat = _COLORS[np.round(level * 255).astype(np.int32)]
  gray = rgb.astype(np.float32).mean(axis=-1, keepdims=True)
  panels = [rgb.astype(np.uint8), np.round(0.5 * gray + 0.5 * heat).astype(np.uint8)]
  if mask is not None:
    if has_mask:
      m = image_io.resize(np.asarray(mask, bool), (h, w)).astype(np.uint8) * 255
    else:
      m = np.full((h, w), _MASK_UNKNOWN, np.uint8)
    panels.append(np.repeat(m[..., None], 3, axis=-1))
  gap = np.full((h, _GAP, 3), 255, np.uint8)
  out = [panels[0]]
  for p in panels[1:]:
    out += [gap, p]
  return np.concatenate(out, axis=1)


def save_overlay(path: str | os.PathLike, *args, **kwargs) -> None:
  """`overlay(*args, **kwargs)` as a PNG."""
  Image.fromarray(overlay(*args, **kwargs)).save(path, format='png', compress_level=1)
