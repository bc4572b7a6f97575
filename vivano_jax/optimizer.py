"""The optimizer: AdamW on a learning-rate schedule, after per-part gradient clipping."""

from typing import Any

import jax
import ml_collections
import optax

from vivano_jax import errors

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
    raise errors.UsageError(f'train.schedule must be one of {SCHEDULES}, got {t.schedule!r}')
  warmup = min(t.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int
                     ) -> optax.GradientTransformation:
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
