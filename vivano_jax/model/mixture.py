"""The Gaussian mixture density head (paper Section 3.2, equations 10-12).

For every patch i the head outputs a K-component diagonal Gaussian mixture
  p(y_i | c_i) = sum_k w_k(c_i) N(y_i | mu_k(c_i), diag(sigma_k(c_i)^2)),
with weights by softmax (eq. 11), scales by softplus (eq. 12, beta = 1, plus a small floor) and
unconstrained linear means. Its negative log-likelihood, computed with log-sum-exp, is both a
training loss and the anomaly score of the patch.

Which variable and which condition. The paper writes p(y | x), calls it the conditional distribution
of the encoding and feeds "image embedding" to the network, without saying what y is. Readings,
selected by `density.target` and `density.condition`:
  target 'latent' (default): y_i is the VAE posterior mean of patch i [d_z]; 'token': the encoder
    token [D].
  condition 'position' (default): c_i is a learned embedding of the patch position only, so the head
    is a position-dependent density of normal patch codes, p(y_i | i). An anomalous patch is one
    whose code is unlikely at its place.
  condition 'none': one unconditional mixture shared by all positions, p(y_i).
  condition 'class_token': c_i = [encoder class token, position embedding], p(y_i | global context,
    i).
  condition 'self': c_i is the encoder token of patch i itself (the reading of the PyTorch VT-ADL
    code the paper builds on). The head can then learn a near-identity map and the NLL collapses for
    every input, anomalous or not; it is kept for the ablation.
By default the head sees its inputs through stop_gradient (`density.stop_gradient`): it is a density
model of the representation the reconstruction learns, and cannot pull that representation towards a
collapsed high-density point.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivano_jax import errors

Array = jax.Array

CONDITIONS = ('position', 'none', 'class_token', 'self')
TARGETS = ('latent', 'token')


def mixture_nll(y: Array, log_weights: Array, means: Array, scales: Array) -> Array:
  """-log sum_k w_k N(y | mu_k, diag(sigma_k^2)), in nats.

  Args:
    y: [..., d] points.
    log_weights: [..., K] log mixture weights (log-softmax output).
    means: [..., K, d].
    scales: [..., K, d] standard deviations, > 0.
  Returns:
    [...] negative log-likelihood.
  """
  y = y[..., None, :]
  log_normal = -0.5 * jnp.sum(jnp.square((y - means) / scales) + 2.0 * jnp.log(scales)
                              + math.log(2.0 * math.pi), axis=-1)
  return -jax.nn.logsumexp(log_weights + log_normal, axis=-1)


class MixtureDensityHead(nn.Module):
  """An MLP from the condition c_i to the mixture parameters of y_i.

  Attributes (all but target_dim are `config.density` fields, same names):
    num_components: K.
    target_dim: d, the size of y.
    hidden_dim: width of the hidden layers.
    num_layers: number of hidden layers (ReLU).
    min_scale: floor added to the softplus scales, so the NLL stays bounded.
  """
  num_components: int
  target_dim: int
  hidden_dim: int
  num_layers: int
  min_scale: float

  @nn.compact
  def __call__(self, c: Array) -> tuple[Array, Array, Array]:
    """c: [..., E] -> (log_weights [..., K], means [..., K, d], scales [..., K, d])."""
    k, d = self.num_components, self.target_dim
    h = c
    for i in range(self.num_layers):
      h = nn.relu(nn.Dense(self.hidden_dim, name=f'hidden{i}')(h))
    logits = nn.Dense(k, name='logits')(h)  # a^w_k of eq. 11
    # Spread the initial means so the components start apart rather than all at the origin.
    means = nn.Dense(k * d, name='means', bias_init=nn.initializers.normal(1.0))(h)
    scales = jax.nn.softplus(nn.Dense(k * d, name='scales')(h)) + self.min_scale  # eq. 12
    shape = c.shape[:-1] + (k, d)
    return jax.nn.log_softmax(logits, axis=-1), means.reshape(shape), scales.reshape(shape)


def density_condition(kind: str, tokens: Array, class_token: Array,
                      position_embedding: Array) -> Array:
  """Builds c_i for every patch.

  Args:
    kind: one of CONDITIONS.
    tokens: [B, h, w, D] encoder patch tokens.
    class_token: [B, D] global token.
    position_embedding: [h, w, E] learned per-position embedding.
  Returns:
    [B, h, w, E'] conditions.
  """
  b, h, w, _ = tokens.shape
  pos = jnp.broadcast_to(position_embedding, (b, h, w, position_embedding.shape[-1]))
  if kind == 'position':
    return pos
  if kind == 'none':
    return jnp.ones((b, h, w, 1), tokens.dtype)
  if kind == 'class_token':
    glob = jnp.broadcast_to(class_token[:, None, None, :], (b, h, w, class_token.shape[-1]))
    return jnp.concatenate([glob, pos], axis=-1)
  if kind == 'self':
    return tokens
  raise errors.UsageError(f'density.condition must be one of {", ".join(CONDITIONS)}; got {kind!r}')
