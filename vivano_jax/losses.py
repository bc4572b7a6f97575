"""The training objective: reconstruction MSE + beta * KL + lambda * mixture NLL."""

import jax
import jax.numpy as jnp

Array = jax.Array


def squared_error_map(images: Array, recon: Array) -> Array:
  """Per-pixel squared error averaged over channels: [B, H, W, C] x2 -> [B, H, W]."""
  return jnp.mean(jnp.square(images.astype(jnp.float32) - recon.astype(jnp.float32)), axis=-1)


def vivano_loss(outputs: dict[str, Array], images: Array, recon_weight: float, kl_weight: float,
                nll_weight: float) -> tuple[Array, dict[str, Array]]:
  """The weighted loss and each term, all scalars.

  recon: mean squared error per pixel and channel, images in [-1, 1].
  kl: KL(q(z|x) || N(0, I)) in nats per patch (summed over the d_z latent dims), averaged over patches.
  nll: mixture NLL in nats per patch, averaged over patches.
  """
  terms = {
      'recon': jnp.mean(squared_error_map(images, outputs['recon'])),
      'kl': jnp.mean(outputs['kl']),
      'nll': jnp.mean(outputs['nll']),
  }
  loss = recon_weight * terms['recon'] + kl_weight * terms['kl'] + nll_weight * terms['nll']
  return loss, dict(terms, loss=loss)
