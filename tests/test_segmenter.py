"""The discriminative segmentation head: its loss, its place in the model, its score and checks."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special
from sklearn.metrics import roc_auc_score

from tests.conftest import load_config
from vivano_jax import benchmark
from vivano_jax import config_checks
from vivano_jax import errors
from vivano_jax import export
from vivano_jax import model as model_lib
from vivano_jax import score_maps
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import synthetic
from vivano_jax import train
from vivano_jax.model import decoder as decoder_lib
from vivano_jax.model import losses
from vivano_jax.model import segmenter as segmenter_lib


def _segmenter_config():
  config = load_config('tiny')
  config.model.segmenter_features = 4
  config.train.synthetic_anomalies = 0.5
  return config


def test_focal_term_against_hand_computation():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=3.0, size=(2, 8, 8)).astype(np.float32)
  masks = (rng.random((2, 8, 8)) < 0.2).astype(np.float32)
  out = {'recon': jnp.zeros((2, 8, 8, 1)), 'kl': jnp.zeros((2, 2, 2)), 'nll': jnp.zeros((2, 2, 2)),
         'seg_logits': jnp.asarray(logits)}
  loss, terms = losses.vivano_loss(out, jnp.zeros((2, 8, 8, 1)), 1.0, 0.0, 0.0, seg_weight=0.5,
                                   masks=jnp.asarray(masks))
  p = special.expit(logits.astype(np.float64))
  p_true = np.where(masks > 0, p, 1.0 - p)  # Probability given to the right class.
  ref = np.mean(-(1.0 - p_true) ** 2 * np.log(p_true))
  np.testing.assert_allclose(float(terms['seg']), ref, rtol=1e-4)
  np.testing.assert_allclose(float(loss), 0.5 * ref, rtol=1e-4)  # recon 0: zeros vs zeros.
  with pytest.raises(ValueError, match='masks'):
    losses.vivano_loss(out, jnp.zeros((2, 8, 8, 1)), 1.0, 0.0, 0.0, seg_weight=0.5)


@pytest.mark.parametrize('resolution', ['full', 'half'])
def test_segmenter_output_and_its_gradient_stays_in_the_head(resolution):
  config = _segmenter_config()
  config.model.segmenter_resolution = resolution
  model = model_lib.create_model(config)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 1), minval=-1, maxval=1)
  # Each step compiled as one program (eagerly, every primitive of the model and its gradient is
  # compiled on its own, for most of this test's time).
  variables = jax.jit(model.init)({'params': jax.random.PRNGKey(1),
                                   'latent': jax.random.PRNGKey(2)}, x)
  assert 'segmenter' in variables['params'] and 'segmenter' in variables['batch_stats']

  def seg_mean(params):
    out, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                         train=True, rngs={'latent': jax.random.PRNGKey(3)},
                         mutable=['batch_stats'])
    assert out['seg_logits'].shape == (2, 32, 32) and out['seg_logits'].dtype == jnp.float32
    return jnp.mean(out['seg_logits'] ** 2)

  grads = jax.jit(jax.grad(seg_mean))(variables['params'])
  norms = {k: float(optax.global_norm(v)) for k, v in grads.items()}
  assert norms['segmenter'] > 0
  # The autoencoder is trained by its own objective only: no gradient from the head reaches it.
  for part in ('encoder', 'bottleneck', 'decoder', 'density'):
    assert norms[part] == 0.0, part
  # Without the decoder pass there is no reconstruction to compare, so no segmenter map.
  assert 'seg_logits' not in jax.eval_shape(functools.partial(model.apply, decode=False),
                                            variables, x)


def test_seg_component_is_the_smoothed_probability():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 16, 16)).astype(np.float32)
  images = jnp.zeros((3, 16, 16, 1))
  out = {'nll': jnp.zeros((3, 2, 2)), 'recon': images, 'seg_logits': jnp.asarray(logits)}
  image, pixel = scoring.score_components(out, images, smoothing_sigma=0.0)
  np.testing.assert_allclose(np.asarray(pixel['seg']), special.expit(logits), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(image['seg_max']), special.expit(logits).max(axis=(1, 2)),
                             rtol=1e-5)
  _, smoothed = scoring.score_components(out, images, smoothing_sigma=2.0)
  np.testing.assert_allclose(np.asarray(smoothed['seg']),
                             np.asarray(score_maps.gaussian_blur(special.expit(logits), 2.0)),
                             rtol=1e-5)


def test_space_to_depth_is_tensorflows_and_inverts_depth_to_space():
  tf = pytest.importorskip('tensorflow')
  x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  y = segmenter_lib.space_to_depth(jnp.asarray(x), 2)
  np.testing.assert_array_equal(np.asarray(y), tf.nn.space_to_depth(x, 2).numpy())
  np.testing.assert_array_equal(np.asarray(decoder_lib.depth_to_space(y, 2)), x)


def test_half_resolution_head_gives_each_pixel_its_own_logit():
  """At 'half' resolution the U-Net sees 2 x 2 blocks, yet its map is per pixel: the logits of the
  four pixels of a block are its last layer's four outputs for that block, in place."""
  head = segmenter_lib.Segmenter(4, 'half')
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 1), minval=-1, maxval=1)
  variables = head.init(jax.random.PRNGKey(1), x, x * 0.5)
  logits, features = head.apply(variables, x, x * 0.5, capture_intermediates=True)
  assert logits.shape == (2, 32, 32)
  block_outputs = np.asarray(features['intermediates']['logits']['__call__'][0])
  assert block_outputs.shape == (2, 16, 16, 4)
  for i in range(2):
    for j in range(2):
      np.testing.assert_allclose(np.asarray(logits)[:, i::2, j::2], block_outputs[..., 2 * i + j],
                                 rtol=1e-6)
  assert segmenter_lib.input_multiple('half') == 2 * segmenter_lib.input_multiple('full') == 16


# At 32 px the half-resolution U-Net's deepest level is 2 x 2 (4 x 4 at full resolution).
@pytest.mark.parametrize('resolution,min_auroc', [('full', 0.95), ('half', 0.93)])
def test_segmenter_learns_to_segment_synthetic_anomalies(resolution, min_auroc):
  """Trained alone, beside a perfect reconstruction, the head finds held-out synthetic anomalies."""
  def smooth_images(n, seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 32, 32))
    from scipy import ndimage
    base = np.stack([ndimage.gaussian_filter(b, 3.0, mode='wrap') for b in base])
    base = base / np.abs(base).max(axis=(1, 2), keepdims=True) * 0.5
    return base[..., None].astype(np.float32)

  head = segmenter_lib.Segmenter(8, resolution)
  clean = smooth_images(64, 0)
  variables = head.init(jax.random.PRNGKey(0), clean[:2], clean[:2])
  tx = optax.adam(3e-3)
  opt = tx.init(variables['params'])

  @jax.jit
  def step(params, stats, opt, x, clean, m):
    def loss_fn(p):
      logits, upd = head.apply({'params': p, 'batch_stats': stats}, x, clean, train=True,
                               mutable=['batch_stats'])
      return jnp.mean(optax.sigmoid_focal_loss(logits, m)), upd['batch_stats']
    (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt)
    return optax.apply_updates(params, updates), stats, opt, loss

  params, stats = variables['params'], variables['batch_stats']
  rng = np.random.default_rng(1)
  for i in range(150):
    batch = clean[rng.choice(64, 16, replace=False)]
    x, m = synthetic.corrupt_batch(batch, 1.0, rng)
    params, stats, opt, _ = step(params, stats, opt, x, batch, m.astype(np.float32))
  test_clean = smooth_images(16, 2)
  x, m = synthetic.corrupt_batch(test_clean, 1.0, np.random.default_rng(3))
  logits = head.apply({'params': params, 'batch_stats': stats}, x, test_clean)
  assert roc_auc_score(m.ravel(), np.asarray(logits).ravel()) > min_auroc


def test_config_errors_name_the_field():
  mesh = sharding.make_mesh()
  config = _segmenter_config()
  config.train.synthetic_anomalies = 0.0
  with pytest.raises(errors.UsageError, match='train.synthetic_anomalies'):
    train._checked_model(config, mesh)
  # The anomalies' fields are checked here too, before the data is prepared or anything written.
  config.train.synthetic_anomalies = 0.5
  config.train.synthetic_shapes = ('disc',)
  with pytest.raises(errors.UsageError, match='train.synthetic_shapes'):
    train._checked_model(config, mesh)
  config = load_config('tiny')
  config.score.pixel = 'seg'
  with pytest.raises(errors.UsageError, match='model.segmenter_features'):
    train._checked_model(config, mesh)
  config.score.pixel, config.score.image, config.score.combine = 'recon', 'combined', ('nll', 'seg')
  with pytest.raises(errors.UsageError, match='model.segmenter_features'):
    train._checked_model(config, mesh)
  config = _segmenter_config()
  config.model.segmenter_features = -1
  with pytest.raises(errors.UsageError, match='model.segmenter_features'):
    train._checked_model(config, mesh)
  config = _segmenter_config()
  config.dataset.image_size, config.model.patch_size = 36, 4  # 36 / 8 is not whole.
  with pytest.raises(errors.UsageError, match='divisible by 8'):
    train._checked_model(config, mesh)
  config.dataset.image_size = 40  # 40 / 8 is whole, 40 / 16 is not.
  train._checked_model(config, mesh)
  config.model.segmenter_resolution = 'half'
  with pytest.raises(errors.UsageError, match="divisible by 16 .model.segmenter_resolution='half'"):
    train._checked_model(config, mesh)
  config.model.segmenter_resolution = 'quarter'
  with pytest.raises(errors.UsageError, match='model.segmenter_resolution'):
    train._checked_model(config, mesh)


@pytest.mark.parametrize('fields, named', [
    ({'pixel': 'seg'}, "score.pixel='seg'"),
    ({'pixel': 'combined', 'combine': ('nll', 'seg')},
     "score.pixel='combined' with score.combine=('nll', 'seg')"),
    ({'image': 'seg_max'}, "score.image='seg_max'"),
    ({'image': 'map_max', 'image_map': 'recon+seg'}, "score.image='map_max'"),
    ({'image': 'ensemble', 'ensemble': ('recon', 'seg_max')}, "score.ensemble member 'seg_max'"),
    ({'image': 'ensemble', 'ensemble': ('recon', 'map_max:nll+seg:pixel')},
     "score.ensemble member 'map_max:nll+seg:pixel'"),
    ({'select': 'synthetic', 'image_candidates': ('recon', 'seg_max')},
     "score.image_candidates: 'seg_max'"),
    ({'select': 'synthetic', 'pixel_candidates': ('recon:global', 'seg:pixel')},
     "score.pixel_candidates: 'seg:pixel'"),
])
def test_a_score_reading_a_missing_segmenter_names_its_field(fields, named):
  """Each field that reads the segmenter's map, and only those, is named, before any data is read
  (main) or any checkpoint restored (export); a model with a segmenter takes the same score."""
  config = load_config('tiny')
  config.score.update(fields)
  with pytest.raises(errors.UsageError) as e:
    config_checks.check_all(config)
  message = str(e.value)
  assert message.startswith(named) and 'model.segmenter_features' in message, message
  assert ('score.pixel=' in message) == named.startswith('score.pixel='), message
  with pytest.raises(errors.UsageError, match=re.escape(named)):  # Export reads no checkpoint.
    export.export_run(config, '/nonexistent/run')
  config.model.segmenter_features, config.train.synthetic_anomalies = 8, 0.5
  config_checks.check_all(config)


def test_synthetic_batches_carry_the_masks(tiny_config):
  config = tiny_config
  config.train.synthetic_anomalies = 1.0
  clean = [{'image': np.random.default_rng(i).uniform(-0.5, 0.5, (4, 32, 32, 1)).astype(np.float32)}
           for i in range(2)]
  for batch in train.synthetic_batches(iter(clean), config, start_step=0):
    changed = (batch['image'] != batch['target']).any(axis=-1)
    assert batch['mask'].dtype == np.float32 and batch['mask'].shape == (4, 32, 32)
    assert batch['mask'].max() == 1.0
    np.testing.assert_array_equal(batch['mask'][changed], 1.0)  # Every changed pixel is marked.


def test_benchmark_trains_on_the_runs_synthetic_anomalies():
  """`vivano benchmark` times the step a run takes: with a segmenter, on batches that carry
  synthetic anomalies and their masks (the step rejects a batch without them)."""
  config = _segmenter_config()
  config.train.synthetic_anomalies = 1.0
  mesh = sharding.make_mesh()
  batch = {k: np.asarray(v) for k, v in benchmark.random_batch(config, 4, mesh).items()}
  assert set(batch) == {'image', 'target', 'patch_weights', 'mask'}
  changed = (batch['image'] != batch['target']).any(axis=-1)
  assert changed.any(axis=(1, 2)).all() and not (changed & (batch['mask'] == 0)).any()
  np.testing.assert_array_equal(batch['patch_weights'],
                                synthetic.patch_weights(batch['mask'] > 0, config.model.patch_size))
  assert set(benchmark.random_batch(config, 4, mesh, train=False)) == {'image'}
