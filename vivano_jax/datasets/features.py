"""The one example format every vivano_jax dataset builder produces.

Every split of every builder yields dicts with these features, so the input pipeline, the model and
the metrics never depend on where the images came from:

  image        uint8 [H, W, C], C in {1, 3}, at the dataset's native size (PNG-encoded on disk).
  mask         uint8 [H, W, 1], 1 = defective pixel, 0 = normal; same H, W as `image`. All zero
               for normal images and for defective images whose ground truth is unknown (see
               `has_mask`).
  label        int64 scalar, 0 = good (normal), 1 = defective (anomalous).
  defect_type  string, 'good' for normal images, else the defect's name (folder name, drawn defect
               kind, or the class name in one-class protocols).
  filename     string, a name unique within the split (relative path for file-based datasets).
  has_mask     bool scalar, True when `mask` is the true pixel ground truth (always True for normal
               images), False for defective images without a pixel annotation (pixel metrics then
               skip them).
"""

import numpy as np
import tensorflow_datasets as tfds

GOOD = 'good'
LABEL_NAMES = (GOOD, 'defective')


def example_features(channels: int) -> tfds.features.FeaturesDict:
  """The FeaturesDict shared by all builders; `channels` is 1 (grayscale) or 3 (RGB)."""
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels}')
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, channels), dtype=np.uint8,
                                   encoding_format='png'),
      'mask': tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format='png'),
      'label': tfds.features.ClassLabel(names=LABEL_NAMES),
      'defect_type': tfds.features.Text(),
      'filename': tfds.features.Text(),
      'has_mask': tfds.features.Scalar(dtype=np.bool_),
  })


def example(filename: str, image, mask, defect_type: str, has_mask: bool) -> tuple[str, dict]:
  """(key, example) in this format; the label follows `defect_type` ('good' = 0, else 1).

  `image` and `mask` are uint8 arrays or their PNG bytes. The key is the filename, unique within a
  split: tfds orders the stored examples by it, so the same files give the same order.
  """
  return filename, {
      'image': image,
      'mask': mask,
      'label': 0 if defect_type == GOOD else 1,
      'defect_type': defect_type,
      'filename': filename,
      'has_mask': has_mask,
  }
