"""Model parts: shapes and dtypes, closed forms for KL and the mixture NLL, finite gradients; the
model built from every config field."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from vivano_jax import errors
from vivano_jax.model import bottleneck
from vivano_jax.model import decoder
from vivano_jax.model import encoder
from vivano_jax.model import mixture
from vivano_jax import model as model_lib
from tests.conftest import load_config


def _init_apply(module, *args, rngs=None, **kwargs):
  variables = module.init({'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)}, *args,
                          **kwargs)
  return variables, module.apply(variables, *args, rngs=rngs, **kwargs)


def test_vit_encoder_shapes_and_tokens():
  x = jnp.zeros((2, 32, 48, 3))
  enc = encoder.ViTEncoder(patch_size=8, width=16, depth=2, num_heads=4, mlp_dim=32, remat=False)
  variables, (tokens, cls) = _init_apply(enc, x)
  chex.assert_shape(tokens, (2, 4, 6, 16))
  chex.assert_shape(cls, (2, 16))
  chex.assert_type(tokens, jnp.float32)
  p = variables['params']
  chex.assert_shape(p['position_embedding'], (1, 4 * 6 + 1, 16))  # N + 1 positions (eq. 1)
  chex.assert_shape(p['class_token'], (1, 1, 16))
  chex.assert_shape(p['patch_embedding']['kernel'], (8, 8, 3, 16))  # E: (P^2 C) x D
  chex.assert_shape(p['block0']['msa']['qkv']['kernel'], (16, 48))  # fused U_qkv


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_patch_embedding_is_the_strided_convolution(dtype):
  """PatchEmbedding against nn.Conv(kernel = stride = P): the same parameters at initialisation
  (so checkpoints of either load into the other) and the same output and kernel gradient."""
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 24, 16, 3), minval=-1, maxval=1)
  ours = encoder.PatchEmbedding(features=5, patch_size=8, dtype=dtype)
  conv = nn.Conv(5, (8, 8), strides=(8, 8), padding='VALID', dtype=dtype)
  variables = ours.init(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal(variables, conv.init(jax.random.PRNGKey(0), x))
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # A non-zero bias.
  y, y_conv = ours.apply(variables, x), conv.apply(variables, x)
  chex.assert_shape(y, (2, 3, 2, 5))
  assert y.dtype == y_conv.dtype == dtype
  tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
  np.testing.assert_allclose(np.float32(y), np.float32(y_conv), rtol=tolerance, atol=tolerance)
  grads = [jax.grad(lambda v, m=m: jnp.sum(jnp.sin(m.apply(v, x).astype(jnp.float32))))(variables)
           for m in (ours, conv)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=10 * tolerance,
                               atol=10 * tolerance)


def test_attention_matches_reference_formula():
  """MSA (eqs. 4-6) against a direct numpy computation with the module's own weights."""
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.float32)
  msa = encoder.MultiHeadSelfAttention(num_heads=2)
  variables, out = _init_apply(msa, z)
  p = jax.tree.map(np.asarray, variables['params'])
  assert 'bias' not in p['qkv']  # No key bias (the softmax is invariant to it).
  p['q_bias'] = rng.normal(size=8).astype(np.float32)  # Non-zero biases, so they are checked.
  p['v_bias'] = rng.normal(size=8).astype(np.float32)
  out = msa.apply({'params': p}, z)
  qkv = (np.asarray(z)[0] @ p['qkv']['kernel']
         + np.concatenate([p['q_bias'], np.zeros(8), p['v_bias']]))
  q, k, v = np.split(qkv.reshape(5, 3, 2, 4), 3, axis=1)
  heads = []
  for h in range(2):
    qh, kh, vh = q[:, 0, h], k[:, 0, h], v[:, 0, h]
    a = qh @ kh.T / np.sqrt(4)
    a = np.exp(a - a.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    heads.append(a @ vh)
  ref = np.concatenate(heads, 1) @ p['out']['kernel'] + p['out']['bias']
  np.testing.assert_allclose(np.asarray(out)[0], ref, rtol=1e-5, atol=1e-5)


def test_encoder_rejects_bad_sizes():
  with pytest.raises(errors.UsageError, match='patch_size'):
    _init_apply(encoder.ViTEncoder(8, 16, 1, 4, 32, False), jnp.zeros((1, 30, 32, 1)))
  with pytest.raises(errors.UsageError, match='num_heads'):
    _init_apply(encoder.ViTEncoder(8, 18, 1, 4, 32, False), jnp.zeros((1, 32, 32, 1)))


def test_cnn_encoder_shapes():
  x = jnp.zeros((2, 32, 32, 1))
  cnn = encoder.CNNEncoder(patch_size=8, width=24, base_features=16)
  variables = cnn.init(jax.random.PRNGKey(0), x)
  tokens, glob = cnn.apply(variables, x)
  chex.assert_shape(tokens, (2, 4, 4, 24))
  chex.assert_shape(glob, (2, 24))


def test_gaussian_kl_closed_form_against_scipy_integration():
  """KL(N(m, s^2) || N(0, 1)) per dimension, integrated numerically with scipy."""
  from scipy import integrate  # pylint: disable=g-import-not-at-top
  for m, logvar in [(0.0, 0.0), (1.3, -0.7), (-0.4, 1.1)]:
    s = np.exp(0.5 * logvar)
    q, p = stats.norm(m, s), stats.norm(0, 1)
    ref, _ = integrate.quad(lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x)), -30, 30)
    got = bottleneck.gaussian_kl(jnp.array([m]), jnp.array([logvar]))
    np.testing.assert_allclose(float(got), ref, rtol=1e-5, atol=1e-7)
  # Sums over the last axis.
  got = bottleneck.gaussian_kl(jnp.array([[0.0, 1.0]]), jnp.zeros((1, 2)))
  np.testing.assert_allclose(np.asarray(got), [0.5], rtol=1e-6)


def test_vae_sampling_and_eval_mean():
  tokens = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 2, 8)), jnp.float32)
  vae = bottleneck.VAEBottleneck(latent_dim=3, variational=True)
  variables = vae.init(jax.random.PRNGKey(0), tokens)
  ev = vae.apply(variables, tokens, train=False)
  np.testing.assert_array_equal(np.asarray(ev['z']), np.asarray(ev['mean']))
  tr1 = vae.apply(variables, tokens, train=True, rngs={'latent': jax.random.PRNGKey(5)})
  tr2 = vae.apply(variables, tokens, train=True, rngs={'latent': jax.random.PRNGKey(5)})
  tr3 = vae.apply(variables, tokens, train=True, rngs={'latent': jax.random.PRNGKey(6)})
  np.testing.assert_array_equal(np.asarray(tr1['z']), np.asarray(tr2['z']))
  assert not np.allclose(np.asarray(tr1['z']), np.asarray(tr3['z']))
  # z = mean + exp(logvar / 2) * eps with eps ~ N(0, 1): recover eps on many samples and test it.
  big = jnp.asarray(np.random.default_rng(1).normal(size=(512, 2, 2, 8)), jnp.float32)
  s = vae.apply(variables, big, train=True, rngs={'latent': jax.random.PRNGKey(7)})
  eps = np.asarray((s['z'] - s['mean']) / jnp.exp(0.5 * s['logvar'])).ravel()
  assert stats.kstest(eps, 'norm').pvalue > 1e-3
  chex.assert_shape(tr1['kl'], (4, 2, 2))
  det = bottleneck.VAEBottleneck(latent_dim=3, variational=False)
  dv = det.init(jax.random.PRNGKey(0), tokens)
  out = det.apply(dv, tokens, train=True)
  np.testing.assert_array_equal(np.asarray(out['kl']), 0.0)


def test_decoder_shapes_and_range():
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)) * 10, jnp.float32)
  dec = decoder.ConvDecoder(features=decoder.decoder_features(8, 32, 8), out_channels=3,
                            norm='batch')
  variables = dec.init(jax.random.PRNGKey(0), z)
  assert decoder.decoder_features(8, 32, 8) == (32, 16, 8)
  out, updates = dec.apply(variables, z, train=True, mutable=['batch_stats'])
  chex.assert_shape(out, (2, 32, 32, 3))
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  # Training updates the BatchNorm running statistics.
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updates['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  with pytest.raises(errors.UsageError, match='power of two'):
    decoder.decoder_features(12, 32, 8)


def test_mixture_nll_against_scipy():
  rng = np.random.default_rng(0)
  k, d = 4, 3
  y = rng.normal(size=(5, d))
  logits = rng.normal(size=(5, k))
  means = rng.normal(size=(5, k, d))
  scales = rng.uniform(0.2, 2.0, size=(5, k, d))
  log_w = logits - logsumexp(logits, axis=-1, keepdims=True)
  got = mixture.mixture_nll(jnp.asarray(y), jnp.asarray(log_w), jnp.asarray(means),
                            jnp.asarray(scales))
  for i in range(5):
    comps = [log_w[i, j]
             + stats.multivariate_normal(means[i, j], np.diag(scales[i, j] ** 2)).logpdf(y[i])
             for j in range(k)]
    np.testing.assert_allclose(float(got[i]), -logsumexp(comps), rtol=1e-5)


def test_mixture_nll_is_stable_far_from_every_component():
  """A point 1e3 scales away: a naive log(sum(exp)) underflows to inf, log-sum-exp stays finite."""
  y = jnp.full((1, 2), 1e3)
  nll = mixture.mixture_nll(y, jnp.log(jnp.array([[0.5, 0.5]])), jnp.zeros((1, 2, 2)),
                            jnp.ones((1, 2, 2)))
  expected = 2 * 0.5 * 1e6 + np.log(2 * np.pi)  # both components identical: -log N(y | 0, I)
  np.testing.assert_allclose(float(nll[0]), expected, rtol=1e-6)


def test_mixture_head_constraints():
  c = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 5)), jnp.float32)
  head = mixture.MixtureDensityHead(num_components=6, target_dim=4, hidden_dim=8, num_layers=2,
                                    min_scale=1e-3)
  variables = head.init(jax.random.PRNGKey(0), c)
  log_w, means, scales = head.apply(variables, c)
  chex.assert_shape(log_w, (2, 3, 3, 6))
  chex.assert_shape([means, scales], (2, 3, 3, 6, 4))
  np.testing.assert_allclose(np.asarray(jnp.exp(log_w).sum(-1)), 1.0, rtol=1e-6)  # eq. 11
  assert float(scales.min()) >= 1e-3  # softplus (eq. 12) plus the floor


@pytest.mark.parametrize('condition', mixture.CONDITIONS)
@pytest.mark.parametrize('target', mixture.TARGETS)
def test_full_model_outputs_and_finite_gradients(condition, target):
  config = load_config('tiny')
  config.density.condition = condition
  config.density.target = target
  m = model_lib.create_model(config)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 1)), jnp.float32)
  variables = m.init({'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)}, x)
  out = m.apply(variables, x, train=False)
  chex.assert_shape(out['recon'], (2, 32, 32, 1))
  chex.assert_shape([out['z'], out['mean'], out['logvar']], (2, 4, 4, 8))
  chex.assert_shape([out['kl'], out['nll']], (2, 4, 4))
  assert 'recon' not in m.apply(variables, x, train=False, decode=False)

  def loss(params):
    o, _ = m.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
                   rngs={'latent': jax.random.PRNGKey(2)}, mutable=['batch_stats'])
    return jnp.mean(jnp.square(o['recon'] - x)) + 1e-3 * o['kl'].mean() + o['nll'].mean()

  grads = jax.grad(loss)(variables['params'])
  chex.assert_tree_all_finite(grads)
  # The density head always learns; with stop_gradient the encoder gets no NLL gradient.
  assert float(jnp.abs(grads['density']['logits']['bias']).sum()) > 0


def test_stop_gradient_blocks_nll_gradient_into_encoder():
  config = load_config('tiny')
  m = model_lib.create_model(config)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 1)), jnp.float32)
  variables = m.init({'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)}, x)
  g = jax.grad(lambda q: m.apply({'params': q, 'batch_stats': variables['batch_stats']}, x,
                                 decode=False)['nll'].mean())(variables['params'])
  assert float(sum(jnp.abs(v).sum() for v in jax.tree.leaves(g['encoder']))) == 0.0
  assert float(sum(jnp.abs(v).sum() for v in jax.tree.leaves(g['bottleneck']))) == 0.0
  config.density.stop_gradient = False
  m2 = model_lib.create_model(config)
  g2 = jax.grad(lambda q: m2.apply({'params': q, 'batch_stats': variables['batch_stats']}, x,
                                   decode=False)['nll'].mean())(variables['params'])
  assert float(sum(jnp.abs(v).sum() for v in jax.tree.leaves(g2['encoder']))) > 0.0


def test_bad_input_shape_is_a_clear_error():
  config = load_config('tiny')
  m = model_lib.create_model(config)
  with pytest.raises(ValueError, match='dataset.image_size'):
    m.init({'params': jax.random.PRNGKey(0)}, jnp.zeros((1, 64, 64, 1)))
  with pytest.raises(ValueError, match='dataset.channels'):
    m.init({'params': jax.random.PRNGKey(0)}, jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize('condition', ['position', 'class_token'])
def test_density_position_embedding_learns_under_stop_gradient(condition):
  # The stop-gradient cuts the encoder and VAE off from the NLL, not the head's own parameters: its
  # position embedding must get an NLL gradient, or position conditioning stays a frozen random
  # code.
  config = load_config('tiny')
  config.density.condition = condition
  m = model_lib.create_model(config)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 1)), jnp.float32)
  variables = m.init({'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)}, x)
  g = jax.grad(lambda q: m.apply({'params': q, 'batch_stats': variables['batch_stats']}, x,
                                 decode=False)['nll'].mean())(variables['params'])
  emb = g['density_position_embedding']
  assert emb.shape == (4, 4, config.density.position_embed_dim)
  # Every position's embedding is used by its own patch only: each gets a gradient.
  assert bool(jnp.all(jnp.abs(emb).sum(axis=-1) > 0))


def _param_shapes(config):
  """The parameter tree of create_model(config), shapes only (nothing is computed)."""
  m = model_lib.create_model(config)
  x = jnp.zeros((1, config.dataset.image_size, config.dataset.image_size, config.dataset.channels))
  variables = jax.eval_shape(lambda: m.init({'params': jax.random.PRNGKey(0)}, x))
  return jax.tree.map(lambda a: a.shape, variables['params'])


def test_depth_to_space_matches_tensorflow():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4 * 6)).astype(np.float32)
  np.testing.assert_array_equal(decoder.depth_to_space(jnp.asarray(x), 2),
                                tf.nn.depth_to_space(x, 2).numpy())


def _subpixel_kernel(transposed, t_vars, cin, feats, size):
  """The 3x3 low-resolution kernel [3, 3, cin, 4 * feats] of the sub-pixel form of a stride-2
  transposed convolution, read from its response to unit impulses at an interior input pixel."""
  weights = np.zeros((3, 3, cin, 4 * feats), np.float32)
  centre = size // 2
  for c in range(cin):
    impulse = np.zeros((1, size, size, cin), np.float32)
    impulse[0, centre, centre, c] = 1.0
    response = np.asarray(transposed.apply(t_vars, jnp.asarray(impulse)))[0]
    if 'bias' in t_vars['params']:
      response = response - np.asarray(t_vars['params']['bias'])
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        for i in range(2):
          for j in range(2):
            # Output pixel (2y + i, 2x + j) with y = centre - dy reads input pixel y + dy.
            out = response[2 * (centre - dy) + i, 2 * (centre - dx) + j]
            weights[dy + 1, dx + 1, c, (i * 2 + j) * feats:(i * 2 + j + 1) * feats] = out
  return weights


@pytest.mark.parametrize('kernel', [3, 4])
def test_subpixel_stage_computes_a_stride_2_transposed_convolution(kernel):
  # The reference is Flax's own nn.ConvTranspose (stride 2, SAME). Its weights are mapped onto the
  # sub-pixel stage's 3x3 low-resolution convolution by reading its response to unit impulses at an
  # interior input pixel; the two must then agree on random inputs everywhere, borders included.
  rng = np.random.default_rng(1)
  cin, feats, size = 3, 5, 6
  transposed = nn.ConvTranspose(feats, (kernel, kernel), strides=(2, 2), padding='SAME',
                                use_bias=False)
  t_vars = transposed.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, cin)))
  weights = _subpixel_kernel(transposed, t_vars, cin, feats, size)
  assert np.abs(weights).sum() > 0
  x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
  conv = nn.Conv(4 * feats, (3, 3), padding='SAME', use_bias=False)
  subpixel = decoder.depth_to_space(conv.apply({'params': {'kernel': jnp.asarray(weights)}}, x), 2)
  np.testing.assert_allclose(subpixel, transposed.apply(t_vars, x), rtol=1e-5, atol=1e-5)


def test_subpixel_output_is_a_transposed_convolution_to_the_image():
  # decoder_output='subpixel': the last x2 stage is the output layer. With its kernel set to the
  # sub-pixel form of a stride-2 transposed convolution, the decoder's output is tanh of that
  # transposed convolution (Flax's nn.ConvTranspose, the reference) of the features before it.
  # features=(7, 5): the stem lifts to 7 channels, stage 0 (7 -> 4 x 7) doubles the grid, the
  # output layer reads those 7 channels; features[-1] is not used.
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
  dec = decoder.ConvDecoder(features=(7, 5), out_channels=2, norm='none', output='subpixel')
  params = dec.init(jax.random.PRNGKey(0), z)['params']
  assert set(params) == {'stem', 'up0', 'to_image'}
  assert params['to_image']['kernel'].shape == (3, 3, 7, 8)
  transposed = nn.ConvTranspose(2, (3, 3), strides=(2, 2), padding='SAME')
  t_vars = transposed.init(jax.random.PRNGKey(1), jnp.zeros((1, 6, 6, 7)))
  t_vars = {'params': {'kernel': t_vars['params']['kernel'],
                       'bias': jnp.asarray(rng.normal(size=2), jnp.float32)}}
  params = {**params, 'to_image': {
      'kernel': jnp.asarray(_subpixel_kernel(transposed, t_vars, cin=7, feats=2, size=6)),
      'bias': jnp.tile(t_vars['params']['bias'], 4)}}
  out = dec.apply({'params': params}, z)
  chex.assert_shape(out, (2, 12, 12, 2))
  conv = lambda name, x: nn.Conv(params[name]['kernel'].shape[-1], (3, 3)).apply(
      {'params': params[name]}, x)
  before = jax.nn.relu(decoder.depth_to_space(conv('up0', jax.nn.relu(conv('stem', z))), 2))
  np.testing.assert_allclose(out, np.tanh(transposed.apply(t_vars, before)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('upsample', ['subpixel', 'nearest'])
def test_decoder_upsampling_options(upsample):
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)), jnp.float32)
  dec = decoder.ConvDecoder(features=(16, 8), out_channels=1, norm='batch', upsample=upsample)
  variables = dec.init(jax.random.PRNGKey(0), z)
  chex.assert_shape(dec.apply(variables, z), (2, 16, 16, 1))
  # 'subpixel' convolves at the low resolution into 4x the channels.
  first = variables['params']['up0']['kernel'].shape
  assert first == ((3, 3, 16, 64) if upsample == 'subpixel' else (3, 3, 16, 16))


def test_every_config_field_reaches_the_model():
  # A field added to config.model or config.density must be taken by the model, or it would be a
  # setting that changes nothing.
  config = load_config('tiny')
  m = model_lib.create_model(config)
  attributes = {f.name for f in dataclasses.fields(model_lib.ViVAno)}
  assert set(config.model) <= attributes
  for field, value in config.model.items():
    assert getattr(m, field) == value, field
  assert dict(m.density) == config.density.to_dict()
  # The parameter names checkpoints hold.
  shapes = _param_shapes(config)
  assert set(shapes) == {'encoder', 'bottleneck', 'decoder', 'density',
                         'density_position_embedding'}
  assert shapes['encoder']['patch_embedding']['kernel'] == (8, 8, 1, 32)
  config.model.width = 48
  config.density.hidden_dim = 24
  shapes = _param_shapes(config)
  assert shapes['encoder']['patch_embedding']['kernel'] == (8, 8, 1, 48)  # The token width D.
  assert shapes['density']['hidden0']['kernel'] == (8, 24)


@pytest.mark.parametrize('section', ['model', 'density'])
def test_a_config_field_the_model_does_not_take_is_an_error(section):
  config = load_config('tiny')
  config[section].unused_field = 1
  with pytest.raises(TypeError, match='unused_field'):
    _param_shapes(config)


@pytest.mark.parametrize('field,value', [
    ('model.encoder', 'resnet'), ('model.decoder_norm', 'layer'),
    ('model.decoder_upsample', 'bicubic'), ('model.decoder_output', 'shuffle'),
    ('density.condition', 'image'),
    ('density.target', 'pixel'), ('train.compute_dtype', 'float16')])
def test_a_bad_choice_is_a_usage_error_naming_the_field(field, value):
  config = load_config('tiny')
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(errors.UsageError, match=field.replace('.', r'\.')):
    _param_shapes(config)


def test_subpixel_stage_starts_as_convolution_then_nearest_upsampling():
  # ICNR: at initialisation every position of a 2 x 2 block gets the same filter.
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)), jnp.float32)
  conv = nn.Conv(4 * 5, (3, 3), padding='SAME', use_bias=False,
                 kernel_init=decoder.icnr(nn.initializers.lecun_normal(), 4))
  variables = conv.init(jax.random.PRNGKey(0), z)
  kernel = variables['params']['kernel']
  out = decoder.depth_to_space(conv.apply(variables, z), 2)
  low = jax.lax.conv_general_dilated(z, kernel[..., :5], (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(out, jnp.repeat(jnp.repeat(low, 2, axis=1), 2, axis=2), rtol=1e-5,
                             atol=1e-6)
