"""Procedural surface defects drawn onto grayscale texture tiles (pure numpy + skimage.draw).

Every function takes a uint8 tile [H, W] and a `np.random.Generator` and returns `(new_tile, mask)`:
`new_tile` uint8 [H, W] and `mask` uint8 [H, W] in {0, 1}. The mask is the defect's drawn
footprint: each function first builds the footprint and then paints only through it, so every
changed pixel lies in the mask (a footprint pixel whose value happens not to change still counts as
defective). All defects lie entirely inside the tile. Sizes are in pixels, intensities in uint8 gray
levels.

Kinds (`DEFECT_KINDS`):
  scratch  thin bright or dark curved polyline, 2-4 px wide, 20-60 px long.
  hole     dark filled ellipse with a hard edge, radii 5-14 px.
  stain    blob (mean radius 10-25 px) whose intensity is blended towards a brighter or darker
           level.
  crack    dark jagged random-walk line, 1-3 px wide, 30-80 px long.
  patch    rectangle or ellipse with sides 16-32 px, filled with content cut from another image
           (the caller passes that `source`; the textures builder uses another photograph's test
           region), its mean shifted 50-80 gray levels off the tile's so it stands out.

Intensity contrasts (~50-130 gray levels) are well above the textures' own spread (std ~25-40), so
the defects are visible to a human, while their area stays a small fraction of a 128 x 128 tile.
"""

from typing import Callable

import numpy as np
from skimage import draw

DEFECT_KINDS = ('scratch', 'hole', 'stain', 'crack', 'patch')


def _check_tile(tile: np.ndarray) -> None:
  if tile.ndim != 2 or tile.dtype != np.uint8:
    raise ValueError(f'tile must be uint8 [H, W], got {tile.dtype} {tile.shape}')


def _contrast_level(tile: np.ndarray, footprint: np.ndarray, rng: np.random.Generator,
                    delta: float) -> float:
  """A gray level `delta` above or below the tile's mean under `footprint` (random side).

  Flips to the other side when clipping to [0, 255] would eat more than a third of the contrast, so
  a bright defect on a bright region becomes a dark one instead of an invisible one.
  """
  mean = float(tile[footprint].mean())
  sign = rng.choice((-1.0, 1.0))
  level = float(np.clip(mean + sign * delta, 0, 255))
  if abs(level - mean) < 2 * delta / 3:
    level = float(np.clip(mean - sign * delta, 0, 255))
  return level


def _fill(tile: np.ndarray, footprint: np.ndarray, level: float, noise_std: float,
          rng: np.random.Generator) -> np.ndarray:
  """Copy of `tile` with `footprint` set to `level` plus a little Gaussian noise (less flat)."""
  out = tile.copy()
  values = level + rng.normal(0.0, noise_std, size=int(footprint.sum()))
  out[footprint] = np.clip(np.round(values), 0, 255).astype(np.uint8)
  return out


def _place(points: np.ndarray, shape: tuple[int, int], margin: int,
           rng: np.random.Generator) -> np.ndarray:
  """Moves float (row, col) points [N, 2] to a random spot at least `margin` px from the border."""
  lo = points.min(axis=0)
  hi = points.max(axis=0)
  low = margin - lo
  high = np.array(shape, dtype=np.float64) - 1 - margin - hi
  if np.any(high < low):
    raise ValueError(f'shape of extent {hi - lo} does not fit in a tile of {shape}')
  return points + rng.uniform(low, high)


def _polyline_footprint(points: np.ndarray, width: int, shape: tuple[int, int]) -> np.ndarray:
  """Bool [H, W] footprint of the polyline through `points` [N, 2], thickened to `width` px."""
  footprint = np.zeros(shape, dtype=bool)
  ipts = np.round(points).astype(int)
  for (r0, c0), (r1, c1) in zip(ipts[:-1], ipts[1:]):
    rr, cc = draw.line(r0, c0, r1, c1)
    footprint[rr, cc] = True
  # Thicken by OR-ing shifted copies: a width x width square brush centred on the line.
  rr, cc = np.nonzero(footprint)
  offsets = range(-((width - 1) // 2), width // 2 + 1)
  for dr in offsets:
    for dc in offsets:
      r = np.clip(rr + dr, 0, shape[0] - 1)
      c = np.clip(cc + dc, 0, shape[1] - 1)
      footprint[r, c] = True
  return footprint


def _walk(rng: np.random.Generator, length: float, step: float, turn_std: float,
          jitter_std: float) -> np.ndarray:
  """Random-walk points [N, 2] from (0, 0) of total `length` px in steps of `step` px.

  The heading drifts by `turn_std` rad per step (gentle curvature) and each step deviates from it by
  `jitter_std` rad (jaggedness) without accumulating, so the walk never curls up into a ball.
  """
  n = max(2, int(round(length / step)))
  heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, turn_std, n))
  angles = heading + rng.normal(0, jitter_std, n)
  deltas = step * np.stack([np.sin(angles), np.cos(angles)], axis=-1)
  return np.concatenate([np.zeros((1, 2)), np.cumsum(deltas, axis=0)], axis=0)


def _line_footprint(shape: tuple[int, int], rng: np.random.Generator, widths: tuple[int, int],
                    lengths: tuple[float, float], step: float, turn_std: float,
                    jitter_std: float) -> np.ndarray:
  """Bool [H, W] footprint of a random-walk line (see `_walk`) placed inside the tile.

  Its width in px is drawn from `widths` and its length from `lengths` (both inclusive ranges).
  """
  width = int(rng.integers(widths[0], widths[1] + 1))
  points = _walk(rng, rng.uniform(*lengths), step, turn_std, jitter_std)
  points = _place(points, shape, margin=width // 2 + 1, rng=rng)
  return _polyline_footprint(points, width, shape)


def _as_mask(footprint: np.ndarray) -> np.ndarray:
  return footprint.astype(np.uint8)


def scratch(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Thin bright or dark curved polyline, 2-4 px wide, 20-60 px long. Returns (tile, mask)."""
  _check_tile(tile)
  footprint = _line_footprint(tile.shape, rng, widths=(2, 4), lengths=(20, 60), step=6.0,
                              turn_std=0.15, jitter_std=0.0)
  level = _contrast_level(tile, footprint, rng, delta=rng.uniform(100, 130))
  return _fill(tile, footprint, level, noise_std=4.0, rng=rng), _as_mask(footprint)


def hole(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Dark filled ellipse (radii 5-14 px, random rotation) with a hard edge. Returns (tile, mask)."""
  _check_tile(tile)
  radii = rng.uniform(5, 14, size=2)
  margin = int(np.ceil(radii.max())) + 1
  center = _place(np.zeros((1, 2)), tile.shape, margin, rng)[0]
  rr, cc = draw.ellipse(center[0], center[1], radii[0], radii[1], shape=tile.shape,
                        rotation=rng.uniform(-np.pi, np.pi))
  footprint = np.zeros(tile.shape, dtype=bool)
  footprint[rr, cc] = True
  return _fill(tile, footprint, rng.uniform(0, 20), noise_std=3.0, rng=rng), _as_mask(footprint)


def stain(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Irregular blob (mean radius 10-25 px) blended 55-80 % towards a brighter or darker level.

  The texture stays visible under the stain; the blend weight is constant over the blob, so the
  footprint (the mask) has a hard, exactly known boundary. Returns (tile, mask) [H, W].
  """
  _check_tile(tile)
  radius = rng.uniform(10, 25)
  angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
  # Smooth radial wobble from three low harmonics with random phases.
  wobble = sum(rng.uniform(0, 0.12) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
               for k in (2, 3, 4))
  radii = radius * (1.0 + wobble)
  outline = np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=-1)
  outline = _place(outline, tile.shape, margin=1, rng=rng)
  rr, cc = draw.polygon(outline[:, 0], outline[:, 1], shape=tile.shape)
  footprint = np.zeros(tile.shape, dtype=bool)
  footprint[rr, cc] = True
  level = _contrast_level(tile, footprint, rng, delta=rng.uniform(100, 130))
  alpha = rng.uniform(0.55, 0.8)
  out = tile.copy()
  blended = (1 - alpha) * tile[footprint].astype(np.float64) + alpha * level
  out[footprint] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
  return out, _as_mask(footprint)


def crack(tile: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Dark jagged random-walk line, 1-3 px wide, 30-80 px long. Returns (tile, mask) [H, W]."""
  _check_tile(tile)
  footprint = _line_footprint(tile.shape, rng, widths=(1, 3), lengths=(30, 80), step=3.0,
                              turn_std=0.12, jitter_std=0.6)
  return _fill(tile, footprint, rng.uniform(0, 25), noise_std=4.0, rng=rng), _as_mask(footprint)


def patch(tile: np.ndarray, rng: np.random.Generator,
          source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Rectangle or ellipse (sides 16-32 px) filled with a block cut from `source`.

  The block's texture is kept but its mean is shifted 50-80 gray levels above or below the tile's
  local mean, so the patch is visible even where both textures have the same brightness.

  Args:
    tile: uint8 [H, W].
    rng: random generator.
    source: uint8 [Hs, Ws] with Hs, Ws >= 32, e.g. the test region of another texture photograph.
  Returns:
    (tile, mask), both uint8 [H, W].
  """
  _check_tile(tile)
  _check_tile(source)
  h, w = (int(v) for v in rng.integers(16, 33, size=2))
  if source.shape[0] < h or source.shape[1] < w:
    raise ValueError(f'source {source.shape} smaller than the patch ({h}, {w})')
  local = np.zeros((h, w), dtype=bool)
  if rng.random() < 0.5:
    local[:] = True
  else:
    rr, cc = draw.ellipse((h - 1) / 2, (w - 1) / 2, h / 2, w / 2, shape=(h, w))
    local[rr, cc] = True
  r0 = int(rng.integers(0, tile.shape[0] - h + 1))
  c0 = int(rng.integers(0, tile.shape[1] - w + 1))
  sr = int(rng.integers(0, source.shape[0] - h + 1))
  sc = int(rng.integers(0, source.shape[1] - w + 1))
  footprint = np.zeros(tile.shape, dtype=bool)
  footprint[r0:r0 + h, c0:c0 + w] = local
  # Same-mean textures (the skimage photos all average ~110-130) can hide a foreign patch, so the
  # block keeps its structure but is moved to a mean 50-80 gray levels off the tile's local mean.
  block = source[sr:sr + h, sc:sc + w][local].astype(np.float64)
  level = _contrast_level(tile, footprint, rng, delta=rng.uniform(50, 80))
  out = tile.copy()
  out[footprint] = np.clip(np.round(block - block.mean() + level), 0, 255).astype(np.uint8)
  return out, _as_mask(footprint)


_DRAWERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    'scratch': scratch, 'hole': hole, 'stain': stain, 'crack': crack, 'patch': patch}


def draw_defect(kind: str, tile: np.ndarray, rng: np.random.Generator,
                source: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Draws defect `kind` onto uint8 `tile` [H, W]; `source` [Hs, Ws] is needed for 'patch' only.

  Returns (new_tile, mask), both uint8 [H, W], mask in {0, 1}.
  """
  if kind not in _DRAWERS:
    raise ValueError(f'Unknown defect kind {kind!r}; valid kinds: {", ".join(DEFECT_KINDS)}')
  if kind == 'patch':
    if source is None:
      raise ValueError("defect 'patch' needs a source image")
    return patch(tile, rng, source)
  return _DRAWERS[kind](tile, rng)
