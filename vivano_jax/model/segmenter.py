"""The discriminative segmentation head: (input, reconstruction) -> per-pixel anomaly logits.

The discriminative half of DRAEM (Zavrtanik et al. 2021): a small U-Net reads the image beside the
autoencoder's reconstruction of it and learns, from synthetic anomalies drawn on normal training
images (vivano_jax/synthetic.py), where the two differ in a way normal images do not. The squared
error treats every difference alike, so the texture a blurry reconstruction misses everywhere
weighs as much as a defect; the head learns which differences matter. Not part of the paper's
model: an option (`model.segmenter_features`), measured in RESULTS.md.

Its input is the reconstruction with its gradient stopped (vivano.py): the autoencoder is trained
by the reconstruction objective alone, as in the paper, and the head does not shape it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

LEVELS = 3  # Halvings of the resolution; the input side must divide by 2 ** LEVELS.


class Segmenter(nn.Module):
  """A U-Net of LEVELS + 1 resolutions: 3x3 conv, BatchNorm, ReLU blocks with features, 2 x
  features, ... channels, max-pooled down; on the way up each level's features are projected (1x1)
  to the next level's width at the low resolution, upsampled (nearest) and added to the skip
  connection before its block (an additive skip: half the FLOPs of concatenating, the up path
  costs what the down path does).

  Attributes:
    features: channels at the full resolution (doubled per level).
    bn_momentum: running-average momentum of the BatchNorm statistics.
    dtype: computation dtype.
  """
  features: int
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
    return nn.Conv(1, (1, 1), dtype=self.dtype, name='logits')(x)[..., 0].astype(jnp.float32)


def _max_pool2(x: Array) -> Array:
  """2 x 2 max pooling, stride 2, as a reshape and a max: `nn.max_pool`'s reduce_window exports to
  an ONNX MaxPool that onnxruntime rejects ("Unsupported pooling size")."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
