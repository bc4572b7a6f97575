"""The optimizer: AdamW, LAMB or LARS on a learning-rate schedule, after per-part gradient clipping;
the learning rate and warmup scaled to the batch size by the config's rule."""

import math
from typing import Any, Callable

import jax
import ml_collections
import optax

from vivano_jax import errors

SCHEDULES = ('warmup_cosine', 'constant')
OPTIMIZERS = ('adamw', 'lamb', 'lars')
LR_SCALINGS = ('none', 'linear', 'sqrt')
LAMB_EPS = 1e-6  # optax.lamb's and the LAMB paper's; AdamW keeps optax.adamw's 1e-8.


def weight_decay_mask(params) -> Any:
  """True for the leaves weight decay applies to: the weight matrices and convolution kernels, by name
  ('kernel'). Biases, norm scales and offsets, the class token and the position embeddings (the
  encoder's and the density head's) are exempt.

  LAMB and LARS apply their layer-wise trust ratio to the same leaves: a bias starts at zero and a
  norm offset near it, where |w| / |update| would all but freeze it (the practice of the LAMB and
  LARS reference implementations); the exempt leaves take plain Adam or momentum steps.
  """
  def decays(path, _):
    return getattr(path[-1], 'key', None) == 'kernel'
  return jax.tree_util.tree_map_with_path(decays, params)


PARTS = ('autoencoder', 'density', 'segmenter')  # Clipped separately (`gradient_clipping`).


def _part(params) -> Any:
  """'density' for the mixture density head's parameters, 'segmenter' for the segmentation
  head's, 'autoencoder' for the rest."""
  def part(name):
    return next((p for p in PARTS[1:] if name.startswith(p)), 'autoencoder')
  return {k: jax.tree.map(lambda _, k=k: part(k), v) for k, v in params.items()}


def _one_of(field: str, value: Any, options: tuple[str, ...]) -> None:
  if value not in options:
    raise errors.UsageError(f'{field} must be one of {options}, got {value!r}')


def scaled_hyperparameters(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The peak learning rate and warmup a run trains with, from `train.lr_scaling`: the one place the
  rule is computed. The optimizer of every entry point (train, and the restores of export, predict
  and benchmark) is built from it, and workdir.save_config records it in config.json, so a run's
  rate is never recomputed elsewhere (sweeps only set the fields).

  'none': `train.learning_rate` and `train.warmup_steps` as they are. 'linear' / 'sqrt': both are
  given at the global batch B0 = `train.base_batch_size`; at B = `train.batch_size` the rate is
  multiplied by B / B0 (Goyal et al. 2017, for SGD) or sqrt(B / B0) (which keeps the gradient
  noise of Adam-type updates), and the warmup is ceil(warmup_steps * B0 / B) steps: the same number
  of images, as a budget in epochs has the same number of images at every batch size.

  Returns {'learning_rate': float, 'warmup_steps': int, 'lr_factor': float}; UsageError naming the
  field for an unknown optimizer or rule or a missing base batch.
  """
  t = config.train
  _one_of('train.optimizer', t.optimizer, OPTIMIZERS)
  _one_of('train.lr_scaling', t.lr_scaling, LR_SCALINGS)
  if t.lr_scaling == 'none':
    return {'learning_rate': t.learning_rate, 'warmup_steps': t.warmup_steps, 'lr_factor': 1.0}
  b0, b = t.base_batch_size, t.batch_size
  if not isinstance(b0, int) or b0 <= 0:
    raise errors.UsageError(
        f'train.base_batch_size must be a positive int under train.lr_scaling={t.lr_scaling!r} '
        f'(the global batch at which train.learning_rate and train.warmup_steps are given), got '
        f'{b0!r}')
  if b <= 0:
    raise errors.UsageError(f'train.batch_size must be positive, got {b}')
  factor = b / b0 if t.lr_scaling == 'linear' else math.sqrt(b / b0)
  return {'learning_rate': t.learning_rate * factor,
          'warmup_steps': -(-t.warmup_steps * b0 // b),  # Integer ceil: exact.
          'lr_factor': factor}


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`train.schedule`: 'warmup_cosine' (linear warmup, cosine decay to 0) or 'constant' (the rate
  throughout, as the paper states it); rate and warmup from `scaled_hyperparameters`."""
  t, scaled = config.train, scaled_hyperparameters(config)
  if t.schedule == 'constant':
    return optax.constant_schedule(scaled['learning_rate'])
  if t.schedule != 'warmup_cosine':
    raise errors.UsageError(f'train.schedule must be one of {SCHEDULES}, got {t.schedule!r}')
  warmup = min(scaled['warmup_steps'], max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=scaled['learning_rate'], warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def _adamw(lr: optax.Schedule, t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adamw(lr, weight_decay=t.weight_decay, mask=weight_decay_mask)


def _lamb(lr: optax.Schedule, t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """optax.lamb, its trust ratio on `weight_decay_mask`'s leaves only (optax.lamb scales all)."""
  return optax.chain(
      optax.scale_by_adam(eps=LAMB_EPS),
      optax.add_decayed_weights(t.weight_decay, mask=weight_decay_mask),
      optax.masked(optax.scale_by_trust_ratio(), weight_decay_mask),
      optax.scale_by_learning_rate(lr))


def _lars(lr: optax.Schedule, t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.lars(lr, weight_decay=t.weight_decay, weight_decay_mask=weight_decay_mask,
                    trust_coefficient=t.trust_coefficient, trust_ratio_mask=weight_decay_mask,
                    momentum=t.momentum)


_BUILDERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    'adamw': _adamw, 'lamb': _lamb, 'lars': _lars}


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int
                     ) -> optax.GradientTransformation:
  """`train.optimizer` ('adamw', 'lamb' or 'lars'; weight decay on `weight_decay_mask` for all
  three) on the `train.schedule`, after gradient clipping.

  Clipping (`train.grad_clip_norm`) is by the global norm of each part separately: the autoencoder
  (encoder, VAE, decoder), the density head and the segmenter. The head's NLL gradients are large
  early in training and would otherwise set the clipping factor of the autoencoder's step too,
  although, under `density.stop_gradient`, the NLL does not train the autoencoder; the segmenter
  likewise trains on a stop-gradient reconstruction.
  """
  schedule = learning_rate_schedule(config, total_steps)  # Checks the optimizer and rule first.
  return optax.chain(gradient_clipping(config.train.grad_clip_norm,
                                       segmenter=bool(config.model.get('segmenter_features'))),
                     _BUILDERS[config.train.optimizer](schedule, config.train))


def gradient_clipping(max_norm: float, segmenter: bool = False) -> optax.GradientTransformation:
  """Clips the gradients of each of `PARTS` to global norm `max_norm` (identity when max_norm <=
  0). The 'segmenter' part is there only for a model that has one, so the optimizer state of a
  model without it keeps the structure its checkpoints were saved with."""
  if max_norm <= 0:
    return optax.identity()
  clip = optax.clip_by_global_norm(max_norm)
  parts = PARTS if segmenter else tuple(p for p in PARTS if p != 'segmenter')
  return optax.multi_transform({part: clip for part in parts}, _part)
