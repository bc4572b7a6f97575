"""The train state and one optimisation step, jitted over the device mesh.

The global batch is sharded along the mesh axis 'data'; the state is replicated. XLA inserts the
gradient all-reduce, and BatchNorm statistics are computed over the global batch, so the result does
not depend on the number of devices.
"""

import functools
from typing import Any, Optional

import flax
from clu import metrics as clu_metrics
from flax.training import train_state
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import optax

from vivano_jax import model as model_lib
from vivano_jax import optimizer
from vivano_jax import sharding
from vivano_jax.model import losses


class TrainState(train_state.TrainState):
  """Parameters, optimizer state, BatchNorm statistics and the rng key; all checkpointed."""
  batch_stats: Any = None
  rng: jax.Array = None


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  recon: clu_metrics.Average.from_output('recon')
  kl: clu_metrics.Average.from_output('kl')
  nll: clu_metrics.Average.from_output('nll')
  ssim: clu_metrics.Average.from_output('ssim')
  seg: clu_metrics.Average.from_output('seg')
  grad_norm: clu_metrics.Average.from_output('grad_norm')


INIT_CPU_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def _state_init(config: ml_collections.ConfigDict, model: model_lib.ViVAno, total_steps: int):
  """key -> the initial train state (not jitted)."""
  s = config.dataset.image_size
  dummy = jnp.zeros((1, s, s, config.dataset.channels), jnp.float32)
  tx = optimizer.create_optimizer(config, total_steps)

  def init(key):
    init_key, state_key = jax.random.split(key)
    variables = model.init({'params': init_key, 'latent': init_key}, dummy, train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             batch_stats=variables.get('batch_stats', {}), tx=tx, rng=state_key)

  return init


def create_train_state(config: ml_collections.ConfigDict, model: model_lib.ViVAno, total_steps: int,
                       mesh: Mesh) -> TrainState:
  """Initialises the replicated train state from `config.seed`."""
  # The initialisation runs once, and is mostly the threefry bits of every parameter: XLA:CPU
  # compiles it 2-3x faster at LLVM optimisation level 1 than at its default 3, to the same bits
  # (tests/test_train.py checks them).
  options = INIT_CPU_COMPILER_OPTIONS if mesh.devices.flat[0].platform == 'cpu' else None
  return jax.jit(_state_init(config, model, total_steps), out_shardings=sharding.replicated(mesh),
                 compiler_options=options)(jax.random.PRNGKey(config.seed))


def abstract_train_state(config: ml_collections.ConfigDict, model: model_lib.ViVAno,
                         total_steps: int, mesh: Mesh) -> TrainState:
  """The train state's shapes, dtypes and (replicated) shardings, as `jax.ShapeDtypeStruct`
  leaves; nothing is computed."""
  shapes = jax.eval_shape(_state_init(config, model, total_steps), jax.random.PRNGKey(config.seed))
  replicated = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)


def _loss_and_grads(state: TrainState, params, batch_stats, batch: dict[str, jax.Array],
                    rng: jax.Array, loss_weights: dict[str, float]):
  """Gradients of the loss on one (micro)batch: (grads, loss terms, updated BatchNorm statistics).

  batch: {'image': model input [B, S, S, C]} and, with synthetic anomalies, 'target' (the clean
  images), 'patch_weights' [B, h, w] and 'mask' [B, S, S] (`train.synthetic_batches`).
  """
  images = batch['image']

  def loss_fn(p):
    out, updates = state.apply_fn({'params': p, 'batch_stats': batch_stats}, images, train=True,
                                  rngs={'latent': rng}, mutable=['batch_stats'])
    loss, terms = losses.vivano_loss(out, batch.get('target', images),
                                     patch_weights=batch.get('patch_weights'),
                                     masks=batch.get('mask'), **loss_weights)
    return loss, (terms, updates['batch_stats'])

  (_, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return grads, terms, new_stats


def _accumulated(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array,
                 loss_weights: dict[str, float], accum_steps: int, mesh: Optional[Mesh],
                 unroll: bool):
  """`_loss_and_grads` averaged over `accum_steps` microbatches of the batch: a rolled loop
  (`lax.scan`: one microbatch's activations in memory), or unrolled (see `train_step`)."""
  b = batch['image'].shape[0]
  # Row j of microbatch i is global row j * k + i: every device holds a slice of every microbatch.
  micro = jax.tree.map(
      lambda x: x.reshape((b // accum_steps, accum_steps) + x.shape[1:]).swapaxes(0, 1), batch)
  if mesh is not None:
    micro = jax.lax.with_sharding_constraint(micro, NamedSharding(mesh, P(None, 'data')))

  def body(carry, xs):
    grad_sum, terms_sum, stats = carry
    i, x = xs
    g, t, stats = _loss_and_grads(state, state.params, stats, x, jax.random.fold_in(rng, i),
                                  loss_weights)
    return (jax.tree.map(jnp.add, grad_sum, g), jax.tree.map(jnp.add, terms_sum, t), stats), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  zero_terms = {k: jnp.zeros((), jnp.float32) for k in losses.TERMS}
  (grads, terms, batch_stats), _ = jax.lax.scan(
      body, (zeros, zero_terms, state.batch_stats), (jnp.arange(accum_steps), micro),
      unroll=unroll)
  grads = jax.tree.map(lambda g: g / accum_steps, grads)
  terms = jax.tree.map(lambda t: t / accum_steps, terms)
  return grads, terms, batch_stats


def train_step(state: TrainState, batch: dict[str, jax.Array], loss_weights: dict[str, float],
               accum_steps: int = 1, mesh: Optional[Mesh] = None, unroll: Optional[bool] = None
               ) -> tuple[TrainState, TrainMetrics]:
  """One optimisation step on the global batch {'image': [B, S, S, C]} (see `_loss_and_grads`).

  With accum_steps = k > 1 the batch is processed as k microbatches of B / k (each spread over all
  devices) and their gradients averaged, so activation memory is that of B / k. Latent samples and
  BatchNorm statistics are then per microbatch (BatchNorm statistics are carried from one microbatch
  to the next); with a deterministic bottleneck and no BatchNorm the step equals one step on B
  exactly.

  The microbatches run in a rolled loop (`lax.scan`) on accelerators, unrolled on CPUs (`unroll`
  None: by the default backend). XLA:CPU runs the loop body 5-20x slower than the same
  operations unrolled (BENCHMARKS.md), and unrolled its scheduler keeps about the whole batch's
  activations alive: on a CPU accumulation gives the same step, not less memory.
  """
  if unroll is None:
    unroll = jax.default_backend() == 'cpu'
  rng = jax.random.fold_in(state.rng, state.step)
  if accum_steps == 1:
    grads, terms, batch_stats = _loss_and_grads(state, state.params, state.batch_stats, batch, rng,
                                                loss_weights)
  else:
    grads, terms, batch_stats = _accumulated(state, batch, rng, loss_weights, accum_steps, mesh,
                                             unroll)
  terms['grad_norm'] = optax.global_norm(grads)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, TrainMetrics.single_from_model_output(**terms)


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
  return {'recon_weight': config.loss.recon_weight, 'kl_weight': config.loss.kl_weight,
          'nll_weight': config.loss.nll_weight, 'ssim_weight': config.loss.ssim_weight,
          'seg_weight': config.loss.seg_weight}


def make_train_step(config: ml_collections.ConfigDict, mesh: Mesh):
  """The jitted train step: batch sharded on 'data', state replicated and donated."""
  replicated, sharded = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  k = config.train.grad_accum_steps
  sharding.check_batch_size(config.train.batch_size, 'train.batch_size', mesh, k)
  return jax.jit(functools.partial(train_step, loss_weights=loss_weights(config), accum_steps=k,
                                   mesh=mesh),
                 in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                 donate_argnums=(0,))
