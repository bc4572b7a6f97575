"""Scoring against scipy / TensorFlow references and hand-made cases."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from vivano_jax import scoring


@pytest.mark.parametrize('sigma', [0.8, 2.0, 4.0])
def test_gaussian_blur_matches_scipy(sigma):
  x = np.random.default_rng(0).normal(size=(2, 24, 17)).astype(np.float32)
  got = np.asarray(scoring.gaussian_blur(jnp.asarray(x), sigma))
  ref = np.stack([ndimage.gaussian_filter(m, sigma, mode='reflect', truncate=4.0) for m in x])
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_gaussian_blur_off_and_kernel_is_normalised():
  x = jnp.ones((1, 5, 5))
  np.testing.assert_array_equal(np.asarray(scoring.gaussian_blur(x, 0.0)), 1.0)
  np.testing.assert_allclose(float(scoring.gaussian_kernel1d(3.0).sum()), 1.0, rtol=1e-6)


def test_bilinear_upsampling_matches_tensorflow_half_pixel():
  patch = np.random.default_rng(1).normal(size=(2, 4, 4)).astype(np.float32)
  got = np.asarray(scoring.upsample(jnp.asarray(patch), 32, 32))
  ref = tf.image.resize(patch[..., None], (32, 32), method='bilinear', antialias=False).numpy()[..., 0]
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_components_max_patch_nll_and_reconstruction_error():
  nll = jnp.asarray([[[1.0, 5.0], [2.0, 3.0]], [[0.0, -1.0], [4.0, 2.0]]])
  images = jnp.zeros((2, 8, 8, 1))
  recon = jnp.concatenate([jnp.zeros((1, 8, 8, 1)), jnp.full((1, 8, 8, 1), 0.5)])
  image, pixel = scoring.score_components({'nll': nll, 'recon': recon}, images, smoothing_sigma=0.0)
  np.testing.assert_allclose(np.asarray(image['nll_max']), [5.0, 4.0])
  np.testing.assert_allclose(np.asarray(image['recon']), [0.0, 0.25])
  assert pixel['nll'].shape == (2, 8, 8) and pixel['recon'].shape == (2, 8, 8)
  # The upsampled map keeps the patch ordering: patch (0, 1) is the most anomalous of image 0.
  m = np.asarray(pixel['nll'][0])
  assert m[1, 6] > m[6, 1]
  image_nll_only, pixel_nll_only = scoring.score_components({'nll': nll}, images, 0.0)
  assert 'recon' not in image_nll_only and 'recon' not in pixel_nll_only


def test_combined_score_standardises_components():
  comps = {'nll_max': jnp.asarray([10.0, 14.0]), 'recon': jnp.asarray([0.1, 0.2])}
  pix = {'nll': jnp.zeros((2, 2, 2)), 'recon': jnp.ones((2, 2, 2))}
  stats = {'nll_max': (10.0, 2.0), 'recon': (0.1, 0.05), 'pixel_nll': (0.0, 1.0),
           'pixel_recon': (1.0, 1.0)}
  img, px = scoring.final_scores(comps, pix, 'combined', 'combined', stats)
  np.testing.assert_allclose(np.asarray(img), [0.0, 2.0 + 2.0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(px), 0.0)
  img, _ = scoring.final_scores(comps, pix, 'nll_max', 'nll')
  np.testing.assert_allclose(np.asarray(img), [10.0, 14.0])
  with pytest.raises(ValueError, match='statistics'):
    scoring.final_scores(comps, pix, 'combined', 'nll')
  with pytest.raises(ValueError, match='score.image'):
    scoring.final_scores(comps, pix, 'mean', 'nll')
  assert scoring.needs_decoder('nll_max', 'nll') is False
  assert scoring.needs_decoder('nll_max', 'recon') is True
