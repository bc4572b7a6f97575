"""Training and evaluation of ViV-Ano, data-parallel with `jax.jit` over a device mesh.

The global batch is sharded along the mesh axis 'data' (one slice per device, across all hosts); the train
state is replicated. XLA inserts the gradient all-reduce, and BatchNorm statistics are computed over the
global batch, so the result does not depend on the number of devices.
"""

import functools
import os
import time
from typing import Any, Iterator, Optional

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
import flax
from flax.training import train_state
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from PIL import Image

from vivano_jax import atomic_files
from vivano_jax import input_pipeline
from vivano_jax.model import losses
from vivano_jax import metrics as metrics_lib
from vivano_jax import model as model_lib
from vivano_jax import score_selection
from vivano_jax import scoring
from vivano_jax import synthetic

LOSS_TERMS = ('loss', 'recon', 'kl', 'nll', 'ssim', 'grad_norm')


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
  grad_norm: clu_metrics.Average.from_output('grad_norm')


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh over every device of every process, axis 'data'."""
  return Mesh(np.array(devices if devices is not None else jax.devices()), ('data',))


def check_batch_size(batch_size: int, field: str, mesh: Mesh) -> None:
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    raise ValueError(f'{field}={batch_size} must be a positive multiple of the number of devices ({n})')


SCHEDULES = ('warmup_cosine', 'constant')


def weight_decay_mask(params) -> Any:
  """True for the leaves weight decay applies to: the weight matrices and convolution kernels, by name
  ('kernel'). Biases, norm scales and offsets, the class token and the position embeddings (the
  encoder's and the density head's) are exempt."""
  def decays(path, _):
    return getattr(path[-1], 'key', None) == 'kernel'
  return jax.tree_util.tree_map_with_path(decays, params)


def _part(params) -> Any:
  """'density' for the mixture density head's parameters, 'autoencoder' for the rest."""
  return {k: jax.tree.map(lambda _, k=k: 'density' if k.startswith('density') else 'autoencoder', v)
          for k, v in params.items()}


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`train.schedule`: 'warmup_cosine' (linear warmup over `train.warmup_steps`, cosine decay to 0)
  or 'constant' (`train.learning_rate` throughout, as the paper states it)."""
  t = config.train
  if t.schedule == 'constant':
    return optax.constant_schedule(t.learning_rate)
  if t.schedule != 'warmup_cosine':
    raise ValueError(f'train.schedule must be one of {SCHEDULES}, got {t.schedule!r}')
  warmup = min(t.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """AdamW (`weight_decay_mask`) on the `train.schedule`, after gradient clipping.

  Clipping (`train.grad_clip_norm`) is by the global norm of each part separately: the autoencoder
  (encoder, VAE, decoder) and the density head. The head's NLL gradients are large early in training
  and would otherwise set the clipping factor of the autoencoder's step too, although, under
  `density.stop_gradient`, the NLL does not train the autoencoder.
  """
  t = config.train
  return optax.chain(
      gradient_clipping(t.grad_clip_norm),
      optax.adamw(learning_rate_schedule(config, total_steps), weight_decay=t.weight_decay,
                  mask=weight_decay_mask))


def gradient_clipping(max_norm: float) -> optax.GradientTransformation:
  """Clips the autoencoder's and the density head's gradients each to global norm `max_norm`
  (identity when max_norm <= 0)."""
  if max_norm <= 0:
    return optax.identity()
  clip = optax.clip_by_global_norm(max_norm)
  return optax.multi_transform({'autoencoder': clip, 'density': clip}, _part)


def create_train_state(config: ml_collections.ConfigDict, model: model_lib.ViVAno, total_steps: int,
                       mesh: Mesh) -> TrainState:
  """Initialises the replicated train state from `config.seed`."""
  s = config.dataset.image_size
  dummy = jnp.zeros((1, s, s, config.dataset.channels), jnp.float32)
  tx = create_optimizer(config, total_steps)

  def init(key):
    init_key, state_key = jax.random.split(key)
    variables = model.init({'params': init_key, 'latent': init_key}, dummy, train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             batch_stats=variables.get('batch_stats', {}), tx=tx, rng=state_key)

  replicated = NamedSharding(mesh, P())
  return jax.jit(init, out_shardings=replicated)(jax.random.PRNGKey(config.seed))


def _loss_and_grads(state: TrainState, params, batch_stats, batch: dict[str, jax.Array],
                    rng: jax.Array, loss_weights: dict[str, float]):
  """Gradients of the loss on one (micro)batch: (grads, loss terms, updated BatchNorm statistics).

  batch: {'image': model input [B, S, S, C]} and, with synthetic anomalies, 'target' (the clean
  images) and 'patch_weights' [B, h, w] (`synthetic_batches`).
  """
  images = batch['image']

  def loss_fn(p):
    out, updates = state.apply_fn({'params': p, 'batch_stats': batch_stats}, images, train=True,
                                  rngs={'latent': rng}, mutable=['batch_stats'])
    loss, terms = losses.vivano_loss(out, batch.get('target', images),
                                     patch_weights=batch.get('patch_weights'), **loss_weights)
    return loss, (terms, updates['batch_stats'])

  (_, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return grads, terms, new_stats


def train_step(state: TrainState, batch: dict[str, jax.Array], loss_weights: dict[str, float],
               accum_steps: int = 1, mesh: Optional[Mesh] = None) -> tuple[TrainState, TrainMetrics]:
  """One optimisation step on the global batch {'image': [B, S, S, C]} (see `_loss_and_grads`).

  With accum_steps = k > 1 the batch is processed as k microbatches of B / k (each spread over all
  devices) and their gradients averaged, so activation memory is that of B / k. Latent samples and
  BatchNorm statistics are then per microbatch (BatchNorm statistics are carried from one microbatch to
  the next); with a deterministic bottleneck and no BatchNorm the step equals one step on B exactly.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  if accum_steps == 1:
    grads, terms, batch_stats = _loss_and_grads(state, state.params, state.batch_stats, batch, rng,
                                                loss_weights)
  else:
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
    zero_terms = {k: jnp.zeros((), jnp.float32) for k in ('loss', 'recon', 'kl', 'nll', 'ssim')}
    (grads, terms, batch_stats), _ = jax.lax.scan(
        body, (zeros, zero_terms, state.batch_stats), (jnp.arange(accum_steps), micro))
    grads = jax.tree.map(lambda g: g / accum_steps, grads)
    terms = jax.tree.map(lambda t: t / accum_steps, terms)
  terms['grad_norm'] = optax.global_norm(grads)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, TrainMetrics.single_from_model_output(**terms)


def eval_step(state: TrainState, batch: dict[str, jax.Array], smoothing_sigma: float, decode: bool
              ) -> dict[str, Any]:
  """Scores a global batch: {'image': {component: [B]}, 'pixel': {component: [B, S, S]}, 'recon'?}."""
  out = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, batch['image'],
                       train=False, decode=decode)
  image, pixel = scoring.score_components(out, batch['image'], smoothing_sigma)
  result = {'image': image, 'pixel': pixel}
  if decode:
    result['recon'] = out['recon']
  return result


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
  return {'recon_weight': config.loss.recon_weight, 'kl_weight': config.loss.kl_weight,
          'nll_weight': config.loss.nll_weight, 'ssim_weight': config.loss.ssim_weight}


def make_train_step(config: ml_collections.ConfigDict, mesh: Mesh):
  """The jitted train step: batch sharded on 'data', state replicated and donated."""
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  k = config.train.grad_accum_steps
  if k < 1 or config.train.batch_size % k or (config.train.batch_size // k) % mesh.devices.size:
    raise ValueError(f'train.grad_accum_steps={k} must divide train.batch_size='
                     f'{config.train.batch_size} into microbatches that divide by the number of '
                     f'devices ({mesh.devices.size})')
  return jax.jit(functools.partial(train_step, loss_weights=loss_weights(config), accum_steps=k,
                                   mesh=mesh),
                 in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                 donate_argnums=(0,))


def make_eval_step(config: ml_collections.ConfigDict, mesh: Mesh, decode: bool):
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  return jax.jit(functools.partial(eval_step, smoothing_sigma=config.score.smoothing_sigma,
                                   decode=decode),
                 in_shardings=(replicated, sharded), out_shardings=sharded)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global batch from every process's local rows."""
  sharded = NamedSharding(mesh, P('data'))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharded, x), local)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # A row block may be replicated on several local devices.
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


# --------------------------------------------------------------------------------------------------
# Evaluation.


def score_split(state: TrainState, data: input_pipeline.SplitData, config: ml_collections.ConfigDict,
                mesh: Mesh, decode: bool, keep_maps: bool = True, keep_recon: int = 0
                ) -> dict[str, Any]:
  """Runs the model over a split (this process's shard), in order.

  Returns numpy arrays over this process's examples: 'image' {component: [n]}, 'pixel' {component:
  [n, S, S]} (when keep_maps), 'pixel_moments' {component: (sum [S, S], sum of squares [S, S], number of
  maps)}, 'mask' [n, S, S],
  'input' / 'recon' of the first `keep_recon` examples, and the images/s of the scoring.
  """
  local_batch = config.train.eval_batch_size // jax.process_count()
  return _score_batches(state, input_pipeline.eval_batches(data, config.dataset, local_batch),
                        config, mesh, decode, keep_maps, keep_recon)


def score_arrays(state: TrainState, images: np.ndarray, config: ml_collections.ConfigDict, mesh: Mesh
                 ) -> dict[str, Any]:
  """Scores images already at the model size (float32 [n, S, S, C] in [-1, 1]; this process's
  rows) as `score_split` does, with maps. Every process must call it with the same n."""
  local_batch = config.train.eval_batch_size // jax.process_count()
  s = images.shape[1]

  def batches():
    for start in range(0, len(images), local_batch):
      rows = images[start:start + local_batch]
      pad = local_batch - len(rows)
      yield {'image': np.concatenate([rows, np.zeros((pad,) + rows.shape[1:], rows.dtype)]),
             'mask': np.zeros((local_batch, s, s), bool),
             'valid': np.arange(local_batch) < len(rows)}

  return _score_batches(state, batches(), config, mesh, decode=True, keep_maps=True, keep_recon=0)


def _score_batches(state: TrainState, batches: Iterator[dict[str, np.ndarray]],
                   config: ml_collections.ConfigDict, mesh: Mesh, decode: bool, keep_maps: bool,
                   keep_recon: int) -> dict[str, Any]:
  """The loop of `score_split` over local batches {'image', 'mask', 'valid'}."""
  local_batch = config.train.eval_batch_size // jax.process_count()
  step_fn = make_eval_step(config, mesh, decode)
  image, pixel, masks, moments = {}, {}, [], {}
  first_inputs, first_recons = [], []
  start, n_scored = None, 0
  for batch in batches:
    out = step_fn(state, global_batch({'image': batch['image']}, mesh))
    valid = batch['valid']
    if start is None:
      jax.block_until_ready(out)  # Exclude compilation from the throughput.
      start = time.perf_counter()
    else:
      n_scored += int(valid.sum()) * jax.process_count()
    for name, v in out['image'].items():
      image.setdefault(name, []).append(local_rows(v)[valid])
    for name, v in out['pixel'].items():
      maps = local_rows(v)[valid]
      m = moments.setdefault(name, [0.0, 0.0, 0])
      m[0] = m[0] + maps.astype(np.float64).sum(axis=0)
      m[1] = m[1] + np.square(maps.astype(np.float64)).sum(axis=0)
      m[2] += len(maps)
      if keep_maps:
        pixel.setdefault(name, []).append(maps)
    masks.append(batch['mask'][valid])
    if decode and len(first_inputs) * local_batch < keep_recon:
      first_inputs.append(batch['image'][valid])
      first_recons.append(local_rows(out['recon'])[valid])
  elapsed = time.perf_counter() - start if start is not None else 0.0
  cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}
  result = {'image': cat(image), 'pixel': cat(pixel), 'pixel_moments': moments,
            'mask': np.concatenate(masks), 'images_per_sec': n_scored / elapsed if n_scored else None}
  if first_inputs:
    result['input'] = np.concatenate(first_inputs)[:keep_recon]
    result['recon'] = np.concatenate(first_recons)[:keep_recon]
  return result


def score_stats(scored: dict[str, Any]) -> scoring.ScoreStats:
  """Statistics of every score component over the scored (held-out normal) images of every process
  (`scored` holds this process's shard; the moments are gathered, so all processes get the same)."""
  image, moments = scored['image'], scored['pixel_moments']
  if jax.process_count() > 1:
    image = {k: gather_rows(v) for k, v in image.items()}
    moments = {k: tuple(np.asarray(multihost_utils.process_allgather(np.asarray(x, np.float64))
                                   ).sum(axis=0) for x in m)
               for k, m in sorted(moments.items())}
  return scoring.stats_from_moments(image, moments)


def resize_map(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of one float map [h, w] -> shape (half-pixel centres, as scoring.upsample)."""
  if m.shape == tuple(shape):
    return m
  return np.asarray(Image.fromarray(m.astype(np.float32), mode='F').resize(
      (shape[1], shape[0]), Image.BILINEAR))


def evaluation_maps(pix: np.ndarray, scored_masks: np.ndarray, data: input_pipeline.SplitData,
                    config: ml_collections.ConfigDict) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """The maps and masks pixel metrics are computed on: float32 / bool [H_i, W_i] at each mask's native
  size with `score.native_resolution` (as the official MVTec AD evaluation), else [S, S]."""
  if config.score.native_resolution:
    masks = input_pipeline.native_masks(data)
    return [resize_map(pix[i], m.shape).astype(np.float32) for i, m in enumerate(masks)], masks
  return list(pix.astype(np.float32)), list(scored_masks)


def evaluate_scores(scored: dict[str, Any], data: input_pipeline.SplitData,
                    config: ml_collections.ConfigDict, stats: Optional[scoring.ScoreStats]
                    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray],
                               dict[str, dict]]:
  """Final image scores [n], pixel maps [n, S, S], the maps and masks the metrics use
  (`evaluation_maps`), and the metrics per defect type and overall."""
  img, pix = scoring.final_scores(scored['image'], scored['pixel'], config.score, stats)
  img, pix = np.asarray(img), np.asarray(pix)
  maps, masks = evaluation_maps(pix, scored['mask'], data, config)
  per_type = metrics_lib.per_defect_type(img, data.labels, data.defect_types, maps=maps,
                                         masks=masks, has_mask=data.has_mask)
  return img, pix, maps, masks, per_type


def _normalise(x: np.ndarray) -> np.ndarray:
  lo, hi = np.percentile(x, 1), np.percentile(x, 99)
  return np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def tensorboard_images(scored: dict[str, Any], image_scores: np.ndarray, pixel_maps: np.ndarray,
                       n: int) -> dict[str, np.ndarray]:
  """Inputs, reconstructions, anomaly maps and masks as [n, S, S, 1 or 3] images in [0, 1]; the maps
  and masks of the n images with the highest final image scores [N] (`score.image`)."""
  order = np.argsort(-np.asarray(image_scores), kind='stable')  # Most anomalous first.
  images = {}
  if 'input' in scored:
    k = min(n, len(scored['input']))
    images['input'] = (scored['input'][:k] + 1.0) / 2.0
    images['reconstruction'] = (scored['recon'][:k] + 1.0) / 2.0
  top = order[:n]
  images['anomaly_map_top'] = _normalise(pixel_maps)[top][..., None]
  images['mask_top'] = scored['mask'][top][..., None].astype(np.float32)
  return images


# --------------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True))


def save_checkpoint(mngr: ocp.CheckpointManager, state: TrainState, meta: dict[str, Any]) -> None:
  step = int(meta['step'])
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)


def restore_checkpoint(mngr: ocp.CheckpointManager, state: TrainState, step: Optional[int] = None
                       ) -> tuple[TrainState, dict[str, Any]]:
  """Restores `step` (default the latest) into the shape and shardings of `state`."""
  step = mngr.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        meta=ocp.args.JsonRestore()))
  return restored['state'], dict(restored['meta'])


# --------------------------------------------------------------------------------------------------
# The loop.


def total_train_steps(config: ml_collections.ConfigDict, num_train_global: int) -> int:
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  if config.train.num_epochs <= 0:
    raise ValueError('set train.num_steps or train.num_epochs to a positive number')
  return int(config.train.num_epochs * -(-num_train_global // config.train.batch_size))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = os.path.join(workdir, 'config.json.tmp')
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, 'config.json'))


def synthetic_batches(batches: Iterator[dict[str, np.ndarray]], config: ml_collections.ConfigDict,
                      start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """Local batches with synthetic anomalies drawn on a `train.synthetic_anomalies` fraction of the
  inputs ({'image', 'target', 'patch_weights'}; synthetic.py). Seeded by (seed, step, process), so a
  resumed run draws the same anomalies."""
  p = config.train.synthetic_anomalies
  if not 0.0 <= p <= 1.0:
    raise ValueError(f'train.synthetic_anomalies must be in [0, 1], got {p}')
  for step, batch in enumerate(batches, start=start_step):
    rng = np.random.default_rng([config.seed, step, jax.process_index(), 1])
    inputs, masks = synthetic.corrupt_batch(batch['image'], p, rng)
    yield {'image': inputs, 'target': batch['image'],
           'patch_weights': synthetic.patch_weights(masks, config.model.patch_size)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates on the test split.

  Returns a summary dict: metrics per defect type, throughput, paths.
  """
  mesh = make_mesh()
  check_batch_size(config.train.batch_size, 'train.batch_size', mesh)
  check_batch_size(config.train.eval_batch_size, 'train.eval_batch_size', mesh)
  if config.train.batch_size % jax.process_count():
    raise ValueError(f'train.batch_size={config.train.batch_size} must divide by the number of '
                     f'processes ({jax.process_count()})')
  save_config(config, workdir)
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)

  data = input_pipeline.load(config, tuple(dict.fromkeys(
      ('train', input_pipeline.heldout_split(config), 'test'))))
  num_train = int(multihost_utils.process_allgather(np.array(len(data['train']))).sum()
                  ) if jax.process_count() > 1 else len(data['train'])
  total_steps = total_train_steps(config, num_train)
  model = model_lib.create_model(config)
  state = create_train_state(config, model, total_steps, mesh)
  mngr = checkpoint_manager(workdir, config)
  start_step = 0
  if mngr.latest_step() is not None:
    state, meta = restore_checkpoint(mngr, state)
    start_step = int(meta['step'])
    logging.info('Resumed from checkpoint step %d in %s', start_step, workdir)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in config.to_dict().items() if not isinstance(v, dict)} | {
        f'{sec}.{k}': v for sec, d in config.to_dict().items() if isinstance(d, dict)
        for k, v in d.items() if isinstance(v, (int, float, str, bool))})

  local_batch = config.train.batch_size // jax.process_count()
  batches = input_pipeline.train_batches(data['train'], config.dataset, local_batch, config.seed,
                                         start_step)
  if config.train.synthetic_anomalies > 0:
    batches = synthetic_batches(batches, config, start_step)
  step_fn = make_train_step(config, mesh)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  hooks = [report] if is_chief else []
  meta = lambda step: {'step': step, 'data_position': step * config.train.batch_size}

  train_metrics, pending = None, None
  timing_start, timed_steps = None, 0
  logging.info('Training %d steps (from %d), global batch %d on %d devices', total_steps, start_step,
               config.train.batch_size, mesh.devices.size)

  def check_finite(step, m):
    loss = float(m.loss.compute())
    if not np.isfinite(loss):
      raise FloatingPointError(f'non-finite training loss ({loss}) at step {step}; training stopped. '
                               f'The last good checkpoint in {workdir}/checkpoints is intact.')

  try:
    for step in range(start_step + 1, total_steps + 1):
      state, m = step_fn(state, global_batch(next(batches), mesh))
      # Check the previous step's loss while this one runs, so the host does not stall the device.
      if pending is not None:
        check_finite(*pending)
      pending = (step, m)
      train_metrics = m if train_metrics is None else train_metrics.merge(m)
      for h in hooks:
        h(step)
      if step == start_step + 1:
        jax.block_until_ready(state)
        timing_start = time.perf_counter()
      else:
        timed_steps += 1
      if step % config.train.log_every_steps == 0 or step == total_steps:
        check_finite(*pending)
        writer.write_scalars(step, {f'train/{k}': float(v) for k, v in train_metrics.compute().items()})
        train_metrics = None
      if step % config.train.checkpoint_every_steps == 0 or step == total_steps:
        check_finite(*pending)
        save_checkpoint(mngr, state, meta(step))
  finally:
    # Commit the last good checkpoint even when training stops with an error.
    mngr.wait_until_finished()
  jax.block_until_ready(state)
  train_ips = (timed_steps * config.train.batch_size / (time.perf_counter() - timing_start)
               if timed_steps else None)
  if total_steps > start_step and mngr.latest_step() != total_steps:
    save_checkpoint(mngr, state, meta(total_steps))
  mngr.wait_until_finished()

  # With `score.select`, the score is chosen on held-out normals and synthetic anomalies first.
  config, selection = score_selection.resolve(config, workdir, state, heldout_normals(data, config),
                                              mesh)
  summary = evaluate_run(state, data, config, mesh, writer, total_steps)
  summary['score'] = {k: config.score[k] for k in ('image', 'pixel', 'normalize')}
  if config.score.image in scoring.MAP_SCORES:
    summary['score']['image_map'] = scoring.image_map_kind(config.score)
  summary['score_selection'] = selection
  summary['train_images_per_sec'] = train_ips
  summary['checkpoint_step'] = total_steps
  summary['workdir'] = os.path.abspath(workdir)
  if is_chief:
    atomic_files.write_json(os.path.join(workdir, 'metrics.json'), summary)
  writer.flush()
  mngr.close()
  return summary


def heldout_normals(data: dict[str, input_pipeline.SplitData], config: ml_collections.ConfigDict
                    ) -> input_pipeline.SplitData:
  """This process's normal images of the held-out split (`input_pipeline.heldout_split`); the
  training images when that split holds no normal image."""
  split = input_pipeline.heldout_split(config)
  normal = data[split].labels == 0
  if jax.process_count() > 1:
    any_normal = bool(multihost_utils.process_allgather(np.array(normal.any())).any())
  else:
    any_normal = bool(normal.any())
  if not any_normal:
    logging.warning('the %s split has no normal image; score statistics from the training images',
                    split)
    return data['train']
  return data[split].subset(normal)


def evaluate_run(state: TrainState, data: dict[str, input_pipeline.SplitData],
                 config: ml_collections.ConfigDict, mesh: Mesh, writer, step: int) -> dict[str, Any]:
  """Scores the test split (and the held-out normals first when the scores need their statistics)."""
  decode = scoring.needs_decoder(config.score)
  stats = None
  if scoring.needs_stats(config.score):
    stats = score_stats(score_split(state, heldout_normals(data, config), config, mesh, decode,
                                    keep_maps=False))
  n_tb = config.train.num_tensorboard_images
  # Reconstructions are always shown in TensorBoard, so decode the test split.
  scored = score_split(state, data['test'], config, mesh, decode=True, keep_recon=n_tb)
  if jax.process_count() > 1:
    scored = gather_scored(scored)
    # Shards are contiguous slices in process order, so the gathered rows follow the whole split.
    data_all = input_pipeline.load(config, ('test',), process_index=0, process_count=1)['test']
  else:
    data_all = data['test']
  img, pix, _, _, per_type = evaluate_scores(scored, data_all, config, stats)
  overall = per_type['overall']
  scalars = {f'test/{k}': v for k, v in overall.items() if v is not None}
  writer.write_scalars(step, scalars)
  writer.write_images(step, tensorboard_images(scored, img, pix, n_tb))
  return {'metrics': per_type, 'score_images_per_sec': scored['images_per_sec'],
          'score_stats': scoring.scalar_stats(stats), 'num_test_images': int(len(data_all))}


def gather_scored(scored: dict[str, Any]) -> dict[str, Any]:
  """Every process's scores, concatenated in process order (for metrics over the whole split)."""
  gather = gather_rows
  out = dict(scored)
  out['image'] = {k: gather(v) for k, v in scored['image'].items()}
  out['pixel'] = {k: gather(v) for k, v in scored['pixel'].items()}
  out['mask'] = gather(scored['mask'])
  return out


def gather_rows(x: np.ndarray) -> np.ndarray:
  n = multihost_utils.process_allgather(np.array(len(x)))
  pad = int(n.max()) - len(x)
  allx = multihost_utils.process_allgather(np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]))
  return np.concatenate([allx[i, :int(n[i])] for i in range(len(n))])
