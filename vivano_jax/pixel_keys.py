"""The sorted pixel keys behind pixel AUROC and AU-PRO (metrics.py): numpy and scipy only.

Every pixel becomes one uint64 sort key, `(descending-order bits of its float32 score) << 32 |
(global id of its ground-truth region, 0 for defect-free pixels)`, and the keys are sorted once in
place; region sizes come from `np.bincount`; the sorted keys are scanned in fixed-size chunks,
carrying running sums between chunks (metrics.py's docstring says why).
"""

from typing import Any, Optional, Sequence, Union

import numpy as np
import scipy.ndimage

ArrayOrSeq = Union[np.ndarray, Sequence[np.ndarray]]

# Keys are scanned in chunks of this many pixels: bounds the temporaries to a few tens of MB.
_CHUNK = 1 << 21
_ID_BITS = 32
_ID_MASK = np.uint64((1 << _ID_BITS) - 1)
# 8-connectivity, as in the official evaluation.
_STRUCTURE = np.ones((3, 3), dtype=int)


def as_list(arrays: ArrayOrSeq, name: str) -> list[Any]:
  """[N, H, W] array or sequence of [H, W] arrays -> list of N entries (views, no copies)."""
  if isinstance(arrays, np.ndarray) and arrays.ndim != 3:
    raise ValueError(f'{name} must be [N, H, W] or a sequence of [H, W] arrays; '
                     f'got an array of shape {arrays.shape}.')
  return list(arrays)


def _desc_bits(scores: np.ndarray) -> np.ndarray:
  """[...] float32 -> [...] uint32 whose ascending order is the scores' descending order.

  Equal scores (including 0.0 and -0.0) get equal bits, so ties are detected on the bits.
  """
  bits = (scores + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0.
  negative = (bits >> np.uint32(31)).astype(bool)
  # Positive floats order like their bits, negative ones reversed; flip so larger comes first.
  return np.where(negative, bits, ~bits & np.uint32(0x7FFFFFFF))


def _check_shapes(maps_l: list[Any], masks_l: list[Any]) -> list[tuple[int, int]]:
  """The [H, W] of every (map, mask) pair, which must agree."""
  if len(maps_l) != len(masks_l):
    raise ValueError(f'Got {len(maps_l)} maps but {len(masks_l)} masks.')
  if not maps_l:
    raise ValueError('No maps given.')
  shapes = []
  for i, (a, m) in enumerate(zip(maps_l, masks_l)):
    a_shape, m_shape = np.shape(a), np.shape(m)
    if len(a_shape) != 2 or a_shape != m_shape:
      raise ValueError(f'Image {i}: the map has shape {a_shape} and the mask has shape {m_shape}; '
                       f'both must be the same [H, W].')
    shapes.append(a_shape)
  return shapes


def sorted_keys(maps: ArrayOrSeq, masks: ArrayOrSeq,
                 regions: bool) -> tuple[np.ndarray, np.ndarray, int]:
  """Builds and sorts one uint64 key per pixel.

  Args:
    maps: anomaly maps, see `pro_curve`.
    masks: ground-truth masks, see `pro_curve`.
    regions: if True the low 32 bits hold the global 1-based id of the pixel's 8-connected
      ground-truth region; if False just 1 for defective pixels. 0 for defect-free pixels.

  Returns:
    keys: [P] uint64, sorted ascending = scores descending, P the total number of pixels.
    inv_sizes: [R + 1] float64, 1 / size of region r at index r, 0 at index 0 (R = 1 if not
      `regions`).
    n_ok: number of defect-free pixels.
  """
  maps_l, masks_l = as_list(maps, 'maps'), as_list(masks, 'masks')
  total = sum(h * w for h, w in _check_shapes(maps_l, masks_l))
  keys = np.empty(total, dtype=np.uint64)
  sizes = [np.zeros(1, dtype=np.int64)]  # Index 0: defect-free pixels (weight 0).
  n_regions, n_ok, start = 0, 0, 0
  for i, (a, m) in enumerate(zip(maps_l, masks_l)):
    a = np.asarray(a, dtype=np.float32)
    if np.isnan(a).any():
      raise ValueError(f'Image {i}: the map contains NaN.')
    defect = np.asarray(m) > 0
    if regions:
      ids, n = scipy.ndimage.label(defect, structure=_STRUCTURE)
      counts = np.bincount(ids.reshape(-1), minlength=n + 1)
      sizes.append(counts[1:])
      n_ok += int(counts[0])
      ids = ids.astype(np.uint64).reshape(-1)
      ids[ids > 0] += np.uint64(n_regions)  # Local -> global region ids.
      n_regions += n
      if n_regions >= 1 << _ID_BITS:
        raise ValueError(f'Too many ground-truth regions ({n_regions}).')
    else:
      ids = defect.reshape(-1).astype(np.uint64)
      n_ok += int(ids.size - np.count_nonzero(ids))
    out = keys[start:start + a.size]
    out[:] = _desc_bits(a).reshape(-1)
    out <<= np.uint64(_ID_BITS)
    out |= ids
    start += a.size
  keys.sort()
  if regions:
    inv_sizes = 1.0 / np.maximum(np.concatenate(sizes), 1)
    inv_sizes[0] = 0.0
  else:
    inv_sizes = np.array([0.0, 1.0])
  return keys, inv_sizes, n_ok


def _chunk_bounds(n: int):
  for s in range(0, n, _CHUNK):
    yield s, min(s + _CHUNK, n)


def _group_ends(keys: np.ndarray, s: int, e: int, end: int) -> np.ndarray:
  """[e - s] bool: True where keys[j] is the last of its tie group among keys[:end]."""
  scores = keys[s:min(e + 1, end)] >> np.uint64(_ID_BITS)
  last = np.empty(e - s, dtype=bool)
  np.not_equal(scores[:e - s - 1], scores[1:e - s], out=last[:-1])
  last[-1] = True if e >= end else scores[e - s - 1] != scores[e - s]
  return last


def auroc_from_keys(keys: np.ndarray) -> float:
  """AUROC of sorted keys (low bits != 0 = positive), ties counting one half.

  Sums, over tie groups g in descending score order, neg_g * (2 * pos_through_g - pos_g), which
  is twice the number of (positive, negative) pairs ranked correctly plus the tied pairs. All in
  int64, so exact; this is the trapezoidal area under the ROC curve that sklearn computes.
  """
  n = keys.size
  # pos_run: positives up to the end of the previous chunk; *_carry: up to its last group end.
  twice_pairs, pos_run, pos_carry, neg_carry = 0, 0, 0, 0
  for s, e in _chunk_bounds(n):
    last = _group_ends(keys, s, e, n)
    pos = np.cumsum((keys[s:e] & _ID_MASK) != 0, dtype=np.int64)
    pos += pos_run
    pos_run = int(pos[-1])
    ends = np.flatnonzero(last)
    pos_end = pos[ends]
    neg_end = ends + (s + 1) - pos_end  # Pixels seen so far minus positives.
    pos_g = np.diff(pos_end, prepend=pos_carry)
    neg_g = np.diff(neg_end, prepend=neg_carry)
    twice_pairs += int(np.dot(neg_g, 2 * pos_end - pos_g))
    if ends.size:
      pos_carry, neg_carry = int(pos_end[-1]), int(neg_end[-1])
  n_pos = pos_run
  n_neg = n - n_pos
  if n_pos == 0 or n_neg == 0:
    raise ValueError('pixel_auroc needs both defective and defect-free pixels; the masks contain '
                     f'{n_pos} defective and {n_neg} defect-free pixels.')
  return twice_pairs / (2.0 * n_pos * n_neg)


def _check_pro_inputs(inv_sizes: np.ndarray, n_ok: int) -> None:
  if inv_sizes.size <= 1:
    raise ValueError('The masks contain no defect region; the PRO curve is undefined.')
  if n_ok == 0:
    raise ValueError('The masks contain no defect-free pixel; the PRO curve is undefined.')


def _stop_index(keys: np.ndarray, n_ok: int, max_fpr: float) -> int:
  """End (exclusive) of the sorted keys needed for the PRO curve up to FPR `max_fpr`.

  That is up to and including the tie group of the first point with FPR > max_fpr, so that
  `trapezoid` can interpolate at max_fpr exactly as on the full curve.
  """
  # Smallest count of false positives c with c / n_ok > max_fpr (same float test as the FPRs).
  c = int(np.floor(max_fpr * n_ok))
  while c > 0 and (c - 1) / n_ok > max_fpr:
    c -= 1
  while c / n_ok <= max_fpr:
    c += 1
  if c > n_ok or c <= 0:
    return keys.size
  seen = 0
  for s, e in _chunk_bounds(keys.size):
    ok = np.flatnonzero((keys[s:e] & _ID_MASK) == 0)
    if seen + ok.size >= c:
      score = keys[s + ok[c - seen - 1]] >> np.uint64(_ID_BITS)
      if score == np.uint64(0xFFFFFFFF):
        return keys.size
      # The tie group ends before the first key with a larger score part.
      nxt = (score + np.uint64(1)) << np.uint64(_ID_BITS)
      return int(np.searchsorted(keys, nxt, side='left'))
    seen += ok.size
  return keys.size


def pro_from_keys(keys: np.ndarray, inv_sizes: np.ndarray, n_ok: int,
                   max_fpr: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
  """(fprs, pros) from sorted keys; with `max_fpr`, only as far as `trapezoid` needs."""
  _check_pro_inputs(inv_sizes, n_ok)
  n_regions = inv_sizes.size - 1
  end = keys.size if max_fpr is None else _stop_index(keys, n_ok, max_fpr)
  # First pass: count the tie groups to allocate the curve exactly once.
  n_points = sum(int(np.count_nonzero(_group_ends(keys, s, e, end)))
                 for s, e in _chunk_bounds(end))
  fprs = np.empty(n_points + 2)
  pros = np.empty(n_points + 2)
  fprs[0] = pros[0] = 0.0
  fprs[-1] = pros[-1] = 1.0
  o, ok_carry, pro_carry = 1, 0, 0.0
  for s, e in _chunk_bounds(end):
    last = _group_ends(keys, s, e, end)
    ids = (keys[s:e] & _ID_MASK).astype(np.intp)
    ok = np.cumsum(ids == 0, dtype=np.int64)
    ok += ok_carry
    # Sequential running sum across chunks (adding the carry first), as one np.cumsum would do.
    pro = inv_sizes[ids]
    pro[0] += pro_carry
    np.cumsum(pro, out=pro)
    ok_carry, pro_carry = int(ok[-1]), float(pro[-1])
    k = int(np.count_nonzero(last))
    np.divide(ok[last], n_ok, out=fprs[o:o + k])
    np.divide(pro[last], n_regions, out=pros[o:o + k])
    o += k
  # Rounding in the running sums could push the last points above 1.
  np.minimum(fprs, 1.0, out=fprs)
  np.minimum(pros, 1.0, out=pros)
  return fprs, pros
