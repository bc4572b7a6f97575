"""Input pipeline: tfds split -> this process's shard -> tf.data -> numpy local batches.

The same for every dataset. Each process reads only its shard of a split (`tfds.split_for_jax_process`)
and keeps the encoded images in memory; tf.data decodes, converts channels, resizes (antialiased bilinear
for images, nearest for masks) to `dataset.image_size`, augments and normalises to [-1, 1].

Training order is a pure function of (seed, process, step): sample q of this process (q = step *
local_batch + i) is element perm_e[q mod n] of the shard, where perm_e is a seeded permutation for epoch
e = q div n. A run restored at step s therefore continues with exactly the batches it would have seen,
and augmentation is seeded by (seed, q) for the same reason.

A validation split can be carved from `train` by a seeded fraction (`dataset.validation_fraction`): an
example goes to validation when a seeded hash of its file name falls below the fraction, so the carve
does not depend on order or on the number of processes.
"""

import dataclasses
import hashlib
import io
from typing import Iterator, Optional

import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from vivano_jax import datasets
from vivano_jax import errors


def keep_tensorflow_off_accelerators() -> None:
  """TensorFlow (tf.data only, here) must not grab the accelerators JAX uses: the entry point calls
  this before anything runs."""
  tf.config.set_visible_devices([], 'GPU')


def _options(threads: int) -> tf.data.Options:
  """tf.data runs in a private pool sized for the host, so it does not compete with XLA's threads."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  options.deterministic = True
  return options


@dataclasses.dataclass
class SplitData:
  """This process's shard of a split, images still encoded (PNG bytes).

  images, masks: [n] object arrays of encoded bytes; labels [n] int; defect_types, filenames [n] str;
  has_mask [n] bool; channels: the stored channel count.
  """
  images: np.ndarray
  masks: np.ndarray
  labels: np.ndarray
  defect_types: np.ndarray
  filenames: np.ndarray
  has_mask: np.ndarray
  channels: int

  def __len__(self):
    return len(self.labels)

  def sizes(self) -> np.ndarray:
    """int64 [n, 2]: each image's (H, W) at its native size, read from its PNG header."""
    return np.array([Image.open(io.BytesIO(b)).size[::-1] for b in self.images],
                    np.int64).reshape(-1, 2)

  def subset(self, keep: np.ndarray) -> 'SplitData':
    return SplitData(self.images[keep], self.masks[keep], self.labels[keep], self.defect_types[keep],
                     self.filenames[keep], self.has_mask[keep], self.channels)


def _in_validation(filenames: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Seeded, order-free membership of the carved validation split: [n] bool."""
  def u(name):
    digest = hashlib.sha256(f'{seed}:{name}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') / 2.0**64
  return np.array([u(n) < fraction for n in filenames], dtype=bool)


_READ_BATCH = 1024  # Examples per tf.data batch when a split is read into memory.


def load_split(builder: tfds.core.DatasetBuilder, split: str, cfg: ml_collections.ConfigDict,
               process_index: Optional[int] = None, process_count: Optional[int] = None) -> SplitData:
  """Reads this process's shard of `split` ('train', 'validation' or 'test') into memory.

  'train' and 'validation' honour `cfg.validation_fraction` when the builder has no validation split.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  carve = split in ('train', 'validation') and cfg.validation_fraction > 0 and (
      'validation' not in builder.info.splits)
  source = 'train' if carve else split
  if source not in builder.info.splits:
    raise ValueError(f'dataset {builder.info.full_name} has no {split!r} split (has '
                     f'{sorted(builder.info.splits)}); set dataset.validation_fraction to carve one')
  shard = tfds.split_for_jax_process(source, process_index=process_index, process_count=process_count)
  ds = builder.as_dataset(split=shard, shuffle_files=False, decoders={
      'image': tfds.decode.SkipDecoding(), 'mask': tfds.decode.SkipDecoding()})
  # Every feature is a scalar (images and masks stay encoded), so the split is read in batches:
  # tf.data's per-element overhead would otherwise dominate reading a large split.
  cols = {k: [] for k in ('image', 'mask', 'label', 'defect_type', 'filename', 'has_mask')}
  for batch in tfds.as_numpy(ds.batch(_READ_BATCH)):
    for k in cols:
      cols[k].extend(batch[k])
  as_str = lambda xs: np.array([x.decode() if isinstance(x, bytes) else str(x) for x in xs], dtype=object)
  data = SplitData(
      images=np.array(cols['image'], dtype=object),
      masks=np.array(cols['mask'], dtype=object),
      labels=np.array(cols['label'], dtype=np.int32),
      defect_types=as_str(cols['defect_type']),
      filenames=as_str(cols['filename']),
      has_mask=np.array(cols['has_mask'], dtype=bool),
      channels=builder.info.features['image'].shape[-1])
  if carve:
    val = _in_validation(data.filenames, cfg.validation_fraction, cfg.validation_seed)
    if split == 'train' and len(data) and val.all():  # Found before anything is written.
      where = " of this process's shard" if process_count > 1 else ''
      raise errors.UsageError(
          f'dataset.validation_fraction={cfg.validation_fraction} holds out all {len(data)} '
          f'training images{where} of dataset {cfg.name!r}, leaving none to train on; lower it')
    data = data.subset(val if split == 'validation' else ~val)
  return data


@tf.autograph.experimental.do_not_convert
def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """[H, W, c] -> [H, W, channels] (grayscale replicated to RGB, or RGB to luma)."""
  c = image.shape[-1]
  if c == channels:
    return image
  if c == 1 and channels == 3:
    return tf.image.grayscale_to_rgb(image)
  if c == 3 and channels == 1:
    return tf.image.rgb_to_grayscale(image)
  raise ValueError(f'cannot convert {c}-channel images to dataset.channels={channels}')


@tf.autograph.experimental.do_not_convert
def _decode_image(encoded: tf.Tensor, stored_channels: int, cfg) -> tf.Tensor:
  """PNG bytes -> float32 [S, S, C] in [-1, 1]."""
  img = tf.io.decode_png(encoded, channels=stored_channels)
  img = _to_channels(img, cfg.channels)
  size = (cfg.image_size, cfg.image_size)
  img = tf.image.resize(tf.cast(img, tf.float32), size, method='bilinear', antialias=True)
  return tf.clip_by_value(img / 127.5 - 1.0, -1.0, 1.0)


@tf.autograph.experimental.do_not_convert
def _decode_mask(encoded: tf.Tensor, cfg) -> tf.Tensor:
  """PNG bytes -> bool [S, S] (nearest resize keeps masks binary)."""
  mask = tf.io.decode_png(encoded, channels=1)
  mask = tf.image.resize(mask, (cfg.image_size, cfg.image_size), method='nearest')
  return mask[..., 0] > 0


@tf.autograph.experimental.do_not_convert
def _augment(img: tf.Tensor, seed: tf.Tensor, aug) -> tf.Tensor:
  """Stateless flips / 90-degree rotations of a square [S, S, C] image, seeded by `seed` [2]."""
  if aug.hflip:
    img = tf.image.stateless_random_flip_left_right(img, seed=seed)
  if aug.vflip:
    img = tf.image.stateless_random_flip_up_down(img, seed=seed + 1)
  if aug.rot90:
    k = tf.random.stateless_uniform((), seed=seed + 2, minval=0, maxval=4, dtype=tf.int32)
    img = tf.image.rot90(img, k)
  return img


def epoch_permutation(n: int, seed: int, epoch: int, process_index: int) -> np.ndarray:
  """The order of this process's n examples in `epoch`."""
  return np.random.default_rng([seed, epoch, process_index]).permutation(n)


def train_batches(data: SplitData, cfg: ml_collections.ConfigDict, local_batch: int, seed: int,
                  start_step: int = 0, process_index: Optional[int] = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless local training batches {'image': float32 [b, S, S, C]} starting at `start_step`."""
  n = len(data)
  if n == 0:
    raise ValueError(f'dataset {cfg.name!r}: no training images in this process\'s shard')
  process_index = jax.process_index() if process_index is None else process_index

  def positions():
    q = start_step * local_batch
    epoch, perm = -1, None
    while True:
      e, pos = divmod(q, n)
      if e != epoch:
        epoch, perm = e, epoch_permutation(n, seed, e, process_index)
      yield perm[pos], q
      q += 1

  idx_ds = tf.data.Dataset.from_generator(
      positions, output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)))
  s, c = cfg.image_size, cfg.channels
  if n * s * s * c * 4 <= cfg.cache_max_mib * 2**20:
    # Decode and resize every image once; each step then only gathers and augments. Large
    # full-resolution photos (MVTec AD) would otherwise cost a PNG decode and resize per sample.
    decoded = _decoded(data, cfg)
    source = lambda i: tf.gather(decoded, i)
  else:
    images = tf.constant(list(data.images), dtype=tf.string)
    source = lambda i: _decode_image(tf.gather(images, i), data.channels, cfg)

  @tf.autograph.experimental.do_not_convert
  def load(i, q):
    return {'image': _augment(source(i), tf.stack([tf.constant(seed, tf.int64), q]), cfg.augment)}

  ds = idx_ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(2)
  return iter(tfds.as_numpy(ds.with_options(_options(cfg.num_threads))))


def _decoded(data: SplitData, cfg: ml_collections.ConfigDict) -> tf.Tensor:
  """Every image of `data` decoded, converted and resized: float32 [n, S, S, C] in [-1, 1]."""
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(data.images), tf.string))
  decode = tf.autograph.experimental.do_not_convert(lambda x: _decode_image(x, data.channels, cfg))
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
  return tf.concat(list(ds.with_options(_options(cfg.num_threads))), axis=0)


def num_eval_batches(n_local: int, local_batch: int) -> int:
  """Batches every process must run so that all shards are covered (processes run in lockstep)."""
  n = np.array(n_local)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    n = multihost_utils.process_allgather(n)
  return max(1, int(-(-int(np.max(n)) // local_batch)))


def eval_batches(data: SplitData, cfg: ml_collections.ConfigDict, local_batch: int,
                 num_batches: Optional[int] = None) -> Iterator[dict[str, np.ndarray]]:
  """The split in order, in local batches padded to `local_batch` rows.

  Yields {'image' float32 [b, S, S, C], 'mask' bool [b, S, S], 'label' int32 [b], 'has_mask' bool [b],
  'valid' bool [b], 'index' int32 [b] (row in `data`, -1 for padding)}.
  """
  n = len(data)
  num_batches = num_eval_batches(n, local_batch) if num_batches is None else num_batches
  ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(data.images) or [b''], tf.string),
                                           tf.constant(list(data.masks) or [b''], tf.string)))
  decode = tf.autograph.experimental.do_not_convert(
      lambda i, m: (_decode_image(i, data.channels, cfg), _decode_mask(m, cfg)))
  ds = ds.take(n).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch).prefetch(2)
  it = iter(tfds.as_numpy(ds.with_options(_options(cfg.num_threads))))
  s, c = cfg.image_size, cfg.channels
  for b in range(num_batches):
    start = b * local_batch
    rows = max(0, min(local_batch, n - start))
    if rows:
      images, masks = next(it)
    else:
      images, masks = np.zeros((0, s, s, c), np.float32), np.zeros((0, s, s), bool)
    pad = local_batch - rows
    idx = np.arange(start, start + rows)
    yield {
        'image': np.concatenate([images, np.zeros((pad, s, s, c), np.float32)]),
        'mask': np.concatenate([masks, np.zeros((pad, s, s), bool)]),
        'label': np.concatenate([data.labels[idx], np.zeros(pad, np.int32)]),
        'has_mask': np.concatenate([data.has_mask[idx], np.zeros(pad, bool)]),
        'valid': np.concatenate([np.ones(rows, bool), np.zeros(pad, bool)]),
        'index': np.concatenate([idx, -np.ones(pad, np.int64)]).astype(np.int32),
    }


def native_masks(data: SplitData) -> list[np.ndarray]:
  """Every example's ground-truth mask at its native size: list of bool [H_i, W_i]."""
  def decode(encoded):
    mask = Image.open(io.BytesIO(encoded))
    return np.asarray(mask).reshape(mask.size[1], mask.size[0], -1)[..., 0] > 0
  return [decode(m) for m in data.masks]


def heldout_split(config: ml_collections.ConfigDict) -> str:
  """Where held-out normal images come from (score statistics, thresholds): 'validation' when the
  dataset has one (its own or carved by `dataset.validation_fraction`), else 'train'."""
  if config.dataset.validation_fraction > 0:
    return 'validation'
  builder = datasets.get_builder(config.dataset)
  return 'validation' if 'validation' in builder.info.splits else 'train'


def load(config: ml_collections.ConfigDict, splits: tuple[str, ...],
         process_index: Optional[int] = None, process_count: Optional[int] = None
         ) -> dict[str, SplitData]:
  """Prepares the configured dataset and reads the requested splits (this process's shards, or the
  shard given by process_index / process_count: (0, 1) reads whole splits)."""
  builder = datasets.get_builder(config.dataset)
  return {s: load_split(builder, s, config.dataset, process_index, process_count) for s in splits}


def whole_split(config: ml_collections.ConfigDict, split: str, local: SplitData) -> SplitData:
  """The whole split, given this process's shard of it: rows gathered from every process
  (`sharding.gather_rows`) are in this order."""
  if jax.process_count() == 1:
    return local
  return load(config, (split,), process_index=0, process_count=1)[split]
