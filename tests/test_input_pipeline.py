"""Input pipeline: deterministic and resumable order, shards, carving, channels, eval padding."""

import numpy as np
import pytest

from vivano_jax import input_pipeline


@pytest.fixture
def digits(tiny_config):
  return tiny_config, input_pipeline.load(tiny_config, ('train', 'test'))


def _take(it, n):
  return [next(it)['image'] for _ in range(n)]


def test_train_order_is_deterministic_and_resumable(digits):
  config, data = digits
  train = data['train']
  run = lambda start: input_pipeline.train_batches(train, config.dataset, 8, seed=3, start_step=start)
  full = _take(run(0), 40)  # 40 * 8 > 1 epoch of 113 images
  again = _take(run(0), 40)
  resumed = _take(run(25), 15)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(full[25:], resumed):
    np.testing.assert_array_equal(a, b)
  other_seed = _take(input_pipeline.train_batches(train, config.dataset, 8, seed=4), 1)
  assert not np.array_equal(full[0], other_seed[0])


def test_each_epoch_visits_every_image_once(digits):
  config, data = digits
  config.dataset.augment.hflip = False
  train = data['train']
  n = len(train)
  batches = _take(input_pipeline.train_batches(train, config.dataset, 1, seed=0), 2 * n)
  # Identify images by their pixels: every training image appears once per epoch.
  eval_imgs = np.concatenate([b['image'] for b in input_pipeline.eval_batches(train, config.dataset, 8)])
  eval_imgs = eval_imgs[:n]
  keys = {eval_imgs[i].tobytes(): i for i in range(n)}
  for epoch in range(2):
    seen = sorted(keys[b[0].tobytes()] for b in batches[epoch * n:(epoch + 1) * n])
    assert seen == list(range(n))
  perms = [input_pipeline.epoch_permutation(n, 0, e, 0) for e in (0, 1)]
  assert not np.array_equal(perms[0], perms[1])


def test_images_are_resized_and_normalised(digits):
  config, data = digits
  batch = next(input_pipeline.train_batches(data['train'], config.dataset, 4, seed=0))
  assert batch['image'].shape == (4, 32, 32, 1) and batch['image'].dtype == np.float32
  assert batch['image'].min() >= -1.0 and batch['image'].max() <= 1.0
  config.dataset.channels = 3
  rgb = next(input_pipeline.train_batches(data['train'], config.dataset, 4, seed=0))['image']
  assert rgb.shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])  # gray replicated to RGB


def test_eval_batches_are_padded_and_in_order(digits):
  config, data = digits
  test = data['test']
  batches = list(input_pipeline.eval_batches(test, config.dataset, 64))
  assert len(batches) == -(-len(test) // 64)
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.sum() == len(test) and not valid[len(test):].any()
  idx = np.concatenate([b['index'] for b in batches])[valid]
  np.testing.assert_array_equal(idx, np.arange(len(test)))
  labels = np.concatenate([b['label'] for b in batches])[valid]
  np.testing.assert_array_equal(labels, test.labels)
  # Fewer rows than a batch still gives full-size padded batches.
  more = list(input_pipeline.eval_batches(test, config.dataset, 64, num_batches=len(batches) + 1))
  assert not more[-1]['valid'].any() and more[-1]['image'].shape[0] == 64


def test_validation_is_carved_by_seeded_fraction(tiny_config):
  tiny_config.dataset.validation_fraction = 0.25
  parts = input_pipeline.load(tiny_config, ('train', 'validation'))
  train, val = set(parts['train'].filenames), set(parts['validation'].filenames)
  assert not train & val
  tiny_config.dataset.validation_fraction = 0.0
  everything = set(input_pipeline.load(tiny_config, ('train',))['train'].filenames)
  assert train | val == everything
  assert 0.1 < len(val) / len(everything) < 0.4


def test_process_shards_are_disjoint_and_cover_the_split(tiny_config):
  from vivano_jax import datasets  # pylint: disable=g-import-not-at-top
  builder = datasets.get_builder(tiny_config.dataset)
  shards = [input_pipeline.load_split(builder, 'test', tiny_config.dataset, process_index=i,
                                      process_count=3) for i in range(3)]
  whole = input_pipeline.load_split(builder, 'test', tiny_config.dataset, process_index=0,
                                    process_count=1)
  names = [list(s.filenames) for s in shards]
  assert sum(len(n) for n in names) == len(whole)
  assert not set(names[0]) & set(names[1]) and not set(names[1]) & set(names[2])
  # Contiguous slices in process order: their concatenation is the whole split in order.
  assert names[0] + names[1] + names[2] == list(whole.filenames)


def test_missing_split_is_a_clear_error(tiny_config):
  from vivano_jax import datasets  # pylint: disable=g-import-not-at-top
  builder = datasets.get_builder(tiny_config.dataset)
  with pytest.raises(ValueError, match='validation_fraction'):
    input_pipeline.load_split(builder, 'validation', tiny_config.dataset, 0, 1)


def test_in_memory_cache_gives_the_same_batches_as_streaming(digits):
  config, data = digits
  cached = _take(input_pipeline.train_batches(data['train'], config.dataset, 8, seed=1), 20)
  config.dataset.cache_max_mib = 0
  streamed = _take(input_pipeline.train_batches(data['train'], config.dataset, 8, seed=1), 20)
  for a, b in zip(cached, streamed):
    np.testing.assert_array_equal(a, b)


def test_a_validation_fraction_holding_out_every_training_image_is_refused(tiny_config):
  from vivano_jax import datasets  # pylint: disable=g-import-not-at-top
  from vivano_jax import errors  # pylint: disable=g-import-not-at-top
  builder = datasets.get_builder(tiny_config.dataset)
  tiny_config.dataset.validation_fraction = 0.9999999  # Every image of the split, with this seed.
  assert len(input_pipeline.load_split(builder, 'validation', tiny_config.dataset, 0, 1)) > 0
  with pytest.raises(errors.UsageError, match=r'dataset.validation_fraction=0.9999999 holds out '
                     r'all \d+ training images of dataset .digits/0., leaving none to train on'):
    input_pipeline.load_split(builder, 'train', tiny_config.dataset, 0, 1)
