"""The VAE bottleneck over patch tokens (paper Section 3.1, Figure 4) and its deterministic
ablation."""

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def gaussian_kl(mean: Array, logvar: Array) -> Array:
  """KL(N(mean, diag(exp(logvar))) || N(0, I)) in nats, summed over the last axis.

  mean, logvar: [..., d] -> [...].
  """
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


class VAEBottleneck(nn.Module):
  """Per-patch Gaussian posterior q(z | x) = N(mean, diag(exp(logvar))), reparameterised sample.

  The sample uses the 'latent' rng stream during training; at evaluation z is the posterior mean, so
  scores are deterministic. With `variational=False` it is a plain autoencoder bottleneck (z = mean,
  no KL).

  Attributes:
    latent_dim: d_z, the latent size per patch.
    variational: VAE (True) or deterministic autoencoder (False).
    logvar_clip: log-variance is clipped to [-clip, clip] so exp() cannot overflow early in
      training.
  """
  latent_dim: int
  variational: bool
  logvar_clip: float = 10.0

  @nn.compact
  def __call__(self, tokens: Array, train: bool = False) -> dict[str, Array]:
    """tokens: [B, h, w, D] -> {'z', 'mean', 'logvar': [B, h, w, d_z], 'kl': [B, h, w]}, float32."""
    tokens = tokens.astype(jnp.float32)
    mean = nn.Dense(self.latent_dim, name='mean')(tokens)
    if not self.variational:
      return {'z': mean, 'mean': mean, 'logvar': jnp.zeros_like(mean),
              'kl': jnp.zeros(mean.shape[:-1])}
    logvar = jnp.clip(nn.Dense(self.latent_dim, name='logvar')(tokens), -self.logvar_clip,
                      self.logvar_clip)
    if train:
      eps = jax.random.normal(self.make_rng('latent'), mean.shape, mean.dtype)
      z = mean + jnp.exp(0.5 * logvar) * eps
    else:
      z = mean
    return {'z': z, 'mean': mean, 'logvar': logvar, 'kl': gaussian_kl(mean, logvar)}
