"""The optimizer: which parameters weight decay touches, per-part clipping, learning-rate schedules,
the rate scaled to the batch size (and recorded in config.json), LAMB and LARS against hand-written
updates, and the errors for bad optimizer fields."""

import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import load_config
from vivano_jax import errors
from vivano_jax import model as model_lib
from vivano_jax import optimizer
from vivano_jax import sharding
from vivano_jax import train_step
from vivano_jax import workdir as workdir_lib


def _config(encoder='vit', segmenter_features=0):
  config = load_config('tiny')
  config.model.encoder = encoder
  config.model.segmenter_features = segmenter_features
  return config


def _params(encoder='vit', segmenter_features=0):
  return _config(encoder, segmenter_features), _initial_params(encoder, segmenter_features)


@functools.cache
def _initial_params(encoder, segmenter_features):
  """The tiny model's parameters, initialised once per model (one compiled program, not every
  primitive of the initialisation run and compiled on its own)."""
  m = model_lib.create_model(_config(encoder, segmenter_features))
  variables = jax.jit(m.init)({'params': jax.random.PRNGKey(0), 'latent': jax.random.PRNGKey(1)},
                              jnp.zeros((1, 32, 32, 1)))
  return variables['params']


def _flat(tree):
  return {'/'.join(k.key for k in path): x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


# With zero gradients only weight decay moves a leaf; the update of a decayed leaf p is, at lr 0.1
# and weight decay 0.5: AdamW -lr * wd * p; LAMB -lr * p (Adam's direction is 0, so the step is
# wd * p scaled by the trust ratio |p| / |wd * p|); LARS -lr * eta * p (trust ratio
# eta * |p| / |wd * p|).
ZERO_GRAD_FACTOR = {'adamw': -0.1 * 0.5, 'lamb': -0.1, 'lars': -0.1 * 1e-3}


@pytest.mark.parametrize('encoder, name', [('vit', 'adamw'), ('cnn', 'adamw'), ('vit', 'lamb'),
                                           ('vit', 'lars')])
def test_weight_decay_touches_kernels_only(encoder, name):
  config, params = _params(encoder)
  config.train.optimizer = name
  config.train.weight_decay = 0.5
  config.train.schedule = 'constant'
  config.train.learning_rate = 0.1
  tx = optimizer.create_optimizer(config, total_steps=10)
  updates = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0])(params)
  decayed = set()
  for leaf, u in _flat(jax.tree.map(np.asarray, updates)).items():
    p = _flat(params)[leaf]
    if np.abs(u).sum() > 0:
      np.testing.assert_allclose(u, ZERO_GRAD_FACTOR[name] * p, rtol=1e-5, err_msg=leaf)
      decayed.add(leaf)
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
  _, params = _params(segmenter_features=4)
  flat = _flat(params)
  rng = np.random.default_rng(0)
  scale = lambda name: 100.0 if name.startswith('density') else (
      30.0 if name.startswith('segmenter') else 0.001)
  grads = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.asarray(rng.normal(size=p.shape) * scale(path[0].key), jnp.float32),
      params)
  clip = optimizer.gradient_clipping(1.0, segmenter=True)
  clipped = jax.jit(lambda g: clip.update(g, clip.init(g))[0])(grads)
  g, c = _flat(jax.tree.map(np.asarray, grads)), _flat(jax.tree.map(np.asarray, clipped))
  norm = lambda names, d: np.sqrt(sum(np.sum(np.square(d[n]), dtype=np.float64) for n in names))
  density = [n for n in flat if n.startswith('density')]
  segmenter = [n for n in flat if n.startswith('segmenter')]
  auto = [n for n in flat if n not in density + segmenter]
  assert segmenter and density and auto
  # The heads' huge gradients are each scaled to norm 1; the autoencoder's (norm < 1) untouched.
  for head in (density, segmenter):
    assert norm(head, g) > 1.0
    np.testing.assert_allclose(norm(head, c), 1.0, rtol=1e-5)
    for n in head:
      np.testing.assert_allclose(c[n], g[n] / norm(head, g), rtol=1e-5)
  assert norm(auto, g) < 1.0
  for n in auto:
    np.testing.assert_array_equal(c[n], g[n])
  # Without a segmenter the state has the two parts it had before there was one, so the
  # checkpoints of such runs keep restoring.
  _, plain = _params()
  state = optimizer.gradient_clipping(1.0).init(plain)
  assert sorted(state.inner_states) == ['autoencoder', 'density']
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


# --------------------------------------------------------------------------------------------------
# The learning rate scaled to the batch size.


def _train_config(**fields):
  config = load_config('tiny')
  config.train.update(fields)
  return config


@pytest.mark.parametrize('rule, batch, lr, warmup, factor', [
    # base: lr 1e-3 and 50 warmup steps at batch 16.
    ('none', 64, 1e-3, 50, 1.0),  # As given, whatever the batch.
    ('linear', 64, 4e-3, 13, 4.0),  # 1e-3 * 64 / 16; ceil(50 * 16 / 64) = ceil(12.5).
    ('sqrt', 64, 2e-3, 13, 2.0),  # 1e-3 * sqrt(4).
    ('sqrt', 4, 5e-4, 200, 0.5),  # 1e-3 * sqrt(1 / 4); 50 * 16 / 4.
    ('linear', 4, 2.5e-4, 200, 0.25),
    ('linear', 1024, 6.4e-2, 1, 64.0),  # ceil(0.78125): warmup never vanishes.
    ('sqrt', 16, 1e-3, 50, 1.0),  # At the base batch every rule is the identity.
])
def test_scaled_learning_rate_and_warmup_against_hand_computed_values(rule, batch, lr, warmup,
                                                                      factor):
  config = _train_config(lr_scaling=rule, base_batch_size=16, batch_size=batch,
                         learning_rate=1e-3, warmup_steps=50)
  scaled = optimizer.scaled_hyperparameters(config)
  assert scaled['learning_rate'] == pytest.approx(lr, rel=1e-12)
  assert scaled['warmup_steps'] == warmup and isinstance(scaled['warmup_steps'], int)
  assert scaled['lr_factor'] == pytest.approx(factor, rel=1e-12)
  config.train.warmup_steps = 0
  assert optimizer.scaled_hyperparameters(config)['warmup_steps'] == 0


def test_defaults_keep_the_unscaled_rate():
  t = load_config('tiny').train
  assert (t.optimizer, t.lr_scaling) == ('adamw', 'none')
  scaled = optimizer.scaled_hyperparameters(load_config('tiny'))
  assert scaled == {'learning_rate': t.learning_rate, 'warmup_steps': t.warmup_steps,
                    'lr_factor': 1.0}


def test_schedule_and_optimizer_use_the_scaled_rate_and_warmup():
  # lr 0.01 and 20 warmup steps at batch 16; batch 64 under 'sqrt': peak 0.02 after 5 steps.
  config = _train_config(lr_scaling='sqrt', base_batch_size=16, batch_size=64,
                         learning_rate=0.01, warmup_steps=20)
  sched = optimizer.learning_rate_schedule(config, total_steps=105)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(2)), 0.02 * 2 / 5, rtol=1e-6)
  np.testing.assert_allclose(float(sched(5)), 0.02, rtol=1e-6)
  np.testing.assert_allclose(float(sched(55)), 0.01, rtol=1e-5)  # Half way down the cosine.
  # Adam's first step is -lr * g / (|g| + eps): the scaled rate, seen in the update itself.
  config.train.update(schedule='constant', weight_decay=0.0, grad_clip_norm=0.0)
  tx = optimizer.create_optimizer(config, total_steps=105)
  params = {'dense': {'kernel': jnp.ones((2, 2))}}
  grads = {'dense': {'kernel': jnp.array([[1.0, -2.0], [0.5, -0.25]])}}
  updates, _ = tx.update(grads, tx.init(params), params)
  # (rtol: Adam's bias correction 1 - 0.999 is 1.3e-5 off in float32.)
  np.testing.assert_allclose(updates['dense']['kernel'], -0.02 * np.sign(grads['dense']['kernel']),
                             rtol=1e-5)


def test_default_adamw_is_todays_optimizer_bit_for_bit():
  # What create_optimizer built before the optimizer and scaling fields existed.
  config, params = _params()
  t = config.train
  old = optax.chain(
      optimizer.gradient_clipping(t.grad_clip_norm),
      optax.adamw(optax.warmup_cosine_decay_schedule(
          init_value=0.0, peak_value=t.learning_rate, warmup_steps=t.warmup_steps,
          decay_steps=40, end_value=0.0), weight_decay=t.weight_decay,
          mask=optimizer.weight_decay_mask))
  new = optimizer.create_optimizer(config, total_steps=40)
  rng = np.random.default_rng(0)
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(3)]

  @functools.partial(jax.jit, static_argnums=0)
  def three_steps(tx, p):  # One program per optimizer, as the train step compiles it.
    state = tx.init(p)
    for g in grads:
      u, state = tx.update(g, state, p)
      p = optax.apply_updates(p, u)
    return p
  p_old, p_new = three_steps(old, params), three_steps(new, params)
  for a, b in zip(jax.tree.leaves(p_old), jax.tree.leaves(p_new)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------------
# LAMB and LARS on a quadratic, against the updates written out in numpy.

LR, WD = 0.1, 0.01
W0 = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.5]], np.float32)
B0 = np.array([0.2, -0.1, 0.0], np.float32)
TARGET = np.array([[0.5, 0.5, -0.5], [1.0, -1.0, 0.0]], np.float32)
CURVATURE = np.array([[1.0, 3.0, 0.5], [2.0, 1.0, 4.0]], np.float32)


def _quadratic_grads(w, b):
  """Gradients of 0.5 * sum(A * (w - T)^2) + 0.5 * sum((b - 1)^2)."""
  return CURVATURE * (w - TARGET), b - 1.0


def _run(name, steps, **fields):
  """`steps` steps of the configured optimizer (constant rate, no clipping) on the quadratic."""
  config = _train_config(optimizer=name, schedule='constant', learning_rate=LR, weight_decay=WD,
                         grad_clip_norm=0.0, **fields)
  tx = optimizer.create_optimizer(config, total_steps=10)
  params = {'dense': {'kernel': jnp.asarray(W0), 'bias': jnp.asarray(B0)}}
  state = tx.init(params)
  for _ in range(steps):
    gw, gb = _quadratic_grads(np.asarray(params['dense']['kernel']),
                              np.asarray(params['dense']['bias']))
    grads = {'dense': {'kernel': jnp.asarray(gw), 'bias': jnp.asarray(gb)}}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(params['dense']['kernel']), np.asarray(params['dense']['bias'])


def _lamb_by_hand(steps):
  """You et al. 2020, Algorithm 2 (b1 0.9, b2 0.999, eps 1e-6), float64: the kernel's Adam direction
  plus weight decay, scaled by |w| / |r|; the bias (not decayed, no trust ratio): plain Adam."""
  w, b = W0.astype(np.float64), B0.astype(np.float64)
  m = [np.zeros_like(w), np.zeros_like(b)]
  v = [np.zeros_like(w), np.zeros_like(b)]
  for t in range(1, steps + 1):
    grads = _quadratic_grads(w, b)
    r = []
    for i, g in enumerate(grads):
      m[i] = 0.9 * m[i] + 0.1 * g
      v[i] = 0.999 * v[i] + 0.001 * g * g
      r.append((m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-6))
    rw = r[0] + WD * w
    w = w - LR * np.linalg.norm(w) / np.linalg.norm(rw) * rw
    b = b - LR * r[1]
  return w, b


def _lars_by_hand(steps, momentum=0.9, eta=1e-3):
  """You et al. 2017 (optax's order: the trust-scaled step times lr, then momentum): the kernel's
  g + wd * w scaled by eta * |w| / |g + wd * w|; the bias: plain momentum SGD."""
  w, b = W0.astype(np.float64), B0.astype(np.float64)
  trace = [np.zeros_like(w), np.zeros_like(b)]
  for _ in range(steps):
    gw, gb = _quadratic_grads(w, b)
    uw = gw + WD * w
    uw = eta * np.linalg.norm(w) / np.linalg.norm(uw) * uw
    trace = [momentum * trace[0] - LR * uw, momentum * trace[1] - LR * gb]
    w, b = w + trace[0], b + trace[1]
  return w, b


@pytest.mark.parametrize('steps', [1, 3])
def test_lamb_steps_equal_the_trust_ratio_update_by_hand(steps):
  w, b = _run('lamb', steps)
  w_ref, b_ref = _lamb_by_hand(steps)
  np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(b, b_ref, rtol=1e-5, atol=1e-6)
  # The first kernel step moves it by exactly lr * |w| (the trust ratio's point).
  if steps == 1:
    np.testing.assert_allclose(np.linalg.norm(w - W0), LR * np.linalg.norm(W0), rtol=1e-5)


@pytest.mark.parametrize('steps', [1, 3])
def test_lars_steps_equal_the_trust_ratio_update_by_hand(steps):
  w, b = _run('lars', steps, momentum=0.8, trust_coefficient=0.02)
  w_ref, b_ref = _lars_by_hand(steps, momentum=0.8, eta=0.02)
  np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(b, b_ref, rtol=1e-5, atol=1e-7)
  if steps == 1:  # |step| = lr * eta * |w|.
    np.testing.assert_allclose(np.linalg.norm(w - W0), LR * 0.02 * np.linalg.norm(W0), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Bad input: one line naming the field.


@pytest.mark.parametrize('fields, match', [
    ({'optimizer': 'sgd'},
     r"train.optimizer must be one of \('adamw', 'lamb', 'lars'\), got 'sgd'"),
    ({'lr_scaling': 'cubic'}, r"train.lr_scaling must be one of \('none', 'linear', 'sqrt'\)"),
    ({'lr_scaling': 'sqrt'}, r"train.base_batch_size must be a positive int under "
                             r"train.lr_scaling='sqrt'.*got 0"),
    ({'schedule': 'linear'}, 'train.schedule must be one of'),
])
def test_unknown_optimizer_or_rule_is_a_usage_error_naming_the_field(fields, match):
  config = _train_config(**fields)
  with pytest.raises(errors.UsageError, match=match) as e:
    optimizer.create_optimizer(config, total_steps=10)
  assert '\n' not in str(e.value)


def test_a_batch_that_does_not_split_into_devices_x_microbatches_names_the_fields():
  eight = types.SimpleNamespace(devices=np.empty(8))  # check_batch_size reads the device count.
  sharding.check_batch_size(48, 'train.batch_size', eight, 2)  # 2 microbatches of 24 = 8 x 3.
  with pytest.raises(errors.UsageError, match=r'^train.batch_size=40 must be a positive multiple '
                     r'of 16: the number of devices \(8\) x train.grad_accum_steps=2$'):
    sharding.check_batch_size(40, 'train.batch_size', eight, 2)  # 40 % 8 == 0, but 20 % 8 != 0.
  with pytest.raises(errors.UsageError, match=r'^train.batch_size=12 must be a positive multiple '
                     r'of the number of devices \(8\)$'):
    sharding.check_batch_size(12, 'train.batch_size', eight)
  with pytest.raises(errors.UsageError, match='train.grad_accum_steps must be a positive int'):
    sharding.check_batch_size(16, 'train.batch_size', eight, 0)
  config = _train_config(batch_size=8, grad_accum_steps=3)
  with pytest.raises(errors.UsageError, match=r'train.batch_size=8 .*train.grad_accum_steps=3'):
    train_step.make_train_step(config, sharding.make_mesh())


# --------------------------------------------------------------------------------------------------
# The rate a run used, in config.json; a resumed run keeps it.


def test_config_json_records_the_effective_rate_and_resumes_compatibly(tmp_path):
  config = _train_config(lr_scaling='linear', base_batch_size=4, batch_size=8, learning_rate=1e-3,
                         warmup_steps=5)
  workdir_lib.save_config(config, str(tmp_path))
  saved = json.loads((tmp_path / workdir_lib.CONFIG_JSON).read_text())
  # 1e-3 * 8 / 4; ceil(5 * 4 / 8) = 3.
  assert saved['effective'] == {'learning_rate': 2e-3, 'warmup_steps': 3, 'lr_factor': 2.0}
  assert saved['train']['learning_rate'] == 1e-3 and saved['train']['lr_scaling'] == 'linear'
  # Read back, the record is not a config section; the config is the one saved.
  as_json = lambda c: json.loads(c.to_json_best_effort())
  assert as_json(workdir_lib.load_config(str(tmp_path))) == as_json(config)
  # A workdir without a finished checkpoint trained nothing: it takes any config.
  (tmp_path / 'checkpoints').mkdir()
  workdir_lib.check_compatible(_train_config(optimizer='lamb'), str(tmp_path))
  (tmp_path / 'checkpoints' / '5').mkdir()  # A trained workdir: check_compatible compares.
  workdir_lib.check_compatible(config, str(tmp_path))
  for field, value in (('lr_scaling', 'sqrt'), ('base_batch_size', 8), ('optimizer', 'lamb'),
                       ('trust_coefficient', 0.01)):
    other = _train_config(**(config.train.to_dict() | {field: value}))
    with pytest.raises(errors.UsageError, match=f'train.{field}: '):
      workdir_lib.check_compatible(other, str(tmp_path))
  # A run saved before these fields existed (no 'effective', no train.optimizer ...) trained with
  # what their defaults give: today's config resumes it.
  old = {k: v for k, v in saved.items() if k != 'effective'}
  old['train'] = {k: v for k, v in old['train'].items() if k not in (
      'optimizer', 'lr_scaling', 'base_batch_size', 'momentum', 'trust_coefficient')}
  (tmp_path / workdir_lib.CONFIG_JSON).write_text(json.dumps(old))
  workdir_lib.check_compatible(load_config('tiny'), str(tmp_path))
  # A bad rule is refused before config.json is written.
  with pytest.raises(errors.UsageError, match='train.lr_scaling'):
    workdir_lib.save_config(_train_config(lr_scaling='log'), str(tmp_path / 'new'))
  assert not (tmp_path / 'new').exists()


def test_lamb_run_with_a_scaled_rate_resumes_from_its_checkpoint(tiny_config, tmp_path):
  from vivano_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config
  # A constant schedule: the resumed run's programs are then the first run's, compiled once (the
  # persistent compilation cache), where a cosine schedule's length would change them.
  config.train.update(optimizer='lamb', lr_scaling='sqrt', base_batch_size=2, num_steps=4,
                      checkpoint_every_steps=4, schedule='constant')
  config.export.at_end = False
  train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['effective']['learning_rate'] == pytest.approx(2 * config.train.learning_rate)
  assert saved['effective']['warmup_steps'] == 2  # ceil(5 * 2 / 8).
  config.train.num_steps = 6  # More steps: resumes the LAMB state from step 4.
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['checkpoint_step'] == 6
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()
                ) == [4, 6]
