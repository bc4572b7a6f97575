"""The discriminative segmentation head: (input, reconstruction) -> per-pixel anomaly logits.

The discriminative half of DRAEM (Zavrtanik et al. 2021): a small U-Net reads the image beside the
autoencoder's reconstruction of it and learns, from synthetic anomalies drawn on normal training
images (vivano_jax/synthetic.py), where the two differ in a way normal images do not. The squared
error treats every difference alike, so the texture a blurry reconstruction misses everywhere
weighs as much as a defect; the head learns which differences matter. Not part of the paper's
model: an option (`model.segmenter_features`), measured in RESULTS.md.

Its input is the reconstruction with its gradient stopped (vivano.py): the autoencoder is trained
by the reconstruction objective alone, as in the paper, and the head does not shape it.

Two resolutions (`model.segmenter_resolution`):
  * 'full': the U-Net's first level runs at the input's resolution (its 3x3 convolutions over full
    maps of few channels run memory-bound on a CPU: at 128 px with 16 channels the head costs 1.1
    GFLOP an image, more than the whole autoencoder);
  * 'half': each 2 x 2 block of pixels is first stacked into channels (space-to-depth), the same
    U-Net runs on that half-resolution grid, and its last 1x1 convolution gives the 4 logits of
    each block, put back in place (depth-to-space): a logit per input pixel, a 4x smaller map at
    every level. The recipe's train step runs 1.9x faster at 128 px, but the head misses the fine
    grain of grass and gravel (RESULTS.md 1h): 'full' is the default.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivano_jax.model import decoder as decoder_lib

Array = jax.Array

LEVELS = 3  # Halvings of the resolution inside the U-Net.
RESOLUTIONS = ('full', 'half')


def input_multiple(resolution: str) -> int:
  """What the input side must divide by: 2 ** LEVELS, twice that at 'half' resolution."""
  return 2 ** (LEVELS + (resolution == 'half'))


def space_to_depth(x: Array, block: int) -> Array:
  """[B, H, W, F] -> [B, H / r, W / r, r * r * F], the inverse of `decoder.depth_to_space`: channel
  (i * r + j) * F + f of output pixel (y, x) is channel f of input pixel (y * r + i, x * r + j)
  (TensorFlow's `space_to_depth`, NHWC)."""
  b, h, w, f = x.shape
  x = x.reshape(b, h // block, block, w // block, block, f).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * f)


class Segmenter(nn.Module):
  """A U-Net of LEVELS + 1 resolutions: 3x3 conv, BatchNorm, ReLU blocks with features, 2 x
  features, ... channels, max-pooled down; on the way up each level's features are projected (1x1)
  to the next level's width at the low resolution, upsampled (nearest) and added to the skip
  connection before its block (an additive skip: half the FLOPs of concatenating, the up path
  costs what the down path does).

  Attributes:
    features: channels at the U-Net's first level (doubled per level).
    resolution: 'full' or 'half' (module docstring).
    bn_momentum: running-average momentum of the BatchNorm statistics.
    dtype: computation dtype.
  """
  features: int
  resolution: str = 'full'
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image: Array, recon: Array, train: bool = False) -> Array:
    """image, recon: [B, H, W, C] in [-1, 1] -> logits [B, H, W] (float32)."""

    def block(x, feats, name):
      x = nn.Conv(feats, (3, 3), padding='SAME', use_bias=False, dtype=self.dtype, name=name)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype,
                       name=f'{name}_bn')(x)
      return nn.relu(x)

    x = jnp.concatenate([image, recon], axis=-1).astype(self.dtype)
    half = self.resolution == 'half'
    if half:
      x = space_to_depth(x, 2)
    skips = []
    for level in range(LEVELS):
      x = block(x, self.features * 2 ** level, f'down{level}')
      skips.append(x)
      x = _max_pool2(x)
    x = block(x, self.features * 2 ** LEVELS, 'middle')
    for level in reversed(range(LEVELS)):
      x = nn.Conv(self.features * 2 ** level, (1, 1), dtype=self.dtype, name=f'project{level}')(x)
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = block(x + skips[level], self.features * 2 ** level, f'up{level}')
    x = nn.Conv(4 if half else 1, (1, 1), dtype=self.dtype, name='logits')(x)
    if half:
      x = decoder_lib.depth_to_space(x, 2)
    return x[..., 0].astype(jnp.float32)


def _max_pool2(x: Array) -> Array:
  """2 x 2 max pooling, stride 2, as a reshape and a max: `nn.max_pool`'s reduce_window exports to
  an ONNX MaxPool that onnxruntime rejects ("Unsupported pooling size")."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
