"""Anomaly detection and localisation metrics: image AUROC, pixel AUROC and AU-PRO.

Only numpy, scipy and scikit-learn are imported so that an offline evaluator can use this module
without JAX or TensorFlow.

`pro_curve` reproduces the official MVTec AD evaluation (`compute_pro` in MVTec's
`generic_util.py` / `evaluate_experiment.py`) and `trapezoid` its `trapezoid`, but vectorised and
memory-lean so that hundreds of 1024 x 1024 maps are evaluated in seconds:

* every pixel becomes one uint64 sort key, `(descending-order bits of its float32 score) << 32 |
  (global id of its ground-truth region, 0 for defect-free pixels)`, and the keys are sorted once
  in place: no argsort index array and no per-pixel float64 copies;
* region sizes come from `np.bincount`, with no Python loop over regions;
* the sorted keys are scanned in fixed-size chunks, carrying running sums between chunks.

Pixel AUROC is computed on the same sorted keys with exact integer (Mann-Whitney) arithmetic; it
equals `sklearn.metrics.roc_auc_score` on the concatenated pixels (ties count one half), which
would need an argsort and several float64 copies of every pixel (minutes and >10 GB at 2e8 pixels).

Pixel scores are compared at float32 precision (the precision of the model's maps): float64 maps
are rounded to float32 first, so scores that differ only beyond float32 precision tie.
"""

from typing import Any, Optional, Sequence, Union
import warnings

import numpy as np
import scipy.ndimage
import sklearn.metrics

ArrayOrSeq = Union[np.ndarray, Sequence[np.ndarray]]

# Keys are scanned in chunks of this many pixels: bounds the temporaries to a few tens of MB.
_CHUNK = 1 << 21
_ID_BITS = 32
_ID_MASK = np.uint64((1 << _ID_BITS) - 1)
# 8-connectivity, as in the official evaluation.
_STRUCTURE = np.ones((3, 3), dtype=int)


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Image-level AUROC.

  Args:
    scores: [N] anomaly score per image, higher = more anomalous.
    labels: [N] ground truth, 1 (or True) = anomalous, 0 = normal.

  Returns:
    The area under the ROC curve (`sklearn.metrics.roc_auc_score`).

  Raises:
    ValueError: if the labels contain a single class or the lengths differ.
  """
  scores = np.asarray(scores).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f'scores has {scores.size} entries but labels has {labels.size}.')
  classes = np.unique(labels)
  if classes.size != 2:
    raise ValueError(
        f'image_auroc needs both normal (0) and anomalous (1) images; labels contain only '
        f'{classes.tolist()}.')
  return float(sklearn.metrics.roc_auc_score(labels, scores))


def pixel_auroc(maps: ArrayOrSeq, masks: ArrayOrSeq) -> float:
  """Pixel-level AUROC over all pixels of all images.

  Args:
    maps: [N, H, W] array, or a sequence of N [H_i, W_i] arrays, of anomaly scores.
    masks: same layout and shapes as `maps`; bool or 0/1, any value > 0 is defective.

  Returns:
    The AUROC of the concatenated pixels, equal to `sklearn.metrics.roc_auc_score` on them.

  Raises:
    ValueError: on shape mismatches, NaN scores, or if all pixels are of one class.
  """
  keys, _, _ = _sorted_keys(maps, masks, regions=False)
  return _auroc_from_keys(keys)


def pro_curve(maps: ArrayOrSeq, masks: ArrayOrSeq) -> tuple[np.ndarray, np.ndarray]:
  """The per-region-overlap (PRO) curve of the official MVTec AD evaluation.

  Ground-truth regions are the 8-connected components of each mask. Lowering the threshold through
  every distinct score (globally, descending), the curve records the false positive rate over all
  defect-free pixels of all images and the PRO, the mean over all regions of all images of the
  fraction of the region above the threshold. Images without defects only contribute to the FPR.

  Args:
    maps: [N, H, W] array, or a sequence of N [H_i, W_i] arrays, of anomaly scores.
    masks: same layout and shapes as `maps`; bool or 0/1, any value > 0 is defective.

  Returns:
    (fprs, pros): [K + 2] float64 arrays, K the number of distinct scores, starting at (0, 0),
    ending at (1, 1), non-decreasing and clipped to <= 1.

  Raises:
    ValueError: on shape mismatches, NaN scores, no defect region or no defect-free pixel.
  """
  keys, inv_sizes, n_ok = _sorted_keys(maps, masks, regions=True)
  return _pro_from_keys(keys, inv_sizes, n_ok)


def trapezoid(x: np.ndarray, y: np.ndarray, x_max: Optional[float] = None) -> float:
  """Area under a curve with the trapezoidal rule, as the official MVTec AD evaluation.

  Non-finite points are dropped (with a warning). If `x_max` is given, the area is taken over
  x <= x_max; if `x_max` is not one of the x values, y is linearly interpolated at x_max between
  the bracketing points and the area of that last partial segment is added.

  Args:
    x: [K] sorted (non-decreasing) x coordinates.
    y: [K] y coordinates.
    x_max: upper integration limit, or None for the whole curve.

  Returns:
    The area.

  Raises:
    ValueError: if x_max is not within (min(x), max(x)) and not one of the x values.
  """
  x = np.asarray(x, dtype=np.float64).reshape(-1)
  y = np.asarray(y, dtype=np.float64).reshape(-1)
  finite = np.isfinite(x) & np.isfinite(y)
  if not finite.all():
    warnings.warn('Not all x and y values passed to trapezoid are finite; using the finite ones.')
    x, y = x[finite], y[finite]
  correction = 0.0
  if x_max is not None:
    if not np.any(x == x_max):
      ins = int(np.searchsorted(x, x_max, side='right'))  # == bisect.bisect(x, x_max).
      if not 0 < ins < x.size:
        raise ValueError(f'x_max={x_max} is outside the range of x [{x.min()}, {x.max()}].')
      x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
      y_interp = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
      correction = 0.5 * (y_interp + y0) * (x_max - x0)
    keep = x <= x_max
    x, y = x[keep], y[keep]
  return float(0.5 * np.dot(y[1:] + y[:-1], np.diff(x)) + correction)


def au_pro(maps: ArrayOrSeq, masks: ArrayOrSeq, fpr_limit: float = 0.3) -> float:
  """Normalised area under the PRO curve up to an FPR limit, as the official MVTec AD evaluation.

  Args:
    maps: [N, H, W] array, or a sequence of N [H_i, W_i] arrays, of anomaly scores.
    masks: same layout and shapes as `maps`; bool or 0/1, any value > 0 is defective.
    fpr_limit: integration limit in (0, 1].

  Returns:
    `trapezoid(fprs, pros, x_max=fpr_limit) / fpr_limit`, in [0, 1].
  """
  keys, inv_sizes, n_ok = _sorted_keys(maps, masks, regions=True)
  return _au_pro_from_keys(keys, inv_sizes, n_ok, fpr_limit)


def compute_all(image_scores: np.ndarray,
                labels: np.ndarray,
                maps: Optional[ArrayOrSeq] = None,
                masks: Optional[ArrayOrSeq] = None,
                has_mask: Optional[np.ndarray] = None,
                fpr_limit: float = 0.3) -> dict[str, Optional[float]]:
  """Image AUROC, pixel AUROC and AU-PRO in one go (the pixels are sorted once for both).

  Args:
    image_scores: [N] anomaly score per image.
    labels: [N] 1 = anomalous, 0 = normal.
    maps: None, or [N, H, W] / sequence of N [H_i, W_i] anomaly maps.
    masks: None, or masks in the layout of `maps`; entries of images without a mask may be None.
    has_mask: [N] bool, whether image i has a ground-truth mask; pixel metrics use only those
      images. Default: all True.
    fpr_limit: AU-PRO integration limit.

  Returns:
    {'image_auroc': float, 'pixel_auroc': float or None, 'au_pro': float or None}. The pixel
    entries are None (unavailable) when maps or masks are None, or when no selected image has both
    defective and defect-free pixels.

  Raises:
    ValueError: if the labels contain a single class, or on inconsistent lengths or shapes.
  """
  result: dict[str, Optional[float]] = {
      'image_auroc': image_auroc(image_scores, labels), 'pixel_auroc': None, 'au_pro': None}
  if maps is None or masks is None:
    return result
  n = len(np.asarray(labels).reshape(-1))
  maps_l, masks_l = _as_list(maps, 'maps'), _as_list(masks, 'masks')
  if len(maps_l) != n or len(masks_l) != n:
    raise ValueError(
        f'{n} labels but {len(maps_l)} maps and {len(masks_l)} masks; they must all match.')
  sel = _has_mask(has_mask, n)
  maps_l = [m for m, s in zip(maps_l, sel) if s]
  masks_l = [m for m, s in zip(masks_l, sel) if s]
  if not any(np.any(np.asarray(m) > 0) for m in masks_l):
    return result
  keys, inv_sizes, n_ok = _sorted_keys(maps_l, masks_l, regions=True)
  if n_ok == 0:
    return result
  result['pixel_auroc'] = _auroc_from_keys(keys)
  result['au_pro'] = _au_pro_from_keys(keys, inv_sizes, n_ok, fpr_limit)
  return result


def per_defect_type(image_scores: np.ndarray,
                    labels: np.ndarray,
                    defect_types: Sequence[str],
                    maps: Optional[ArrayOrSeq] = None,
                    masks: Optional[ArrayOrSeq] = None,
                    has_mask: Optional[np.ndarray] = None,
                    fpr_limit: float = 0.3) -> dict[str, dict[str, Optional[float]]]:
  """`compute_all` per defect type, each on all 'good' images plus the images of that type.

  Args:
    image_scores: [N] anomaly score per image.
    labels: [N] 1 = anomalous, 0 = normal.
    defect_types: [N] defect type name per image; normal images are 'good'.
    maps, masks, has_mask, fpr_limit: as in `compute_all`.

  Returns:
    {defect type: metrics dict (plus 'num_images')} for every type other than 'good' (in order of
    first appearance),
    plus 'overall': the metrics on all images.

  Raises:
    ValueError: as `compute_all`, e.g. if there is no 'good' image (one class per subset).
  """
  image_scores = np.asarray(image_scores).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  types = np.asarray([str(t) for t in defect_types])
  n = labels.size
  if image_scores.size != n or types.size != n:
    raise ValueError(
        f'{image_scores.size} scores, {n} labels and {types.size} defect types; they must match.')
  maps_l = None if maps is None else _as_list(maps, 'maps')
  masks_l = None if masks is None else _as_list(masks, 'masks')
  sel = _has_mask(has_mask, n)

  def subset(idx: np.ndarray) -> dict[str, Optional[float]]:
    def pick(seq):
      return None if seq is None else [seq[i] for i in idx]
    result = compute_all(image_scores[idx], labels[idx], pick(maps_l), pick(masks_l), sel[idx],
                         fpr_limit)
    result['num_images'] = int(idx.size)
    return result

  good = types == 'good'
  out = {}
  for t in dict.fromkeys(types.tolist()):
    if t != 'good':
      out[t] = subset(np.flatnonzero(good | (types == t)))
  out['overall'] = subset(np.arange(n))
  return out


# ------------------------------------------------------------------------------------------------
# Implementation.


def _as_list(arrays: ArrayOrSeq, name: str) -> list[Any]:
  """[N, H, W] array or sequence of [H, W] arrays -> list of N entries (views, no copies)."""
  if isinstance(arrays, np.ndarray) and arrays.ndim != 3:
    raise ValueError(f'{name} must be [N, H, W] or a sequence of [H, W] arrays; '
                     f'got an array of shape {arrays.shape}.')
  return list(arrays)


def _has_mask(has_mask: Optional[np.ndarray], n: int) -> np.ndarray:
  if has_mask is None:
    return np.ones(n, dtype=bool)
  has_mask = np.asarray(has_mask, dtype=bool).reshape(-1)
  if has_mask.size != n:
    raise ValueError(f'has_mask has {has_mask.size} entries for {n} images.')
  return has_mask


def _desc_bits(scores: np.ndarray) -> np.ndarray:
  """[...] float32 -> [...] uint32 whose ascending order is the scores' descending order.

  Equal scores (including 0.0 and -0.0) get equal bits, so ties are detected on the bits.
  """
  bits = (scores + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0.
  negative = (bits >> np.uint32(31)).astype(bool)
  # Positive floats order like their bits, negative ones reversed; flip so larger comes first.
  return np.where(negative, bits, ~bits & np.uint32(0x7FFFFFFF))


def _sorted_keys(maps: ArrayOrSeq, masks: ArrayOrSeq,
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
  maps_l, masks_l = _as_list(maps, 'maps'), _as_list(masks, 'masks')
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
  total = sum(h * w for h, w in shapes)
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


def _auroc_from_keys(keys: np.ndarray) -> float:
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


def _pro_from_keys(keys: np.ndarray, inv_sizes: np.ndarray, n_ok: int,
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


def _au_pro_from_keys(keys: np.ndarray, inv_sizes: np.ndarray, n_ok: int,
                      fpr_limit: float) -> float:
  if not 0.0 < fpr_limit <= 1.0:
    raise ValueError(f'fpr_limit must be in (0, 1]; got {fpr_limit}.')
  fprs, pros = _pro_from_keys(keys, inv_sizes, n_ok, max_fpr=fpr_limit)
  return trapezoid(fprs, pros, x_max=fpr_limit) / fpr_limit
