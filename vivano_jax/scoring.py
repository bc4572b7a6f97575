"""Anomaly scores from model outputs (paper Section 4.3), pure jnp.

Pixel map: the per-patch mixture NLL [B, h, w] upsampled bilinearly to the image size [B, H, W]
(half-pixel centres, as PyTorch's interpolate with align_corners=False), optionally smoothed with a
Gaussian. Image score: the maximum per-patch NLL (the paper), the mean squared reconstruction error, or
their combination.

Each score kind is a 'component'; 'combined' adds the standardised components, using the mean and standard
deviation of each component over normal training images (`ScoreStats`), so neither dominates by its units.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from vivano_jax import losses

Array = jax.Array

IMAGE_SCORES = ('nll_max', 'recon', 'combined')
PIXEL_MAPS = ('nll', 'recon', 'combined')


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Array:
  """The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5)."""
  radius = int(truncate * sigma + 0.5)
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * jnp.square(x / sigma))
  return k / jnp.sum(k)


def gaussian_blur(maps: Array, sigma: float) -> Array:
  """Separable Gaussian smoothing of [B, H, W] maps with symmetric (scipy 'reflect') borders."""
  if sigma <= 0:
    return maps
  k = gaussian_kernel1d(sigma)
  r = (k.shape[0] - 1) // 2
  h, w = maps.shape[1], maps.shape[2]

  def blur_axis(x, axis, n):
    pad = [(0, 0)] * 3
    pad[axis] = (r, r)
    # Borders wider than the map itself need repeated reflection; jnp.pad handles it.
    x = jnp.pad(x, pad, mode='symmetric')
    idx = jnp.arange(n)[:, None] + jnp.arange(2 * r + 1)[None, :]  # [n, 2r + 1] windows
    win = jnp.take(x, idx, axis=axis)  # [..., n, 2r + 1, ...]
    if axis == 1:
      return jnp.einsum('bnkw,k->bnw', win, k)
    return jnp.einsum('bhnk,k->bhn', win, k)

  return blur_axis(blur_axis(maps.astype(jnp.float32), 1, h), 2, w)


def upsample(patch_maps: Array, height: int, width: int) -> Array:
  """Bilinear upsampling [B, h, w] -> [B, H, W]."""
  b = patch_maps.shape[0]
  return jax.image.resize(patch_maps.astype(jnp.float32), (b, height, width), method='bilinear')


def score_components(outputs: dict[str, Array], images: Array, smoothing_sigma: float
                     ) -> tuple[dict[str, Array], dict[str, Array]]:
  """Image-level and pixel-level score components.

  Args:
    outputs: model outputs; 'recon' is optional (without it only NLL components are produced).
    images: [B, H, W, C] inputs in [-1, 1].
    smoothing_sigma: Gaussian sigma in pixels for the pixel maps (0 = none).
  Returns:
    (image components {name: [B]}, pixel components {name: [B, H, W]}).
  """
  _, height, width, _ = images.shape
  nll = outputs['nll']
  image = {'nll_max': jnp.max(nll, axis=(1, 2)), 'nll_mean': jnp.mean(nll, axis=(1, 2))}
  pixel = {'nll': gaussian_blur(upsample(nll, height, width), smoothing_sigma)}
  if 'recon' in outputs:
    err = losses.squared_error_map(images, outputs['recon'])
    image['recon'] = jnp.mean(err, axis=(1, 2))
    pixel['recon'] = gaussian_blur(err, smoothing_sigma)
  return image, pixel


ScoreStats = dict[str, tuple[float, float]]  # component -> (mean, std) over normal training images


def combine(components: dict[str, Array], kind: str, stats: Optional[ScoreStats],
            names: tuple[str, str]) -> Array:
  """Selects score `kind`; 'combined' sums the two standardised components named in `names`."""
  if kind != 'combined':
    if kind not in components:
      raise ValueError(f'score {kind!r} needs outputs that were not computed (have {sorted(components)})')
    return components[kind]
  if not stats:
    raise ValueError("the 'combined' score needs score statistics from the training images")
  total = 0.0
  for name in names:
    mean, std = stats[name]
    total = total + (components[name] - mean) / max(std, 1e-12)
  return total


def final_scores(image_components: dict[str, Array], pixel_components: dict[str, Array],
                 image_kind: str, pixel_kind: str, stats: Optional[ScoreStats] = None
                 ) -> tuple[Array, Array]:
  """(image scores [B], pixel maps [B, H, W]) for the configured kinds."""
  if image_kind not in IMAGE_SCORES:
    raise ValueError(f'score.image must be one of {IMAGE_SCORES}, got {image_kind!r}')
  if pixel_kind not in PIXEL_MAPS:
    raise ValueError(f'score.pixel must be one of {PIXEL_MAPS}, got {pixel_kind!r}')
  pixel_stats = None if stats is None else {
      'nll': stats.get('pixel_nll'), 'recon': stats.get('pixel_recon')}
  image = combine(image_components, image_kind, stats, ('nll_max', 'recon'))
  pixel = combine(pixel_components, pixel_kind, pixel_stats, ('nll', 'recon'))
  return image, pixel


def needs_decoder(image_kind: str, pixel_kind: str) -> bool:
  """Whether the configured scores need the reconstruction (else the decoder pass is skipped)."""
  return image_kind in ('recon', 'combined') or pixel_kind in ('recon', 'combined')
