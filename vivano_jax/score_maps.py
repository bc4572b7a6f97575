"""The building blocks of the pixel maps (scoring.py combines them): Gaussian smoothing, SSIM, the
squared error, bilinear upsampling of patch grids and test-time shifts; pure jnp / numpy.

Test-time shifts (`score.shifts` = S > 1, `shifted_nll`): the image is scored S^2 times with its
content moved by fractions P / S of a patch, and the NLL grids interleaved into one S-times finer
grid: the NLL map resolves defects smaller than a patch without retraining anything.

Test-time views (`score.tta`, `averaged_views`): the image is scored mirrored and turned as well
(by default the flips and quarter turns training augments with, which the model learnt as normal),
each view's maps turned back, and the model's maps (reconstruction, NLL grid, segmenter logits)
averaged over the views: a steadier map of the same model.
"""

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vivano_jax import errors

Array = jax.Array


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
  """The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5).

  numpy, so its weights are constants of the traced blur."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * np.square(x / sigma))
  return (k / np.sum(k)).astype(np.float32)


def gaussian_blur(maps: Array, sigma: float, truncate: float = 4.0) -> Array:
  """Separable Gaussian smoothing of [B, H, W] maps (or [..., H, W]: the last two axes) with
  symmetric (scipy 'reflect') borders."""
  if sigma <= 0:
    return maps
  k = gaussian_kernel1d(sigma, truncate)
  r = (k.shape[0] - 1) // 2

  def blur_axis(x, axis):
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    # Borders wider than the map itself need repeated reflection; jnp.pad handles it.
    x = jnp.pad(x, pad, mode='symmetric')
    # A weighted sum of 2r + 1 shifted slices: XLA fuses it into one pass over the map, where
    # gathering the windows would first write a (2r + 1) times larger array.
    out = float(k[0]) * jax.lax.slice_in_dim(x, 0, n, axis=axis)
    for i in range(1, 2 * r + 1):
      out = out + float(k[i]) * jax.lax.slice_in_dim(x, i, i + n, axis=axis)
    return out

  return blur_axis(blur_axis(maps.astype(jnp.float32), maps.ndim - 2), maps.ndim - 1)


def ssim_map(x: Array, y: Array, data_range: float = 2.0, sigma: float = 1.5, k1: float = 0.01,
             k2: float = 0.03) -> Array:
  """Structural similarity per pixel, averaged over channels: [B, H, W, C] x2 -> [B, H, W].

  Wang et al. 2004 with Gaussian windows (sigma 1.5, truncated at 3.5 sigma) and population
  (co)variances, as skimage.metrics.structural_similarity(gaussian_weights=True,
  use_sample_covariance=False, full=True); borders reflected. Images in [-1, 1]: data_range 2.
  The five local moments of every channel plane are blurred together, in one pass.
  """
  x, y = (jnp.moveaxis(a.astype(jnp.float32), -1, 0) for a in (x, y))  # [C, B, H, W] planes.
  # [5, C, B, H, W]: stacked on a new axis, so an exported model's symbolic batch is never split.
  mx, my, sxx, syy, sxy = gaussian_blur(jnp.stack([x, y, x * x, y * y, x * y]), sigma,
                                        truncate=3.5)
  vx, vy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=0)


def squared_error_map(images: Array, recon: Array) -> Array:
  """Per-pixel squared error averaged over channels: [B, H, W, C] x2 -> [B, H, W]."""
  return jnp.mean(jnp.square(images.astype(jnp.float32) - recon.astype(jnp.float32)), axis=-1)


def upsample(patch_maps: Array, height: int, width: int, shifts: int = 1) -> Array:
  """Bilinear upsampling [B, h, w] -> [B, H, W].

  shifts = 1: a value per patch at its centre (half-pixel centres, as PyTorch's interpolate with
  align_corners=False). shifts = S > 1: the interleaved grid of `shifted_nll`, whose value j along
  an axis sits at the centre of the patch starting at pixel j * P / S: the grid is translated by
  P / 2 - P / (2 S) pixels beside the usual half-pixel placement. Beyond the outermost values the
  map keeps the edge value, in both cases.
  """
  b, h, w = patch_maps.shape
  x = patch_maps.astype(jnp.float32)
  if shifts == 1:
    return jax.image.resize(x, (b, height, width), method='bilinear')
  rows = _interpolation_matrix(height, h, height * shifts / h, shifts)
  cols = _interpolation_matrix(width, w, width * shifts / w, shifts)
  return jnp.einsum('yi,bij,xj->byx', rows, x, cols)


def _interpolation_matrix(size: int, n: int, patch: float, shifts: int) -> np.ndarray:
  """[size, n] linear interpolation weights from n values at pixel coordinates j * patch / shifts +
  patch / 2 - 0.5 to the pixels 0 .. size - 1, the edge values held beyond the outermost ones."""
  u = (np.arange(size) - (patch / 2 - 0.5)) / (patch / shifts)
  u = np.clip(u, 0, n - 1)
  lo = np.minimum(np.floor(u).astype(int), n - 1)
  hi = np.minimum(lo + 1, n - 1)
  frac = u - lo
  m = np.zeros((size, n), np.float32)
  np.add.at(m, (np.arange(size), lo), 1 - frac)
  np.add.at(m, (np.arange(size), hi), frac)
  return m


def shifted_nll(nll_of, images: Array, nll: Array, patch_size: int, shifts: int) -> Array:
  """A finer NLL grid from test-time shifts: [B, h * S, w * S] for S = `shifts`.

  The image is scored again with its content moved by (ky, kx) * P / S pixels, ky, kx < S (the
  bottom and right borders reflected), so the patch grid falls at S x S offsets; entry
  (a * S + ky, c * S + kx) is the NLL of the patch starting at pixel (a * P + ky * P / S,
  c * P + kx * P / S). S^2 encoder passes give an S-times finer map; the model is unchanged.

  Args:
    nll_of: images [B, H, W, C] -> per-patch NLL [B, h, w] (the model without its decoder).
    images: [B, H, W, C].
    nll: `nll_of(images)`, already computed.
  """
  if shifts == 1:
    return nll
  step = patch_size // shifts
  _, height, width, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (0, patch_size), (0, patch_size), (0, 0)), mode='reflect')
  rows = []
  for ky in range(shifts):
    row = [nll if ky == kx == 0 else
           nll_of(padded[:, ky * step:ky * step + height, kx * step:kx * step + width])
           for kx in range(shifts)]
    rows.append(jnp.stack(row, axis=-1))  # [B, h, w, S (kx)]
  grid = jnp.stack(rows, axis=-2)  # [B, h, w, S (ky), S (kx)]
  b, h, w = nll.shape
  return grid.transpose(0, 1, 3, 2, 4).reshape(b, h * shifts, w * shifts)


TTA = ('none', 'augment', 'flips', 'dihedral')
VIEW_OUTPUTS = ('recon', 'nll', 'seg_logits')  # The model's maps that `averaged_views` averages.
IDENTITY = ((0, False),)
_MIRRORS = ((0, False), (0, True), (2, True), (2, False))  # Itself, left-right, up-down, half turn.
_DIHEDRAL = tuple((k, mirrored) for k in range(4) for mirrored in (False, True))


def tta_views(tta: str, augment: Optional[Mapping[str, bool]] = None
              ) -> tuple[tuple[int, bool], ...]:
  """The views (quarter turns, mirrored) of `score.tta`: 'none' the image itself; 'flips' the image
  and it mirrored left-right, up-down and both (a half turn); 'dihedral' all 8 combinations of
  quarter turns and mirroring; 'augment' the views training showed the model as normal, the group
  `dataset.augment` (hflip, vflip, rot90) generates."""
  if tta == 'none':
    return IDENTITY
  if tta == 'flips':
    return _MIRRORS
  if tta == 'dihedral':
    return _DIHEDRAL
  if tta != 'augment':
    raise errors.UsageError(f'score.tta must be one of {TTA}, got {tta!r}')
  hflip, vflip, rot90 = (bool((augment or {}).get(k)) for k in ('hflip', 'vflip', 'rot90'))
  if rot90:
    return _DIHEDRAL if hflip or vflip else tuple((k, False) for k in range(4))
  return {(False, False): IDENTITY, (True, False): _MIRRORS[:2],
          (False, True): _MIRRORS[::2], (True, True): _MIRRORS}[hflip, vflip]


def to_view(x: Array, view: tuple[int, bool]) -> Array:
  """[B, H, W, ...] (H = W) turned by view[0] quarter turns, then mirrored left-right if view[1]."""
  turns, mirrored = view
  x = jnp.rot90(x, turns, axes=(1, 2))
  return jnp.flip(x, axis=2) if mirrored else x


def from_view(x: Array, view: tuple[int, bool]) -> Array:
  """The inverse of `to_view`: a map of the view back in the image's orientation."""
  turns, mirrored = view
  x = jnp.flip(x, axis=2) if mirrored else x
  return jnp.rot90(x, -turns, axes=(1, 2))


def averaged_views(apply, images: Array, views: Sequence[tuple[int, bool]]) -> dict[str, Array]:
  """The `VIEW_OUTPUTS` of `apply(images)` (a dict of [B, H, W, ...] maps, square) averaged over
  the views (`tta_views`), each turned back first; the segmenter's logits are averaged as logits."""
  total = None
  for view in views:
    out = apply(to_view(images, view))
    out = {k: from_view(out[k], view) for k in VIEW_OUTPUTS if k in out}
    total = out if total is None else {k: total[k] + v for k, v in out.items()}
  return {k: v / len(views) for k, v in total.items()}
