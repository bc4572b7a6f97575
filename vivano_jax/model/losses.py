"""The training objective: reconstruction MSE (+ SSIM) + beta * KL + lambda * mixture NLL
(+ the segmenter's focal loss, with a segmenter)."""

import jax
import jax.numpy as jnp
import optax

from vivano_jax import score_maps

Array = jax.Array

# What `vivano_loss` returns besides the loss.
TERMS = ('loss', 'recon', 'kl', 'nll', 'ssim', 'seg')


def vivano_loss(outputs: dict[str, Array], images: Array, recon_weight: float, kl_weight: float,
                nll_weight: float, ssim_weight: float = 0.0, patch_weights: Array | None = None,
                seg_weight: float = 0.0, masks: Array | None = None
                ) -> tuple[Array, dict[str, Array]]:
  """The weighted loss and each term, all scalars.

  images: [B, H, W, C] in [-1, 1], the reconstruction target (the clean image, also where the
    model's input carried a synthetic anomaly).
  patch_weights: [B, h, w] weights of each patch's NLL (0 for patches a synthetic anomaly touches,
    so the density models normal patches only); None = all 1.

  recon: mean squared error per pixel and channel.
  kl: KL(q(z|x) || N(0, I)) in nats per input value: each patch's KL (summed over its d_z latent
    dims) divided by the P * P * C values the patch covers, averaged over patches. In the same unit
    as the MSE, so a `loss.kl_weight` means the same at every patch size and channel count.
  nll: mixture NLL in nats per patch, averaged over patches.
  ssim: mean of 1 - SSIM(x, x_hat) per pixel (only computed when ssim_weight > 0).
  seg: the sigmoid focal loss (gamma 2; Lin et al. 2017, as DRAEM) of outputs['seg_logits']
    [B, H, W] against `masks` [B, H, W] (1 where a synthetic anomaly was drawn), per pixel; 0
    when the model has no segmenter.
  """
  b, h, w, c = images.shape
  grid_h, grid_w = outputs['kl'].shape[1:3]
  values_per_patch = (h // grid_h) * (w // grid_w) * c
  terms = {
      'recon': jnp.mean(score_maps.squared_error_map(images, outputs['recon'])),
      'kl': jnp.mean(outputs['kl']) / values_per_patch,
      'nll': jnp.mean(outputs['nll']) if patch_weights is None else (
          jnp.sum(outputs['nll'] * patch_weights) / jnp.maximum(jnp.sum(patch_weights), 1.0)),
  }
  loss = recon_weight * terms['recon'] + kl_weight * terms['kl'] + nll_weight * terms['nll']
  if ssim_weight > 0:
    terms['ssim'] = jnp.mean(1.0 - score_maps.ssim_map(images, outputs['recon']))
    loss = loss + ssim_weight * terms['ssim']
  else:
    terms['ssim'] = jnp.zeros((), jnp.float32)
  terms['seg'] = jnp.zeros((), jnp.float32)
  if 'seg_logits' in outputs:
    if masks is None:
      raise ValueError('a model with a segmenter trains on synthetic anomalies: pass their masks')
    terms['seg'] = jnp.mean(optax.sigmoid_focal_loss(outputs['seg_logits'], masks, gamma=2.0))
    loss = loss + seg_weight * terms['seg']
  return loss, dict(terms, loss=loss)
