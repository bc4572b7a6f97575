"""Synthetic anomalies on normal images: for the denoising objective and for choosing a score.

Training with `train.synthetic_anomalies = p`: each training image becomes, with probability p, the
model's input with a synthetic anomaly drawn on it, while the reconstruction target stays the clean
image. The autoencoder then learns to remove what is not normal instead of copying its input, so a
real defect is reconstructed as normal surface and stands out in the error map (the reconstructive
half of DRAEM, Zavrtanik et al. 2021). The density head sees only clean patches (train.py).

Choosing a score with `score.select='synthetic'`: the same anomalies drawn on held-out normal images
give labelled images and masks without looking at any real defect (scoring.py, select.py).

The anomalies are deliberately of another family than the defects of the embedded textures'
test split (vivano_jax/datasets/defects.py draws scratches, holes, stains, cracks and patches):
  * shape: a threshold of smoothed Gaussian noise (Perlin-like blobs of random size and number),
    covering 0.2-4 % of the image;
  * content: 'shift', the image itself made brighter or darker under the blob (blended), or
    'paste', the same place of another image of the batch, its brightness shifted.
Pure numpy and scipy, seeded by the caller, so a resumed run draws the same anomalies.
"""

import numpy as np
from scipy import ndimage

KINDS = ('shift', 'paste')


def blob_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """A bool [H, W] mask of smooth random blobs covering 0.2-4 % of the image (at least 1 pixel)."""
  h, w = shape
  sigma = rng.uniform(1.0, 4.0) * max(h, w) / 64.0
  noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode='wrap')
  fraction = np.exp(rng.uniform(np.log(0.002), np.log(0.04)))
  mask = noise >= np.quantile(noise, 1.0 - fraction)
  if not mask.any():
    mask[np.unravel_index(np.argmax(noise), shape)] = True
  return mask


def draw(image: np.ndarray, other: np.ndarray, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
  """One synthetic anomaly on `image`.

  Args:
    image: float32 [H, W, C] in [-1, 1].
    other: float32 [H, W, C] in [-1, 1], a different normal image ('paste' takes content from it).
    rng: random generator.
  Returns:
    (anomalous image float32 [H, W, C] in [-1, 1], mask bool [H, W]).
  """
  mask = blob_mask(image.shape[:2], rng)
  sign = rng.choice((-1.0, 1.0))
  if rng.choice(KINDS) == 'shift':
    alpha = rng.uniform(0.5, 0.9)
    target = np.clip(image + sign * rng.uniform(0.4, 0.9), -1.0, 1.0)
    new = (1 - alpha) * image + alpha * target
  else:
    new = np.clip(other + sign * rng.uniform(0.15, 0.5), -1.0, 1.0)
  out = np.where(mask[..., None], new, image).astype(np.float32)
  return out, mask


def corrupt_batch(images: np.ndarray, probability: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Draws an anomaly on each image with `probability`.

  Args:
    images: float32 [B, H, W, C] in [-1, 1].
    probability: per image, in [0, 1].
    rng: random generator.
  Returns:
    (inputs float32 [B, H, W, C], masks bool [B, H, W]; all False for untouched images).
  """
  b = images.shape[0]
  out, masks = images.copy(), np.zeros(images.shape[:3], bool)
  hit = rng.random(b) < probability
  for i in np.flatnonzero(hit):
    # Another image of the batch for 'paste'; the image itself when the batch holds only one.
    j = (i + 1 + int(rng.integers(0, max(b - 1, 1)))) % b if b > 1 else i
    out[i], masks[i] = draw(images[i], images[j], rng)
  return out, masks


def patch_weights(masks: np.ndarray, patch_size: int) -> np.ndarray:
  """1.0 for every patch of the [B, H, W] masks that no anomaly touches, else 0.0: [B, H/P, W/P]."""
  b, h, w = masks.shape
  touched = masks.reshape(b, h // patch_size, patch_size, w // patch_size, patch_size).any(axis=(2, 4))
  return (~touched).astype(np.float32)
