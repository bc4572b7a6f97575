"""Encoders: the ViT of ViV-Ano (paper Section 3.1, equations 1-6) and a plain CNN of similar size.

Both map images [B, H, W, C] to one token per P x P patch, [B, h, w, D] with h = H / P, w = W / P,
plus a global (class) token [B, D], so the bottleneck, decoder and density head do not depend on the
encoder.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivano_jax import errors

Array = jax.Array


class MultiHeadSelfAttention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (equations 4-6).

  Attributes:
    num_heads: k, the number of heads; the head size is D_h = D / k.
    dtype: computation dtype (parameters stay float32).
  """
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array) -> Array:
    """z: [B, N, D] -> [B, N, D]."""
    b, n, d = z.shape
    if d % self.num_heads:
      raise errors.UsageError(
          f'model.width={d} is not divisible by model.num_heads={self.num_heads}')
    dh = d // self.num_heads
    # [q, k, v] = z U_qkv (eq. 4), all heads at once. Queries and values have a bias, keys none: the
    # softmax is invariant to a key bias, so its gradient is zero up to rounding, which Adam would
    # turn into steps of random sign.
    qkv = nn.Dense(3 * d, use_bias=False, dtype=self.dtype, name='qkv')(z)
    qkv = qkv.reshape(b, n, 3, self.num_heads, dh)
    q_bias = self.param('q_bias', nn.initializers.zeros, (d,)).astype(self.dtype)
    v_bias = self.param('v_bias', nn.initializers.zeros, (d,)).astype(self.dtype)
    q = qkv[:, :, 0] + q_bias.reshape(self.num_heads, dh)  # [B, N, heads, D_h]
    k = qkv[:, :, 1]
    v = qkv[:, :, 2] + v_bias.reshape(self.num_heads, dh)
    # A = softmax(q k^T / sqrt(D_h)) (eq. 5); softmax in float32 for stability under bf16.
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(dh).astype(self.dtype)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    heads = jnp.einsum('bhqk,bkhd->bqhd', attn, v).reshape(b, n, d)
    # Concatenated heads times U_msa (eq. 6).
    return nn.Dense(d, dtype=self.dtype, name='out')(heads)


class MlpBlock(nn.Module):
  """The transformer MLP (equation 3): Dense -> GELU -> Dense."""
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(x)
    x = nn.gelu(x)
    return nn.Dense(d, dtype=self.dtype, name='fc2')(x)


class EncoderBlock(nn.Module):
  """One pre-LayerNorm transformer block (equations 2 and 3)."""
  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array) -> Array:
    z = z + MultiHeadSelfAttention(self.num_heads, self.dtype, name='msa')(
        nn.LayerNorm(dtype=self.dtype, name='ln1')(z))
    return z + MlpBlock(self.mlp_dim, self.dtype, name='mlp')(
        nn.LayerNorm(dtype=self.dtype, name='ln2')(z))


class PatchEmbedding(nn.Module):
  """x_p E + b of eq. 1: each P x P patch, flattened, times E [(P^2 C), D].

  The same layer as `nn.Conv(D, (P, P), strides=(P, P))`, with the same parameters ('kernel'
  [P, P, C, D], 'bias' [D]) and initialisation, so checkpoints of either load into the other; but
  computed as one matmul over the patches. XLA:CPU ran the strided convolution and its kernel
  gradient at a third of the matmul's speed (the paper's 512 px, patch 64: 171 ms against 79 ms
  forward + backward for a batch of 8; BENCHMARKS.md).

  Attributes: features (D), patch_size (P), dtype (computation dtype).
  """
  features: int
  patch_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [B, H, W, C], H and W multiples of P -> [B, H / P, W / P, D]."""
    b, height, width, c = x.shape
    p = self.patch_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (p, p, c, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    h, w = height // p, width // p
    patches = x.reshape(b, h, p, w, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, p * p * c)
    return patches @ kernel.reshape(p * p * c, self.features) + bias


class ViTEncoder(nn.Module):
  """Vision Transformer encoder.

  Patch embedding (`PatchEmbedding`: x_p E of eq. 1), a learnable class token in front, a learned
  position embedding E_pos [(N + 1), D], then L pre-LN blocks and a final LayerNorm.

  Attributes:
    patch_size: P in pixels.
    width: D, the token size.
    depth: L, the number of blocks.
    num_heads: heads per attention layer.
    mlp_dim: hidden size of the MLPs.
    remat: rematerialise each block in the backward pass (saves activation memory).
    dtype: computation dtype.
  """
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  remat: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
    """x: [B, H, W, C] in [-1, 1] -> (patch tokens [B, h, w, D], class token [B, D])."""
    del train  # No dropout or batch statistics in the encoder.
    b, height, width, _ = x.shape
    p = self.patch_size
    if height % p or width % p:
      raise errors.UsageError(
          f'image size {height}x{width} is not divisible by model.patch_size={p}')
    x = PatchEmbedding(self.width, p, dtype=self.dtype, name='patch_embedding')(x)
    h, w = x.shape[1], x.shape[2]
    tokens = x.reshape(b, h * w, self.width)
    cls = self.param('class_token', nn.initializers.zeros, (1, 1, self.width))
    cls = jnp.broadcast_to(cls, (b, 1, self.width)).astype(tokens.dtype)
    z = jnp.concatenate([cls, tokens], axis=1)
    pos = self.param('position_embedding', nn.initializers.normal(stddev=0.02),
                     (1, h * w + 1, self.width))
    z = z + pos.astype(z.dtype)
    block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    for i in range(self.depth):
      z = block(self.num_heads, self.mlp_dim, self.dtype, name=f'block{i}')(z)
    z = nn.LayerNorm(dtype=self.dtype, name='encoder_norm')(z)
    return z[:, 1:].reshape(b, h, w, self.width), z[:, 0]


class CNNEncoder(nn.Module):
  """A plain convolutional encoder with the ViT's interface, for the encoder ablation.

  log2(P) stride-2 3x3 conv stages (BatchNorm + ReLU) take the image down to the patch grid, then a
  1x1 projection to D channels. The global token is the mean of the patch tokens.

  Attributes:
    patch_size: P, a power of two.
    width: D.
    base_features: channels of the first stage; doubled per stage, capped at `width`.
    dtype: computation dtype.
  """
  patch_size: int
  width: int
  base_features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
    """x: [B, H, W, C] -> (patch tokens [B, h, w, D], global token [B, D])."""
    stages = _log2_exact(self.patch_size, 'model.patch_size')
    for i in range(stages):
      feats = min(self.base_features * 2 ** i, self.width)
      x = nn.Conv(feats, (3, 3), strides=(2, 2), padding='SAME', use_bias=False,
                  dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                       name=f'bn{i}')(x)
      x = nn.relu(x)
    x = nn.Conv(self.width, (1, 1), dtype=self.dtype, name='proj')(x)
    return x, x.mean(axis=(1, 2))


def _log2_exact(value: int, field: str) -> int:
  stages = int(value).bit_length() - 1
  if value < 2 or 2 ** stages != value:
    raise errors.UsageError(f'{field}={value} must be a power of two >= 2')
  return stages


def make_encoder(kind: str, *, patch_size: int, width: int, depth: int, num_heads: int,
                 mlp_dim: int, remat: bool, cnn_base_features: int, dtype: jnp.dtype,
                 name: str) -> nn.Module:
  """The encoder named by `model.encoder` ('vit' or 'cnn'); each takes the fields it uses."""
  if kind == 'vit':
    return ViTEncoder(patch_size, width, depth, num_heads, mlp_dim, remat, dtype, name=name)
  if kind == 'cnn':
    return CNNEncoder(patch_size, width, cnn_base_features, dtype, name=name)
  raise errors.UsageError(f"model.encoder must be 'vit' or 'cnn'; got {kind!r}")
