"""Synthetic anomalies: where they are drawn, what they change, how they enter the loss."""

import jax.numpy as jnp
import numpy as np
import pytest

from vivano_jax import synthetic
from vivano_jax import train
from vivano_jax.model import losses


def _images(b=6, s=64, c=1, seed=0):
  return np.random.default_rng(seed).uniform(-0.5, 0.5, size=(b, s, s, c)).astype(np.float32)


def test_blob_masks_cover_a_small_fraction():
  rng = np.random.default_rng(0)
  fractions = [synthetic.blob_mask((128, 96), rng).mean() for _ in range(200)]
  assert min(fractions) > 0 and max(fractions) <= 0.04 + 1e-3
  assert 0.005 < float(np.median(fractions)) < 0.03


def test_blob_area_follows_the_range():
  rng = np.random.default_rng(1)
  fractions = np.array([synthetic.blob_mask((128, 128), rng, (0.05, 0.25)).mean()
                        for _ in range(200)])
  # The quantile threshold of continuous noise covers the drawn fraction to within a pixel.
  assert fractions.min() >= 0.05 - 1e-3 and fractions.max() <= 0.25 + 1e-3
  # Log-uniform: the median is near the geometric mean of the bounds (0.112).
  assert 0.09 < float(np.median(fractions)) < 0.14


def test_rectangles_by_hand():
  rng = np.random.default_rng(2)
  for _ in range(100):
    m = synthetic.rect_mask((64, 48), rng, (0.01, 0.4))
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    # One solid axis-aligned rectangle: its bounding box is all True.
    assert m.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert m.mean() <= 0.4 + 0.05  # Rounding of the sides; cut sides only shrink it.
  # A long one across the image: a band.
  bands = [synthetic.rect_mask((32, 32), rng, (0.3, 0.3)) for _ in range(200)]
  assert any(b.all(axis=1).any() or b.all(axis=0).any() for b in bands)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('kind', synthetic.KINDS)
def test_anomalies_change_only_masked_pixels_and_are_seeded(channels, kind):
  x = _images(c=channels)
  y, m = synthetic.corrupt_batch(x, 1.0, np.random.default_rng(3), (kind,), (0.01, 0.2),
                                 ('blob', 'rect'))
  assert y.dtype == np.float32 and y.shape == x.shape and m.shape == x.shape[:3]
  assert m.any(axis=(1, 2)).all()  # Every image got one at probability 1.
  np.testing.assert_array_equal(y[~m], x[~m])  # Nothing outside the mask changes...
  assert np.abs(y - x).max(axis=-1)[m].mean() > 0.1  # ...and the inside visibly does.
  assert y.min() >= -1.0 and y.max() <= 1.0
  y2, m2 = synthetic.corrupt_batch(x, 1.0, np.random.default_rng(3), (kind,), (0.01, 0.2),
                                   ('blob', 'rect'))
  np.testing.assert_array_equal(y, y2)
  np.testing.assert_array_equal(m, m2)
  # Probability 0: the input itself, no mask.
  y0, m0 = synthetic.corrupt_batch(x, 0.0, np.random.default_rng(3))
  np.testing.assert_array_equal(y0, x)
  assert not m0.any()


def test_move_takes_content_from_elsewhere_in_another_image():
  x = _images(b=2, s=32)
  for seed in range(5):
    y, m = synthetic.corrupt_batch(x, 1.0, np.random.default_rng(seed), ('move',))
    for i in np.flatnonzero(m.any(axis=(1, 2))):
      other = x[1 - i, ..., 0]
      # Under the mask: the other image, rolled by some offset of at least 1/8 of a side and
      # mirrored or not; found by trying every offset.
      matches = [(dy, dx, f) for f in (False, True) for dy in range(32) for dx in range(32)
                 if np.array_equal(y[i, ..., 0][m[i]],
                                   np.roll(other, (dy, dx), (0, 1))[:, ::-1 if f else 1][m[i]])]
      assert matches and all(4 <= dy <= 28 and 4 <= dx <= 28 for dy, dx, _ in matches)


def test_noise_does_not_copy_either_image():
  x = _images(b=2, s=64)
  x[1] = -x[0]  # Whatever replaces the pixels must not come from either image.
  y, m = synthetic.corrupt_batch(x, 1.0, np.random.default_rng(0), ('noise',), (0.2, 0.2))
  for i in range(2):
    inside = y[i, ..., 0][m[i]]
    assert abs(np.corrcoef(inside, x[1 - i, ..., 0][m[i]])[0, 1]) < 0.9


@pytest.mark.parametrize('kinds,area,shapes,field', [
    (('shift', 'stain'), (0.01, 0.1), ('blob',), 'train.synthetic_kinds'),
    ((), (0.01, 0.1), ('blob',), 'train.synthetic_kinds'),
    (('shift',), (0.1, 0.01), ('blob',), 'train.synthetic_area'),
    (('shift',), (0.0, 0.1), ('blob',), 'train.synthetic_area'),
    (('shift',), (0.1, 0.9), ('blob',), 'train.synthetic_area'),
    (('shift',), (0.1,), ('blob',), 'train.synthetic_area'),
    (('shift',), (0.01, 0.1), ('disc',), 'train.synthetic_shapes'),
    (('shift',), (0.01, 0.1), (), 'train.synthetic_shapes'),
])
def test_bad_kinds_area_or_shapes_name_the_field(kinds, area, shapes, field):
  with pytest.raises(ValueError, match=field):
    synthetic.check(kinds, area, shapes)


def test_probability_is_the_fraction_of_images_hit():
  x = _images(b=400, s=16)
  _, m = synthetic.corrupt_batch(x, 0.3, np.random.default_rng(0))
  assert 0.24 < m.any(axis=(1, 2)).mean() < 0.36


def test_patch_weights_by_hand():
  m = np.zeros((1, 4, 4), bool)
  m[0, 0, 3] = True  # Patch (0, 1) of a 2 x 2 grid of 2 x 2 patches.
  np.testing.assert_array_equal(synthetic.patch_weights(m, 2), [[[1.0, 0.0], [1.0, 1.0]]])


def test_loss_reconstructs_the_clean_target_and_weights_the_nll():
  clean = np.zeros((1, 4, 4, 1), np.float32)
  out = {'recon': jnp.full((1, 4, 4, 1), 0.5), 'kl': jnp.zeros((1, 2, 2)),
         'nll': jnp.asarray([[[1.0, 100.0], [3.0, 5.0]]])}
  w = jnp.asarray([[[1.0, 0.0], [1.0, 1.0]]])
  _, terms = losses.vivano_loss(out, jnp.asarray(clean), 1.0, 0.0, 1.0, patch_weights=w)
  np.testing.assert_allclose(float(terms['recon']), 0.25)
  np.testing.assert_allclose(float(terms['nll']), 3.0)  # (1 + 3 + 5) / 3: the touched patch is out.


def test_synthetic_batches_are_resumable(tiny_config):
  config = tiny_config
  config.train.synthetic_anomalies = 0.5
  clean = [{'image': _images(b=8, s=32, seed=i)} for i in range(6)]
  full = list(train.synthetic_batches(iter(clean), config, start_step=0))
  resumed = list(train.synthetic_batches(iter(clean[3:]), config, start_step=3))
  for a, b in zip(full[3:], resumed):
    for k in ('image', 'target', 'patch_weights'):
      np.testing.assert_array_equal(a[k], b[k])
  for a, c in zip(full, clean):
    np.testing.assert_array_equal(a['target'], c['image'])
    assert a['patch_weights'].shape == (8, 4, 4)
  assert any((a['image'] != a['target']).any() for a in full)
  config.train.synthetic_anomalies = 1.5
  with pytest.raises(ValueError, match='train.synthetic_anomalies'):
    next(train.synthetic_batches(iter(clean), config, 0))
  config.train.synthetic_anomalies = 0.5
  config.train.synthetic_kinds = ('shift', 'stain')
  with pytest.raises(ValueError, match='train.synthetic_kinds'):
    next(train.synthetic_batches(iter(clean), config, 0))
