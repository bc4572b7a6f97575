"""Images of any size -> the exported model's input, as the training input pipeline makes it.

numpy only, so an ONNX deployment needs no TensorFlow. The training pipeline
(input_pipeline._decode_image) converts channels with tf.image (gray copied to RGB, RGB to luma),
resizes the float image with `tf.image.resize(..., 'bilinear', antialias=True)` and normalises;
here the same conversion and resize are computed in numpy (TF's ScaleAndTranslate with a triangle
kernel, widened by the downscaling factor), to within 1e-4 grey levels. The model normalises
inside. A model with uint8 input gets the resized image rounded, which moves a pixel by at most
half a grey level (0.004 after normalisation); one exported with float32 input gets it as
training does. An image already at the model size and channel count passes through unchanged.
"""

import numpy as np

# tf.image.rgb_to_grayscale's weights (ITU-R BT.601 luma).
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """uint8 [H, W, c] -> uint8 [H, W, channels] as input_pipeline._to_channels (tf.image) does."""
  c = image.shape[-1]
  if c == channels:
    return image
  if c == 1 and channels == 3:
    return np.repeat(image, 3, axis=-1)
  if c == 3 and channels == 1:
    # tf.image: uint8 -> float32 in [0, 1], luma, then back by x * 255.5 truncated.
    gray = np.tensordot(image.astype(np.float32) * np.float32(1 / 255), _LUMA, axes=([-1], [-1]))
    return (gray * np.float32(255.5)).astype(np.uint8)[..., None]
  raise ValueError(f'cannot convert {c}-channel images to {channels} channels')


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
  """float64 [out_size, in_size] weights of TF's antialiased bilinear resize along one axis.

  As tensorflow/core/kernels/image/scale_and_translate_op.cc with the triangle kernel: output
  pixel x samples the input at (x + 0.5) / scale; when downscaling the kernel is widened by
  1 / scale (the antialiasing); the weights of the input pixels within its reach are normalised
  to sum to 1, so the borders keep the edge values.
  """
  scale = np.float32(out_size) / np.float32(in_size)
  inv_scale = np.float32(1.0 / scale)
  kernel_scale = max(float(inv_scale), 1.0)
  weights = np.zeros((out_size, in_size), np.float64)
  for x in range(out_size):
    sample = (x + 0.5) * float(inv_scale)
    start = max(int(np.ceil(sample - kernel_scale - 0.5)), 0)
    end = min(int(np.floor(sample + kernel_scale - 0.5)), in_size - 1) + 1
    source = np.arange(start, end)
    w = np.maximum(0.0, 1.0 - np.abs((source + 0.5 - sample) / kernel_scale))
    if w.sum() > 0:
      weights[x, start:end] = w / w.sum()
  return weights


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 or float [H, W, C] -> float64 [size, size, C], the values `tf.image.resize(image,
  (size, size), 'bilinear', antialias=True)` gives (to float32 rounding)."""
  h, w = image.shape[:2]
  x = image.astype(np.float64)
  if (h, w) == (size, size):
    return x
  rows, cols = resize_weights(h, size), resize_weights(w, size)
  return np.einsum('yh,hwc,xw->yxc', rows, x, cols, optimize=True)


def model_input(image: np.ndarray, size: int, channels: int, dtype='uint8') -> np.ndarray:
  """A decoded image uint8 [H, W, c] (c = 1 or 3) -> the model input [size, size, channels] of
  `dtype`: channels converted, resized as training resizes; rounded for uint8, values in [0, 255]
  either way."""
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f'expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}')
  resized = np.clip(resize(to_channels(image, channels), size), 0, 255)
  if np.dtype(dtype) == np.uint8:
    return np.rint(resized).astype(np.uint8)
  return resized.astype(dtype)


def batch(images: list[np.ndarray], size: int, channels: int, dtype='uint8') -> np.ndarray:
  """Decoded images of any sizes -> [N, size, size, channels] of `dtype` (`model_input`)."""
  if not images:
    return np.zeros((0, size, size, channels), dtype)
  return np.stack([model_input(im, size, channels, dtype) for im in images])
