"""The convolutional decoder (paper Section 3.1, Figure 5): latent grid -> image.

A 3x3 convolution lifts the latent grid [B, h, w, d_z] to `features[0]` channels, then log2(P)
stages each double the resolution (x2 upsampling, BatchNorm, ReLU) up to [B, H, W, features[-1]];
a last 3x3 convolution with tanh gives [B, H, W, C] in [-1, 1], matching inputs normalised to
[-1, 1].

Two ways to produce the image (`model.decoder_output`), after the stages below:
  * 'conv': as above, the last x2 stage's BatchNorm and ReLU and the 3x3 convolution to C channels
    run at the full resolution over `features[-1]` channels.
  * 'subpixel': the last x2 stage is the output layer itself (ESPCN, Shi et al. 2016): a 3x3
    convolution at half the resolution into 4 x C channels, depth-to-space, tanh; `features[-1]`
    is not used. Nothing but the tanh runs at the full resolution, where the few channels make
    every pass memory-bound: the paper's 512 px decoder runs 1.6x faster forward and backward,
    its train step 1.4-1.6x (BENCHMARKS.md).

Two ways to upsample (`model.decoder_upsample`):
  * 'subpixel': a 3x3 convolution at the low resolution producing 4x the channels, then
    depth-to-space (pixel shuffle), ICNR-initialised (`icnr`). Every output pixel of a stride-2
    transposed convolution (the PyTorch originals' decoder) with a kernel of at most 4 reads a 3x3
    window of the input, so this computes that layer exactly (tests/test_model.py maps
    `nn.ConvTranspose` weights onto it), without the zero-dilated input XLA builds for a
    transposed convolution, and with its 3x3 window read at the low resolution.
  * 'nearest': nearest-neighbour x2 upsampling, then a 3x3 convolution at the high resolution (the
    same FLOPs, 4x the bytes read; no checkerboard pattern).
XLA runs `nn.ConvTranspose` itself as a convolution over a zero-dilated input, which on CPU cost 8x
the time of the 'nearest' decoder (measured: 6.4 s vs 0.8 s per training step of a 128 px batch of
32), so neither option uses it.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivano_jax import errors

Array = jax.Array

OUTPUTS = ('conv', 'subpixel')


def decoder_features(patch_size: int, base: int, minimum: int) -> tuple[int, ...]:
  """Channels per x2 stage: `base` halved each stage, never below `minimum`; log2(P) stages."""
  stages = int(patch_size).bit_length() - 1
  if patch_size < 2 or 2 ** stages != patch_size:
    raise errors.UsageError(
        f'model.patch_size={patch_size} must be a power of two >= 2 for the conv decoder')
  return tuple(max(base // 2 ** i, minimum) for i in range(stages))


def depth_to_space(x: Array, block: int) -> Array:
  """[B, h, w, r * r * F] -> [B, h * r, w * r, F]: channel (i * r + j) * F + f of input pixel (y, x)
  becomes channel f of output pixel (y * r + i, x * r + j) (TensorFlow's `depth_to_space`, NHWC)."""
  b, h, w, c = x.shape
  f = c // (block * block)
  x = x.reshape(b, h, w, block, block, f).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, f)


def icnr(init, copies: int):
  """ICNR initialisation (Aitken et al. 2017) of a sub-pixel convolution's kernel [.., .., Cin,
  copies * F]: one kernel of F outputs drawn by `init`, repeated for every sub-pixel position, so at
  initialisation the stage is a convolution followed by nearest-neighbour upsampling. A freely drawn
  kernel starts with a different filter at each of the 4 positions of every 2 x 2 block: a
  checkerboard the model has to unlearn (measured: brick image AUROC 0.87 without ICNR,
  RESULTS.md)."""
  def initialise(key, shape, dtype=jnp.float32):
    *window, c_in, c_out = shape
    one = init(key, (*window, c_in, c_out // copies), dtype)
    return jnp.tile(one, (1,) * len(window) + (1, copies))
  return initialise


class ConvDecoder(nn.Module):
  """Attributes:
    features: channels of each x2 upsampling stage (len = log2(P)).
    out_channels: C of the reconstructed image.
    norm: 'batch' (the paper) or 'none' (an ablation; also makes gradient accumulation exactly equal
      to one large batch, since BatchNorm statistics are per microbatch).
    upsample: 'subpixel' or 'nearest' (module docstring).
    output: 'conv' or 'subpixel' (module docstring).
    bn_momentum: running-average momentum of the BatchNorm statistics.
    dtype: computation dtype.
  """
  features: Sequence[int]
  out_channels: int
  norm: str
  upsample: str = 'subpixel'
  output: str = 'conv'
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array, train: bool = False) -> Array:
    """z: [B, h, w, d_z] -> reconstruction [B, h * 2^S, w * 2^S, C] in [-1, 1] (float32)."""
    if self.norm not in ('batch', 'none'):
      raise errors.UsageError(f"model.decoder_norm must be 'batch' or 'none'; got {self.norm!r}")
    if self.upsample not in ('subpixel', 'nearest'):
      raise errors.UsageError(
          f"model.decoder_upsample must be 'subpixel' or 'nearest'; got {self.upsample!r}")
    if self.output not in OUTPUTS:
      raise errors.UsageError(
          f"model.decoder_output must be 'conv' or 'subpixel'; got {self.output!r}")

    def bn_relu(x, name):
      if self.norm == 'batch':
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype,
                         name=name)(x)
      return nn.relu(x)

    use_bias = self.norm == 'none'  # BatchNorm's own offset makes a conv bias redundant.
    x = nn.Conv(self.features[0], (3, 3), padding='SAME', use_bias=use_bias, dtype=self.dtype,
                name='stem')(z.astype(self.dtype))
    x = bn_relu(x, 'stem_bn')
    stages = self.features if self.output == 'conv' else self.features[:-1]
    for i, feats in enumerate(stages):
      if self.upsample == 'subpixel':
        x = nn.Conv(4 * feats, (3, 3), padding='SAME', use_bias=use_bias, dtype=self.dtype,
                    kernel_init=icnr(nn.initializers.lecun_normal(), 4), name=f'up{i}')(x)
        x = depth_to_space(x, 2)
      else:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = nn.Conv(feats, (3, 3), padding='SAME', use_bias=use_bias, dtype=self.dtype,
                    name=f'up{i}')(x)
      x = bn_relu(x, f'up{i}_bn')
    if self.output == 'conv':
      x = nn.Conv(self.out_channels, (3, 3), padding='SAME', dtype=self.dtype, name='to_image')(x)
    else:
      x = nn.Conv(4 * self.out_channels, (3, 3), padding='SAME', dtype=self.dtype,
                  kernel_init=icnr(nn.initializers.lecun_normal(), 4), name='to_image')(x)
      x = depth_to_space(x, 2)
    return jnp.tanh(x.astype(jnp.float32))
