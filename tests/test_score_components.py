"""Which score components the scoring step computes: the SSIM map only when something reads it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_config
from vivano_jax import benchmark
from vivano_jax import model as model_lib
from vivano_jax import score_maps
from vivano_jax import scorer
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import train_step


def _score(**fields):
  score = load_config('tiny').score
  score.update(fields)
  return score


def test_ssim_components_only_when_asked_for():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  recon = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  outputs = {'nll': jnp.zeros((2, 2, 2)), 'recon': recon}
  image, pixel = scoring.score_components(outputs, images, 0.0, ssim=True)
  want = 1.0 - np.asarray(score_maps.ssim_map(images, recon))
  np.testing.assert_allclose(np.asarray(pixel['ssim']), want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(image['ssim']), want.mean(axis=(1, 2)), rtol=1e-6)
  lean_image, lean_pixel = scoring.score_components(outputs, images, 0.0, ssim=False)
  assert set(lean_image) == set(image) - {'ssim'} and set(lean_pixel) == set(pixel) - {'ssim'}
  np.testing.assert_array_equal(np.asarray(lean_pixel['recon']), np.asarray(pixel['recon']))


@pytest.mark.parametrize('fields, computed', [
    ({'image': 'recon', 'pixel': 'recon'}, False),
    ({'image': 'ssim', 'pixel': 'recon'}, True),
    ({'image': 'recon', 'pixel': 'ssim'}, True),
    ({'image': 'combined', 'pixel': 'nll', 'combine': ('nll', 'ssim')}, True),
    ({'image': 'map_max', 'pixel': 'recon', 'image_map': 'recon+ssim'}, True),
    ({'image': 'ensemble', 'ensemble': ('nll_max', 'map_max:ssim:global')}, True),
    ({'image': 'ensemble', 'ensemble': ('nll_max', 'map_max:recon:global')}, False),
    ({'always_ssim': True}, True),
    ({'select': 'synthetic'}, True),  # The default candidates include 'ssim'.
    ({'select': 'synthetic', 'image_candidates': ('recon', 'map_max:combined:pixel'),
      'pixel_candidates': ('recon:global', 'combined:pixel')}, False),
    ({'select': 'synthetic', 'image_candidates': ('recon',),
      'pixel_candidates': ('recon:global', 'ssim:pixel')}, True),
])
def test_computes_ssim(fields, computed):
  assert scoring.computes_ssim(_score(**fields)) is computed


def _eval_flops(config, always_ssim):
  config.score.always_ssim = always_ssim
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = train_step.create_train_state(config, model_lib.create_model(config), 1, mesh)
  batch = benchmark.random_batch(config, config.train.eval_batch_size, mesh, train=False)
  lowered = scorer.make_eval_step(config, mesh, decode=True).lower(state, batch)
  out = jax.eval_shape(lambda: lowered.compile()(state, batch))
  return benchmark.flops_of(lowered.cost_analysis()), set(out['image'])


def test_the_scoring_step_leaves_the_ssim_map_out():
  """The step for a reconstruction score does less arithmetic without the SSIM map: the five
  blurred moments per channel are not computed, not merely dropped from the outputs."""
  config = load_config('tiny')
  config.score.update({'image': 'recon', 'pixel': 'recon'})
  config.train.eval_batch_size = 2
  lean, lean_names = _eval_flops(config, False)
  full, full_names = _eval_flops(config, True)
  assert full_names - lean_names == {'ssim'}
  # SSIM: 5 moments per channel blurred along both axes (11 taps at sigma 1.5, truncate 3.5).
  pixels = 2 * config.dataset.image_size ** 2 * config.dataset.channels
  assert full - lean > 5 * 2 * 11 * pixels
