"""The optimizer: which parameters weight decay touches, per-part clipping, learning-rate schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_config
from vivano_jax import model as model_lib
from vivano_jax import optimizer


def _params(encoder='vit'):
  config = load_config('tiny')
  config.model.encoder = encoder
  m = model_lib.create_model(config)
  variables = m.init({'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)},
                     jnp.zeros((1, 32, 32, 1)))
  return config, variables['params']


def _flat(tree):
  return {'/'.join(k.key for k in path): x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize('encoder', ['vit', 'cnn'])
def test_weight_decay_touches_kernels_only(encoder):
  config, params = _params(encoder)
  config.train.weight_decay = 0.5
  config.train.schedule = 'constant'
  config.train.learning_rate = 0.1
  tx = optimizer.create_optimizer(config, total_steps=10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # With zero gradients AdamW's update is -lr * weight_decay * param on decayed leaves, 0 elsewhere.
  decayed = set()
  for name, u in _flat(updates).items():
    p = _flat(params)[name]
    if float(jnp.abs(u).sum()) > 0:
      np.testing.assert_allclose(u, -0.1 * 0.5 * p, rtol=1e-6, err_msg=name)
      decayed.add(name)
  names = set(_flat(params))
  assert decayed == {n for n in names if n.endswith('/kernel')}
  # Written out: the tokens, embeddings, biases and norm parameters are exempt.
  exempt = names - decayed
  assert 'density_position_embedding' in exempt
  if encoder == 'vit':
    assert {'encoder/class_token', 'encoder/position_embedding', 'encoder/block0/ln1/scale',
            'encoder/block0/ln1/bias', 'encoder/block0/msa/q_bias'} <= exempt
    assert 'encoder/block0/msa/qkv/kernel' in decayed
  else:
    assert {'encoder/bn0/scale', 'encoder/bn0/bias'} <= exempt
  assert {'decoder/stem_bn/scale', 'density/logits/bias'} <= exempt


def test_gradients_are_clipped_per_part():
  _, params = _params()
  flat = _flat(params)
  rng = np.random.default_rng(0)
  grads = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.asarray(rng.normal(size=p.shape) * (100.0 if path[0].key.startswith(
          'density') else 0.001), jnp.float32), params)
  clipped, _ = optimizer.gradient_clipping(1.0).update(grads, optimizer.gradient_clipping(1.0).init(params))
  g, c = _flat(grads), _flat(clipped)
  norm = lambda names, d: np.sqrt(sum(float(jnp.sum(jnp.square(d[n]))) for n in names))
  density = [n for n in flat if n.startswith('density')]
  auto = [n for n in flat if not n.startswith('density')]
  # The density head's huge gradients are scaled to norm 1; the autoencoder's (norm < 1) untouched.
  assert norm(density, g) > 1.0
  np.testing.assert_allclose(norm(density, c), 1.0, rtol=1e-5)
  assert norm(auto, g) < 1.0
  for n in auto:
    np.testing.assert_array_equal(c[n], g[n])
  for n in density:
    np.testing.assert_allclose(c[n], g[n] / norm(density, g), rtol=1e-5)
  # Off: the identity.
  off, _ = optimizer.gradient_clipping(0.0).update(grads, optimizer.gradient_clipping(0.0).init(params))
  for n in flat:
    np.testing.assert_array_equal(_flat(off)[n], g[n])


def test_learning_rate_schedules():
  config = load_config('tiny')
  config.train.learning_rate = 0.01
  config.train.warmup_steps = 10
  sched = optimizer.learning_rate_schedule(config, total_steps=110)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 0.005, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 0.01, rtol=1e-6)
  # Cosine from the peak to 0 over the remaining 100 steps: at 60 steps, half way, lr / 2.
  np.testing.assert_allclose(float(sched(60)), 0.01 * 0.5 * (1 + np.cos(np.pi * 0.5)), rtol=1e-5)
  config.train.schedule = 'constant'
  sched = optimizer.learning_rate_schedule(config, total_steps=110)
  assert [float(sched(s)) for s in (0, 50, 109)] == pytest.approx([0.01] * 3)
  config.train.schedule = 'linear'
  with pytest.raises(ValueError, match='train.schedule'):
    optimizer.learning_rate_schedule(config, total_steps=110)
