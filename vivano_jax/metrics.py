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

from typing import Optional, Sequence, Union
import warnings

import numpy as np
import sklearn.metrics

from vivano_jax import pixel_keys

ArrayOrSeq = Union[np.ndarray, Sequence[np.ndarray]]

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
  keys, _, _ = pixel_keys.sorted_keys(maps, masks, regions=False)
  return pixel_keys.auroc_from_keys(keys)


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
  keys, inv_sizes, n_ok = pixel_keys.sorted_keys(maps, masks, regions=True)
  return pixel_keys.pro_from_keys(keys, inv_sizes, n_ok)


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
  keys, inv_sizes, n_ok = pixel_keys.sorted_keys(maps, masks, regions=True)
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
  maps_l, masks_l = pixel_keys.as_list(maps, 'maps'), pixel_keys.as_list(masks, 'masks')
  if len(maps_l) != n or len(masks_l) != n:
    raise ValueError(
        f'{n} labels but {len(maps_l)} maps and {len(masks_l)} masks; they must all match.')
  sel = _has_mask(has_mask, n)
  maps_l = [m for m, s in zip(maps_l, sel) if s]
  masks_l = [m for m, s in zip(masks_l, sel) if s]
  if not any(np.any(np.asarray(m) > 0) for m in masks_l):
    return result
  keys, inv_sizes, n_ok = pixel_keys.sorted_keys(maps_l, masks_l, regions=True)
  if n_ok == 0:
    return result
  result['pixel_auroc'] = pixel_keys.auroc_from_keys(keys)
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
  maps_l = None if maps is None else pixel_keys.as_list(maps, 'maps')
  masks_l = None if masks is None else pixel_keys.as_list(masks, 'masks')
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


def _has_mask(has_mask: Optional[np.ndarray], n: int) -> np.ndarray:
  if has_mask is None:
    return np.ones(n, dtype=bool)
  has_mask = np.asarray(has_mask, dtype=bool).reshape(-1)
  if has_mask.size != n:
    raise ValueError(f'has_mask has {has_mask.size} entries for {n} images.')
  return has_mask


def _au_pro_from_keys(keys: np.ndarray, inv_sizes: np.ndarray, n_ok: int,
                      fpr_limit: float) -> float:
  if not 0.0 < fpr_limit <= 1.0:
    raise ValueError(f'fpr_limit must be in (0, 1]; got {fpr_limit}.')
  fprs, pros = pixel_keys.pro_from_keys(keys, inv_sizes, n_ok, max_fpr=fpr_limit)
  return trapezoid(fprs, pros, x_max=fpr_limit) / fpr_limit
