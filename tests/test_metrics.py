"""Tests for vivano_jax.metrics against hand-worked cases and independent references."""

import bisect
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage
import sklearn.metrics

from vivano_jax import metrics
from vivano_jax import pixel_keys

EIGHT = np.ones((3, 3), dtype=int)
FOUR = scipy.ndimage.generate_binary_structure(2, 1)


# ------------------------------------------------------------------------------------------------
# Independent references.


def official_compute_pro(anomaly_maps, ground_truth_maps, structure=EIGHT):
  """The official MVTec AD `compute_pro`, written as it is there (a loop over regions).

  The only change: per-image arrays are flattened and concatenated instead of stacked, which is
  the same once flattened and also allows images of different sizes.
  """
  num_ok_pixels = 0
  num_gt_regions = 0
  fp_changes, pro_changes = [], []
  for gt_map in ground_truth_maps:
    labeled, n_components = scipy.ndimage.label(np.asarray(gt_map) > 0, structure)
    num_gt_regions += n_components
    ok_mask = labeled == 0
    num_ok_pixels += np.sum(ok_mask)
    fp_change = np.zeros(labeled.shape, dtype=np.uint32)
    fp_change[ok_mask] = 1
    pro_change = np.zeros(labeled.shape, dtype=np.float64)
    for k in range(n_components):
      region_mask = labeled == (k + 1)
      pro_change[region_mask] = 1. / np.sum(region_mask)
    fp_changes.append(fp_change.ravel())
    pro_changes.append(pro_change.ravel())
  scores = np.concatenate([np.asarray(a).ravel() for a in anomaly_maps])
  fp_changes = np.concatenate(fp_changes)
  pro_changes = np.concatenate(pro_changes)
  sort_idxs = np.argsort(scores)[::-1]
  scores = scores[sort_idxs]
  fprs = np.cumsum(fp_changes[sort_idxs]) / num_ok_pixels
  pros = np.cumsum(pro_changes[sort_idxs]) / num_gt_regions
  keep_mask = np.append(np.diff(scores) != 0, np.True_)
  fprs = np.clip(fprs[keep_mask], a_min=None, a_max=1.)
  pros = np.clip(pros[keep_mask], a_min=None, a_max=1.)
  zero, one = np.array([0.]), np.array([1.])
  return np.concatenate((zero, fprs, one)), np.concatenate((zero, pros, one))


def official_trapezoid(x, y, x_max=None):
  """The official MVTec AD `trapezoid`."""
  x = np.array(x)
  y = np.array(y)
  finite_mask = np.logical_and(np.isfinite(x), np.isfinite(y))
  x = x[finite_mask]
  y = y[finite_mask]
  correction = 0.
  if x_max is not None:
    if x_max not in x:
      ins = bisect.bisect(x, x_max)
      assert 0 < ins < len(x)
      y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) /
                               (x[ins] - x[ins - 1]))
      correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x = x[mask]
    y = y[mask]
  return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def brute_force_pro_curve(maps, masks):
  """One (FPR, PRO) point per distinct threshold t, straight from the definitions."""
  scores = np.concatenate([np.asarray(a, np.float32).ravel() for a in maps])
  normal = np.concatenate([(np.asarray(m) <= 0).ravel() for m in masks])
  regions = []  # Flat pixel indices of every region of every image.
  offset = 0
  for m in masks:
    labeled, n = scipy.ndimage.label(np.asarray(m) > 0, EIGHT)
    for k in range(1, n + 1):
      regions.append(np.flatnonzero(labeled.ravel() == k) + offset)
    offset += labeled.size
  fprs, pros = [0.0], [0.0]
  for t in np.unique(scores)[::-1]:
    fprs.append(np.sum(scores[normal] >= t) / np.sum(normal))
    pros.append(np.mean([np.mean(scores[r] >= t) for r in regions]))
  return np.array(fprs + [1.0]), np.array(pros + [1.0])


def random_blob_masks(rng, shapes, max_blobs=4):
  """Masks with random rectangles and diagonal-only touching pixel pairs; some images are clean."""
  masks = []
  for h, w in shapes:
    m = np.zeros((h, w), dtype=bool)
    for _ in range(rng.integers(0, max_blobs + 1)):
      y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
      if rng.random() < 0.3:  # Two pixels joined only diagonally: one region under 8-connectivity.
        m[y, x] = m[y + 1, x + 1] = True
      else:
        m[y:y + rng.integers(1, max(2, h // 3)), x:x + rng.integers(1, max(2, w // 3))] = True
    masks.append(m)
  return masks


def random_maps(rng, masks, levels=None):
  """Scores higher on defects on average; `levels` quantises them to force many ties."""
  maps = []
  for m in masks:
    a = rng.random(m.shape) + 0.7 * m
    if levels is not None:
      a = np.round(a * levels) / levels
    maps.append(a.astype(np.float32))
  return maps


@pytest.fixture(params=[3, 1 << 21], ids=['tiny_chunks', 'default_chunks'])
def chunk(request, monkeypatch):
  # Tiny chunks make tie groups and running sums straddle chunk boundaries.
  monkeypatch.setattr(pixel_keys, '_CHUNK', request.param)
  return request.param


# ------------------------------------------------------------------------------------------------
# Hand-worked cases.


def test_pro_curve_weights_pixels_by_region_size(chunk):
  # 1 x 5 image; regions A = pixels {0, 1} (size 2), B = {3} (size 1); defect-free: {2, 4}.
  # Descending: 5 (A), 4 (ok), 3 (B), 2 (ok), 1 (A). Each A pixel adds (1/2)/2 regions = 0.25 to
  # the PRO, B adds 0.5; each ok pixel adds 1/2 to the FPR:
  #   (0, .25), (.5, .25), (.5, .75), (1, .75), (1, 1), then the (0, 0) prefix and (1, 1) suffix.
  # Area to FPR 1: .5 * .25 + .5 * .75 = .5. Area to .3: .3 * .25 (flat) = .075 -> / .3 = .25.
  # A per-pixel TPR would give 1/3 after the first pixel instead of .25.
  maps = [np.array([[5, 1, 4, 3, 2]], np.float32)]
  masks = [np.array([[1, 1, 0, 1, 0]])]
  fprs, pros = metrics.pro_curve(maps, masks)
  np.testing.assert_allclose(fprs, [0, 0, .5, .5, 1, 1, 1])
  np.testing.assert_allclose(pros, [0, .25, .25, .75, .75, 1, 1])
  assert metrics.au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)
  assert metrics.au_pro(maps, masks, fpr_limit=0.3) == pytest.approx(0.25)


@pytest.mark.parametrize('zero', [0.0, -0.0])
def test_pro_curve_merges_equal_scores(chunk, zero):
  # 1 x 4 image, scores [2, 2, z, 0] with z = +-0 (equal to 0), mask [1, 0, 1, 0]: two regions
  # of one pixel (pixels 0 and 2 do not touch) and two ok pixels. At score 2 one region and one ok
  # pixel enter together -> a single point (.5, .5); at 0 the rest -> (1, 1). The curve is the
  # diagonal: AU-PRO to .3 = (.3 * .3 / 2) / .3 = .15. Unmerged, the order inside the tie would
  # give a step: .0 (ok pixel first) or .5 (defect first).
  maps = [np.array([[2, 2, zero, 0]], np.float32)]
  masks = [np.array([[1, 0, 1, 0]], bool)]
  fprs, pros = metrics.pro_curve(maps, masks)
  np.testing.assert_allclose(fprs, [0, .5, 1, 1])
  np.testing.assert_allclose(pros, [0, .5, 1, 1])
  assert metrics.au_pro(maps, masks, fpr_limit=0.3) == pytest.approx(0.15)
  assert metrics.au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)


def test_pro_curve_image_without_defect_only_adds_to_fpr(chunk):
  # Image 1: scores [3, 2, 1], defect at the middle pixel. Image 2: [2.5, 1.5, .5], no defect.
  # Five ok pixels in all. Descending: 3 ok, 2.5 ok, 2 defect, 1.5 ok, 1 ok, .5 ok:
  #   fprs .2 .4 .4 .6 .8 1, pros 0 0 1 1 1 1.
  # Area to FPR .5: PRO is 0 up to .4 and 1 from .4, so .1 -> AU-PRO(.5) = .1 / .5 = .2.
  maps = np.array([[[3, 2, 1]], [[2.5, 1.5, .5]]], np.float32)
  masks = np.array([[[0, 1, 0]], [[0, 0, 0]]])
  fprs, pros = metrics.pro_curve(maps, masks)
  np.testing.assert_allclose(fprs, [0, .2, .4, .4, .6, .8, 1, 1])
  np.testing.assert_allclose(pros, [0, 0, 0, 1, 1, 1, 1, 1])
  assert metrics.au_pro(maps, masks, fpr_limit=0.5) == pytest.approx(0.2)


def test_pro_curve_regions_are_eight_connected(chunk):
  # Mask        Scores
  #   1 0 0      9 7 6
  #   0 1 1      5 1 8
  #   0 0 0      4 3 2
  # 8-connected: one region of 3 pixels (the corner touches diagonally), 1/3 per pixel. Descending
  # 9 (d), 8 (d), then the six ok pixels 7..2, then 1 (d): PRO 1/3, 2/3, flat 2/3 while the FPR
  # goes 1/6 .. 1, then 1. AU-PRO(.3) = 2/3. With 4-connectivity there would be two regions
  # ({9} weight 1/2 and {1, 8} weights 1/4): PRO .5 then .75, AU-PRO(.3) = .75.
  maps = [np.array([[9, 7, 6], [5, 1, 8], [4, 3, 2]], np.float32)]
  masks = [np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])]
  fprs, pros = metrics.pro_curve(maps, masks)
  np.testing.assert_allclose(fprs, [0, 0, 0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1])
  np.testing.assert_allclose(pros, [0, 1 / 3] + [2 / 3] * 7 + [1, 1])
  assert metrics.au_pro(maps, masks, fpr_limit=0.3) == pytest.approx(2 / 3)


def test_trapezoid_hand_cases():
  x, y = [0, .2, .6, 1], [0, .4, .8, 1]
  # Whole curve: .2 * .2 + .4 * .6 + .4 * .9 = .04 + .24 + .36.
  assert metrics.trapezoid(x, y) == pytest.approx(.64)
  # x_max = .6 is a point: .04 + .24.
  assert metrics.trapezoid(x, y, x_max=.6) == pytest.approx(.28)
  # x_max = .4 lies between .2 and .6: y(.4) = .4 + .4 * (.2 / .4) = .6, so the cut segment adds
  # .2 * (.4 + .6) / 2 = .1 to the .04 before it.
  assert metrics.trapezoid(x, y, x_max=.4) == pytest.approx(.14)
  # Non-finite points are dropped (with a warning), here the middle one: .6 * .4 + .4 * .9.
  with pytest.warns(UserWarning, match='finite'):
    assert metrics.trapezoid([0, .2, .6, 1], [0, np.nan, .8, 1]) == pytest.approx(.6)
  with pytest.raises(ValueError, match='outside'):
    metrics.trapezoid(x, y, x_max=2.0)


# ------------------------------------------------------------------------------------------------
# Against the references on random data.


@pytest.mark.parametrize('levels', [None, 20], ids=['continuous', 'tied'])
def test_pro_curve_matches_official_loop(chunk, levels):
  rng = np.random.default_rng(0 if levels is None else 1)
  shapes = [(24, 32), (17, 9), (32, 32), (5, 40), (24, 32), (12, 12)]
  masks = random_blob_masks(rng, shapes)
  maps = random_maps(rng, masks, levels)
  fprs, pros = metrics.pro_curve(maps, masks)
  ref_fprs, ref_pros = official_compute_pro(maps, masks)
  assert fprs.shape == ref_fprs.shape
  np.testing.assert_allclose(fprs, ref_fprs, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(pros, ref_pros, rtol=1e-12, atol=1e-12)
  for limit in [0.01, 0.05, 0.3, 0.5, 1.0]:
    ref = official_trapezoid(ref_fprs, ref_pros, x_max=limit) / limit
    assert metrics.au_pro(maps, masks, fpr_limit=limit) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_pro_curve_signed_and_infinite_scores_match_official(chunk):
  # Negative floats order opposite to their bit patterns; -0.0 must tie with 0.0.
  rng = np.random.default_rng(7)
  masks = random_blob_masks(rng, [(15, 15), (10, 20)])
  masks[1][0, 0] = True
  maps = [np.round(rng.standard_normal(m.shape) * 4).astype(np.float32) + m for m in masks]
  maps[0][0, :4] = [np.inf, -np.inf, -0.0, 0.0]
  maps[1][1, :3] = [-1e-40, 1e-40, -3e38]  # Subnormals and a huge negative.
  for got, want in zip(metrics.pro_curve(maps, masks), official_compute_pro(maps, masks)):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pro_curve_on_stacked_array_matches_official(chunk):
  rng = np.random.default_rng(2)
  masks = np.stack(random_blob_masks(rng, [(20, 20)] * 5)).astype(np.uint8)
  maps = np.stack(random_maps(rng, masks, levels=50))
  ref = official_compute_pro(list(maps), list(masks))
  for got, want in zip(metrics.pro_curve(maps, masks), ref):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pro_curve_matches_brute_force_thresholds(chunk):
  rng = np.random.default_rng(3)
  masks = random_blob_masks(rng, [(9, 11), (7, 7), (10, 6)])
  masks[0][0, 0] = True  # At least one region.
  maps = random_maps(rng, masks, levels=8)  # Few levels: thresholds with many ties.
  got = metrics.pro_curve(maps, masks)
  want = brute_force_pro_curve(maps, masks)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_pro_curve_uses_eight_not_four_connectivity(chunk):
  rng = np.random.default_rng(4)
  masks = [np.zeros((12, 12), bool) for _ in range(3)]
  for m in masks:  # Diagonal chains and a 2 x 2 block: 8- and 4-connected components differ.
    for i in range(4):
      m[1 + i, 1 + i] = True
    m[6, 8] = m[7, 9] = m[8, 8] = True
    m[9:11, 2:4] = True
  maps = random_maps(rng, masks)
  fprs, pros = metrics.pro_curve(maps, masks)
  np.testing.assert_allclose(pros, official_compute_pro(maps, masks, EIGHT)[1], atol=1e-12)
  four = official_compute_pro(maps, masks, FOUR)[1]
  assert four.shape == pros.shape and np.abs(four - pros).max() > 0.05


def test_pixel_auroc_matches_sklearn_on_different_sizes(chunk):
  rng = np.random.default_rng(5)
  shapes = [(13, 21), (30, 8), (16, 16), (9, 40)]
  masks = random_blob_masks(rng, shapes)
  masks[0][:3, :3] = True
  for levels in [None, 10]:  # With ties, each tied (defect, ok) pair counts one half in both.
    maps = random_maps(rng, masks, levels)
    want = sklearn.metrics.roc_auc_score(
        np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps]))
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(want, rel=1e-12)


def test_pixel_auroc_all_tied_is_one_half():
  maps = [np.zeros((4, 4), np.float32)]
  masks = [np.eye(4)]
  assert metrics.pixel_auroc(maps, masks) == pytest.approx(0.5)


def test_pixel_errors():
  maps = [np.zeros((4, 4)), np.zeros((3, 5))]
  with pytest.raises(ValueError, match=r'Image 1.*\(3, 5\).*\(5, 3\)'):
    metrics.pixel_auroc(maps, [np.ones((4, 4)), np.ones((5, 3))])
  with pytest.raises(ValueError, match='defective and defect-free'):
    metrics.pixel_auroc(maps, [np.zeros((4, 4)), np.zeros((3, 5))])
  with pytest.raises(ValueError, match='no defect region'):
    metrics.pro_curve(maps, [np.zeros((4, 4)), np.zeros((3, 5))])
  with pytest.raises(ValueError, match='NaN'):
    metrics.pro_curve([np.full((2, 2), np.nan)], [np.eye(2)])


def test_image_auroc():
  scores, labels = np.array([.1, .4, .35, .8, .4]), np.array([0, 0, 1, 1, 1])
  assert metrics.image_auroc(scores, labels) == pytest.approx(
      sklearn.metrics.roc_auc_score(labels, scores))
  with pytest.raises(ValueError, match='both normal'):
    metrics.image_auroc(scores, np.ones(5))


def test_compute_all_and_per_defect_type():
  rng = np.random.default_rng(6)
  n = 8
  types = ['good', 'scratch', 'good', 'hole', 'scratch', 'good', 'hole', 'hole']
  labels = np.array([t != 'good' for t in types], int)
  scores = rng.random(n) + labels
  masks = [np.zeros((10, 10), bool) for _ in range(n)]
  for i in np.flatnonzero(labels):
    masks[i][rng.integers(0, 5):rng.integers(6, 10), 2:7] = True
  maps = random_maps(rng, masks)
  has_mask = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)  # Image 3 (a hole) has no mask.
  masks[3] = None

  no_pixels = metrics.compute_all(scores, labels)
  assert no_pixels == {'image_auroc': pytest.approx(sklearn.metrics.roc_auc_score(labels, scores)),
                       'pixel_auroc': None, 'au_pro': None}
  # Only defect-free masks selected: pixel metrics unavailable, not zero.
  only_good = metrics.compute_all(scores, labels, maps, masks, has_mask & (labels == 0))
  assert only_good['pixel_auroc'] is None and only_good['au_pro'] is None

  res = metrics.compute_all(scores, labels, maps, masks, has_mask)
  sel = np.flatnonzero(has_mask)
  want_pix = sklearn.metrics.roc_auc_score(np.concatenate([masks[i].ravel() for i in sel]),
                                           np.concatenate([maps[i].ravel() for i in sel]))
  f, p = official_compute_pro([maps[i] for i in sel], [masks[i] for i in sel])
  assert res['pixel_auroc'] == pytest.approx(want_pix, rel=1e-12)
  assert res['au_pro'] == pytest.approx(official_trapezoid(f, p, 0.3) / 0.3, rel=1e-9)

  per = metrics.per_defect_type(scores, labels, types, maps, masks, has_mask)
  assert list(per) == ['scratch', 'hole', 'overall']
  assert per['overall'].pop('num_images') == len(labels)
  assert per['overall'] == res
  for t in ['scratch', 'hole']:
    idx = [i for i in range(n) if types[i] in ('good', t)]
    assert per[t]['image_auroc'] == pytest.approx(
        sklearn.metrics.roc_auc_score(labels[idx], scores[idx]))
    idx = [i for i in idx if has_mask[i]]
    f, p = official_compute_pro([maps[i] for i in idx], [masks[i] for i in idx])
    assert per[t]['au_pro'] == pytest.approx(official_trapezoid(f, p, 0.3) / 0.3, rel=1e-9)


def test_imports_neither_jax_nor_tensorflow():
  code = ('import sys, vivano_jax.metrics; '
          'bad = [m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", '
          '"tensorflow")]; assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_metrics_table_columns_stay_in_line_with_long_defect_names():
  """The text table's name column was 16 characters wide: a longer name (MVTec AD's
  cut_inner_insulation) pushed that row's figures out of line with the header."""
  from vivano_jax import tables  # pylint: disable=g-import-not-at-top
  m = {'num_images': 12, 'image_auroc': 0.5, 'pixel_auroc': None, 'au_pro': 0.25}
  text = tables.metrics_table({'cut_inner_insulation': m, 'overall': dict(m, num_images=120)})
  assert text.splitlines() == [
      'defect type               n  image AUROC  pixel AUROC   AU-PRO',
      'cut_inner_insulation     12       0.5000          n/a   0.2500',
      'overall                 120       0.5000          n/a   0.2500']
