"""Synthetic anomalies on normal images: for the denoising objective and for choosing a score.

Training with `train.synthetic_anomalies = p`: each training image becomes, with probability p, the
model's input with a synthetic anomaly drawn on it, while the reconstruction target stays the clean
image. The autoencoder then learns to remove what is not normal instead of copying its input, so a
real defect is reconstructed as normal surface and stands out in the error map (the reconstructive
half of DRAEM, Zavrtanik et al. 2021). The density head sees only clean patches (train.py).

Choosing a score with `score.select='synthetic'`: the same anomalies drawn on held-out normal images
give labelled images and masks without looking at any real defect (scoring.py, select.py).

The anomalies are deliberately of another family than the defects of the embedded textures'
test split (vivano_jax/datasets/defects.py draws scratches, holes, stains, cracks and patches):
  * shape, one of `shapes`: 'blob', a threshold of smoothed Gaussian noise (Perlin-like blobs of
    random size and number), or 'rect', one rectangle of random aspect ratio (CutPaste's shape; a
    long one becomes a band across the image); covering a fraction of the image drawn
    log-uniformly from `area` (default 0.2-4 %);
  * content, one of `kinds`: 'shift', the image itself made brighter or darker under the blob
    (blended); 'paste', the same place of another image of the batch, its brightness shifted;
    'move', another image of the batch shifted by a random offset and possibly mirrored, so that
    content from elsewhere (an edge, a part, a grain) appears where it does not belong; 'noise', a
    random texture of smoothed Gaussian noise at a random scale, contrast and colour (a stand-in for
    DRAEM's texture photographs, which cannot be downloaded at run time).
Pure numpy and scipy, seeded by the caller, so a resumed run draws the same anomalies.
"""

import numpy as np
from scipy import ndimage

from vivano_jax import errors

KINDS = ('shift', 'paste', 'move', 'noise')
SHAPES = ('blob', 'rect')
DEFAULT_KINDS = ('shift', 'paste')
DEFAULT_SHAPES = ('blob',)
DEFAULT_AREA = (0.002, 0.04)


def check(kinds, area, shapes=DEFAULT_SHAPES, field: str = 'train.synthetic'
          ) -> tuple[tuple[str, ...], tuple[float, float], tuple[str, ...]]:
  """(kinds, area, shapes) validated: a `UsageError` naming `<field>_kinds`, `<field>_area` or
  `<field>_shapes`."""
  kinds, shapes = tuple(kinds), tuple(shapes)
  if not kinds or any(k not in KINDS for k in kinds):
    raise errors.UsageError(f'{field}_kinds must be a non-empty subset of {KINDS}, got {kinds}')
  if not shapes or any(k not in SHAPES for k in shapes):
    raise errors.UsageError(f'{field}_shapes must be a non-empty subset of {SHAPES}, got {shapes}')
  given = area
  try:
    area = tuple(float(a) for a in area)
  except (TypeError, ValueError):
    area = ()  # Not numbers: the error below names the field.
  if len(area) != 2 or not 0.0 < area[0] <= area[1] <= 0.5:
    raise errors.UsageError(f'{field}_area must be (min, max) fractions with '
                            f'0 < min <= max <= 0.5, got {given}')
  return kinds, area, shapes


def blob_mask(shape: tuple[int, int], rng: np.random.Generator,
              area: tuple[float, float] = DEFAULT_AREA) -> np.ndarray:
  """A bool [H, W] mask of smooth random blobs covering a fraction of the image drawn
  log-uniformly from `area` (at least 1 pixel)."""
  h, w = shape
  sigma = rng.uniform(1.0, 4.0) * max(h, w) / 64.0
  noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode='wrap')
  fraction = np.exp(rng.uniform(np.log(area[0]), np.log(area[1])))
  mask = noise >= np.quantile(noise, 1.0 - fraction)
  if not mask.any():
    mask[np.unravel_index(np.argmax(noise), shape)] = True
  return mask


def rect_mask(shape: tuple[int, int], rng: np.random.Generator,
              area: tuple[float, float] = DEFAULT_AREA) -> np.ndarray:
  """A bool [H, W] mask of one axis-aligned rectangle (CutPaste's shape) of aspect ratio between
  1:8 and 8:1, covering a fraction drawn log-uniformly from `area`; a side longer than the image is
  cut to it (a band across the image), so the fraction can come out smaller."""
  h, w = shape
  fraction = np.exp(rng.uniform(np.log(area[0]), np.log(area[1])))
  aspect = np.exp(rng.uniform(np.log(1 / 8), np.log(8)))  # Height / width.
  rh = int(np.clip(round(np.sqrt(fraction * h * w * aspect)), 1, h))
  rw = int(np.clip(round(np.sqrt(fraction * h * w / aspect)), 1, w))
  top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
  mask = np.zeros(shape, bool)
  mask[top:top + rh, left:left + rw] = True
  return mask


def _noise_texture(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
  """A random texture in [-1, 1]: smoothed Gaussian noise at a random scale, mean and contrast,
  each channel its own colour (shared structure)."""
  h, w, c = shape
  sigma = np.exp(rng.uniform(np.log(0.5), np.log(4.0))) * max(h, w) / 128.0
  t = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma, mode='wrap')
  t = (t - t.mean()) / (t.std() + 1e-6)
  mean = rng.uniform(-0.8, 0.8, size=c)
  contrast = rng.uniform(0.1, 0.6, size=c)
  return np.clip(mean + contrast * t[..., None], -1.0, 1.0)


def _content(kind: str, image: np.ndarray, other: np.ndarray, sign: float,
             rng: np.random.Generator) -> np.ndarray:
  """The [H, W, C] content that replaces `image` under the mask (`sign`: brighter or darker)."""
  if kind == 'shift':
    alpha = rng.uniform(0.5, 0.9)
    target = np.clip(image + sign * rng.uniform(0.4, 0.9), -1.0, 1.0)
    return (1 - alpha) * image + alpha * target
  if kind == 'paste':
    return np.clip(other + sign * rng.uniform(0.15, 0.5), -1.0, 1.0)
  if kind == 'move':
    h, w = image.shape[:2]
    dy = int(rng.integers(h // 8, h - h // 8 + 1))
    dx = int(rng.integers(w // 8, w - w // 8 + 1))
    moved = np.roll(other, (dy, dx), axis=(0, 1))
    return moved[:, ::-1] if rng.random() < 0.5 else moved
  alpha = rng.uniform(0.6, 1.0)
  return (1 - alpha) * image + alpha * _noise_texture(image.shape, rng)


def draw(image: np.ndarray, other: np.ndarray, rng: np.random.Generator,
         kinds: tuple[str, ...] = DEFAULT_KINDS, area: tuple[float, float] = DEFAULT_AREA,
         shapes: tuple[str, ...] = DEFAULT_SHAPES) -> tuple[np.ndarray, np.ndarray]:
  """One synthetic anomaly on `image`.

  Args:
    image: float32 [H, W, C] in [-1, 1].
    other: float32 [H, W, C] in [-1, 1], a different normal image ('paste', 'move' take from it).
    rng: random generator.
    kinds: the contents to choose from, uniformly (KINDS).
    area: (min, max) fraction of the image the mask covers.
    shapes: the mask shapes to choose from, uniformly (SHAPES).
  Returns:
    (anomalous image float32 [H, W, C] in [-1, 1], mask bool [H, W]).
  """
  shape = str(rng.choice(shapes)) if len(shapes) > 1 else shapes[0]
  mask = (rect_mask if shape == 'rect' else blob_mask)(image.shape[:2], rng, area)
  sign = rng.choice((-1.0, 1.0))
  new = _content(str(rng.choice(kinds)), image, other, sign, rng)
  out = np.where(mask[..., None], new, image).astype(np.float32)
  return out, mask


def corrupt_batch(images: np.ndarray, probability: float, rng: np.random.Generator,
                  kinds: tuple[str, ...] = DEFAULT_KINDS,
                  area: tuple[float, float] = DEFAULT_AREA,
                  shapes: tuple[str, ...] = DEFAULT_SHAPES) -> tuple[np.ndarray, np.ndarray]:
  """Draws an anomaly on each image with `probability`.

  Args:
    images: float32 [B, H, W, C] in [-1, 1].
    probability: per image, in [0, 1].
    rng: random generator.
    kinds, area, shapes: as `draw`.
  Returns:
    (inputs float32 [B, H, W, C], masks bool [B, H, W]; all False for untouched images).
  """
  b = images.shape[0]
  out, masks = images.copy(), np.zeros(images.shape[:3], bool)
  hit = rng.random(b) < probability
  for i in np.flatnonzero(hit):
    # Another image of the batch for 'paste'; the image itself when the batch holds only one.
    j = (i + 1 + int(rng.integers(0, max(b - 1, 1)))) % b if b > 1 else i
    out[i], masks[i] = draw(images[i], images[j], rng, kinds, area, shapes)
  return out, masks


def patch_weights(masks: np.ndarray, patch_size: int) -> np.ndarray:
  """1.0 for every patch of the [B, H, W] masks that no anomaly touches, else 0.0: [B, H/P, W/P]."""
  b, h, w = masks.shape
  touched = masks.reshape(b, h // patch_size, patch_size, w // patch_size, patch_size).any(axis=(2, 4))
  return (~touched).astype(np.float32)
