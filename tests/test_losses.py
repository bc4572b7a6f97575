"""The training objective: units of each term against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from vivano_jax.model import losses


def _outputs(images, recon, kl_per_patch, grid):
  b = images.shape[0]
  return {'recon': jnp.asarray(recon), 'kl': jnp.full((b, grid, grid), kl_per_patch),
          'nll': jnp.full((b, grid, grid), 3.0)}


@pytest.mark.parametrize('size,grid,channels', [(32, 4, 1), (32, 2, 3), (64, 4, 3)])
def test_kl_is_per_input_value_at_every_patch_size(size, grid, channels):
  images = np.zeros((2, size, size, channels), np.float32)
  recon = np.full_like(images, 0.5)
  patch = size // grid
  # A patch KL of P * P * C nats is 1 nat per input value, whatever the patch size.
  kl_per_patch = float(patch * patch * channels)
  loss, terms = losses.vivano_loss(_outputs(images, recon, kl_per_patch, grid), jnp.asarray(images),
                                   recon_weight=1.0, kl_weight=0.1, nll_weight=0.5)
  np.testing.assert_allclose(float(terms['recon']), 0.25, rtol=1e-6)
  np.testing.assert_allclose(float(terms['kl']), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(terms['nll']), 3.0, rtol=1e-6)
  assert float(terms['ssim']) == 0.0  # Not computed at weight 0.
  np.testing.assert_allclose(float(loss), 0.25 + 0.1 * 1.0 + 0.5 * 3.0, rtol=1e-6)


def test_ssim_term_against_skimage():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, size=(2, 16, 16, 1)).astype(np.float32)
  recon = np.clip(images + rng.normal(scale=0.2, size=images.shape), -1, 1).astype(np.float32)
  loss, terms = losses.vivano_loss(_outputs(images, recon, 0.0, 2), jnp.asarray(images),
                                   recon_weight=0.0, kl_weight=0.0, nll_weight=0.0, ssim_weight=2.0)
  ref = np.mean([1.0 - structural_similarity(images[i, ..., 0], recon[i, ..., 0], data_range=2.0,
                                             gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, full=True)[1]
                 for i in range(2)])
  np.testing.assert_allclose(float(terms['ssim']), ref, rtol=1e-4)
  np.testing.assert_allclose(float(loss), 2.0 * ref, rtol=1e-4)
