"""Tests for the builders that need no network: `textures` (with `defects`) and `digits`."""

import os
import threading

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sklearn.datasets  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from vivano_jax import atomic_files  # noqa: E402
from vivano_jax import errors  # noqa: E402
from vivano_jax.datasets import defects  # noqa: E402
from vivano_jax.datasets import digits  # noqa: E402
from vivano_jax.datasets import textures  # noqa: E402

TILE = textures.TILE_SIZE


def _prepare(module, name, data_dir):
  return module.make_builder(ml_collections.ConfigDict({'name': name}), data_dir=str(data_dir))


def _read(builder, split):
  """All examples of `split` as numpy dicts, strings decoded, sorted by filename."""
  examples = []
  for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    ex['defect_type'] = ex['defect_type'].decode()
    ex['filename'] = ex['filename'].decode()
    examples.append(ex)
  return sorted(examples, key=lambda ex: ex['filename'])


@pytest.fixture(scope='module')
def brick(tmp_path_factory):
  builder = _prepare(textures, 'textures/brick', tmp_path_factory.mktemp('tfds_a'))
  return {split: _read(builder, split) for split in ('train', 'test')}


@pytest.fixture(scope='module')
def digit3(tmp_path_factory):
  builder = _prepare(digits, 'digits/3', tmp_path_factory.mktemp('tfds_d'))
  return {split: _read(builder, split) for split in ('train', 'test')}


def _check_format(ex, size):
  assert ex['image'].dtype == np.uint8 and ex['image'].shape == (size, size, 1)
  assert ex['mask'].dtype == np.uint8 and ex['mask'].shape == (size, size, 1)
  assert set(np.unique(ex['mask'])) <= {0, 1}
  assert ex['label'] in (0, 1)
  assert (ex['label'] == 0) == (ex['defect_type'] == 'good')
  assert ex['has_mask'].dtype == np.bool_ and ex['has_mask'].shape == ()
  assert ex['filename'].startswith(('train/', 'test/')) and ex['filename'].endswith('.png')


# ----------------------------------------------------------------------------------------------
# textures


def test_textures_splits_and_format(brick):
  train, test = brick['train'], brick['test']
  assert len(train) == 400 and len(test) == 150
  assert all(ex['label'] == 0 and ex['defect_type'] == 'good' for ex in train)
  kinds, counts = np.unique([ex['defect_type'] for ex in test], return_counts=True)
  assert dict(zip(kinds, counts)) == {'good': 50, **{k: 20 for k in defects.DEFECT_KINDS}}
  assert np.bincount([ex['label'] for ex in test]).tolist() == [50, 100]
  for split in (train, test):
    assert len({ex['filename'] for ex in split}) == len(split)
    for ex in split:
      _check_format(ex, TILE)
      assert ex['has_mask']
      # Normal tiles have an empty mask; every defect marks some, but far from all, pixels.
      area = ex['mask'].sum()
      assert area == 0 if ex['label'] == 0 else 0 < area < TILE * TILE // 4
  assert any(ex['filename'] == 'test/hole_0007.png' for ex in test)


def _locate(photo, tile):
  """All top-left (row, col) where `tile` [T, T] occurs exactly in `photo` [H, W]."""
  # Candidates match the tile's first 16 pixels; each is then compared in full.
  prefix = np.lib.stride_tricks.sliding_window_view(photo[:photo.shape[0] - TILE + 1], 16, axis=1)
  prefix = prefix[:, :photo.shape[1] - TILE + 1]  # [H - T + 1, W - T + 1, 16]
  candidates = np.argwhere(np.all(prefix == tile[0, :16], axis=-1))
  return [(r, c) for r, c in candidates if np.array_equal(photo[r:r + TILE, c:c + TILE], tile)]


def test_textures_train_and_test_regions_are_disjoint(brick):
  photo = textures.load_photo('brick')
  normal_test = [ex for ex in brick['test'] if ex['label'] == 0]
  # Every tile is an exact, unmodified crop; check where in the photograph it can come from.
  for ex in brick['train']:
    hits = _locate(photo, ex['image'][..., 0])
    assert hits and all(r + TILE <= 320 for r, _ in hits), (ex['filename'], hits)
  for ex in normal_test:
    hits = _locate(photo, ex['image'][..., 0])
    assert hits and all(r >= 336 for r, _ in hits), (ex['filename'], hits)
  # And the offset sampler never leaves its region, over many draws.
  rng = np.random.default_rng(0)
  for rows in (textures.TRAIN_ROWS, textures.TEST_ROWS):
    offsets = textures.tile_offsets(rng, 20_000, rows)
    assert offsets[:, 0].min() == rows[0] and offsets[:, 0].max() == rows[1] - TILE
    assert offsets[:, 1].min() == 0 and offsets[:, 1].max() == 512 - TILE


def test_textures_deterministic(brick, tmp_path):
  builder = _prepare(textures, 'textures/brick', tmp_path)
  again = {split: _read(builder, split) for split in ('train', 'test')}
  for split in ('train', 'test'):
    assert [ex['filename'] for ex in again[split]] == [ex['filename'] for ex in brick[split]]
    for a, b in zip(again[split], brick[split]):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['mask'], b['mask'])
  # Preparing again in the same data_dir reuses the cached files.
  cached = _prepare(textures, 'textures/brick', tmp_path)
  assert cached.info.splits['test'].num_examples == 150


# ----------------------------------------------------------------------------------------------
# defects


# Largest bounding-box side each kind may reach, from its documented size (+ brush width, rounding).
_MAX_EXTENT = {'scratch': 60 + 5, 'hole': 2 * 14 + 2, 'stain': int(2 * 25 * 1.36) + 2,
               'crack': 80 + 4, 'patch': 32}


@pytest.mark.parametrize('kind', defects.DEFECT_KINDS)
def test_defect_mask_covers_every_change(kind):
  source = np.random.default_rng(1).integers(0, 256, size=(176, 512)).astype(np.uint8)
  for seed in range(25):
    tile = np.full((TILE, TILE), 128, dtype=np.uint8)
    new, mask = defects.draw_defect(kind, tile, np.random.default_rng(seed), source)
    assert np.all(tile == 128), 'the input tile must not be modified'
    assert new.dtype == np.uint8 and new.shape == tile.shape
    assert mask.dtype == np.uint8 and mask.shape == tile.shape
    assert set(np.unique(mask)) <= {0, 1}
    changed = new != tile
    assert not np.any(changed & (mask == 0)), 'pixels changed outside the mask'
    assert changed.any() and 0 < mask.sum() < mask.size // 4
    rows, cols = np.nonzero(mask)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    assert extent <= _MAX_EXTENT[kind], (seed, extent)
    if kind == 'patch':
      assert 16 <= rows.max() - rows.min() + 1 <= 32 and 16 <= cols.max() - cols.min() + 1 <= 32


@pytest.mark.parametrize('texture', textures.TEXTURES)
def test_defects_are_visible_on_real_texture(texture):
  photo = textures.load_photo(texture)
  other = textures.load_photo(next(t for t in textures.TEXTURES if t != texture))
  for kind in defects.DEFECT_KINDS:
    for seed in range(5):
      rng = np.random.default_rng(seed)
      row, col = textures.tile_offsets(rng, 1, textures.TEST_ROWS)[0]
      tile = photo[row:row + TILE, col:col + TILE]
      new, mask = defects.draw_defect(kind, tile, rng, other[textures.TEST_ROWS[0]:])
      change = np.abs(new.astype(np.int32) - tile)[mask == 1].mean()
      # Well above zero and above the photographs' own spread (std 26-39 gray levels).
      assert change > 40, (kind, seed, change)


def test_draw_defect_rejects_unknown_kind():
  with pytest.raises(ValueError, match='scratch'):
    defects.draw_defect('dent', np.zeros((TILE, TILE), np.uint8), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# digits


def test_digits_splits_match_load_digits(digit3):
  data = sklearn.datasets.load_digits()
  counts = np.bincount(data.target)
  train, test = digit3['train'], digit3['test']
  normal_test = [ex for ex in test if ex['label'] == 0]
  anomalies = [ex for ex in test if ex['label'] == 1]
  assert len(train) == counts[3] * 4 // 5 and len(normal_test) == counts[3] - len(train)
  kinds, kind_counts = np.unique([ex['defect_type'] for ex in anomalies], return_counts=True)
  assert dict(zip(kinds, kind_counts)) == {str(d): counts[d] for d in range(10) if d != 3}
  # The normal digit's images are split, disjointly, into train and test and cover the class.
  index = lambda ex: int(ex['filename'].split('/')[1][:-4])  # noqa: E731
  train_ids = {index(ex) for ex in train}
  test_ids = {index(ex) for ex in normal_test}
  assert not train_ids & test_ids
  assert train_ids | test_ids == set(np.flatnonzero(data.target == 3).tolist())
  for ex in train + test:
    _check_format(ex, 8)
    i = index(ex)
    assert ex['defect_type'] == ('good' if data.target[i] == 3 else str(data.target[i]))
    assert ex['has_mask'] == (ex['label'] == 0)
    assert not ex['mask'].any()
    np.testing.assert_array_equal(ex['image'][..., 0], np.round(data.images[i] * 255 / 16))


def test_digits_split_is_seeded_per_config():
  a = digits.split_indices(3, seed=2003)
  np.testing.assert_array_equal(a['train'], digits.split_indices(3, seed=2003)['train'])
  assert not np.array_equal(a['train'], digits.split_indices(3, seed=7)['train'])


# ----------------------------------------------------------------------------------------------
# make_builder


@pytest.mark.parametrize('module, bad, valid', [
    (textures, 'textures/marble', 'textures/brick, textures/grass, textures/gravel'),
    (textures, 'digits/3', 'textures/gravel'),
    (digits, 'digits/10', 'digits/0, digits/1'),
    (digits, 'textures/brick', 'digits/9'),
])
def test_make_builder_rejects_bad_name(module, bad, valid, tmp_path):
  with pytest.raises(errors.UsageError, match=valid):
    _prepare(module, bad, tmp_path)


@pytest.mark.parametrize('module, name', [(textures, 'textures/grass'), (digits, 'digits/5')])
def test_failure_during_writing_leaves_no_dataset(module, name, tmp_path, monkeypatch):
  builder_cls = textures.Textures if module is textures else digits.Digits
  generate = builder_cls.generate_split

  def failing(config_name, split, seed):  # Ctrl-C or a full disk halfway through a split.
    for i, example in enumerate(generate(config_name, split, seed)):
      if i == 20:
        raise OSError('No space left on device')
      yield example

  with monkeypatch.context() as m:
    m.setattr(builder_cls, 'generate_split', staticmethod(failing))
    with pytest.raises(OSError, match='No space left'):
      _prepare(module, name, tmp_path)
  assert not list(tmp_path.rglob('dataset_info.json')) and not list(tmp_path.rglob('incomplete.*'))
  builder = _prepare(module, name, tmp_path)  # A fresh, complete build.
  assert builder.is_prepared() and builder.info.splits['train'].num_examples > 20


def test_a_prepared_dataset_is_read_while_another_run_holds_the_prepare_lock(tmp_path):
  """A run writing one dataset holds `<data_dir>/.prepare.lock`; a run reading another dataset,
  already written, goes on, and one that must write waits until the lock is released."""
  _prepare(digits, 'digits/2', tmp_path)
  held, release = threading.Event(), threading.Event()

  def writer():  # Another run, preparing a dataset (a process of its own: flock is per open file).
    with atomic_files.exclusive_lock(tmp_path / '.prepare.lock'):
      held.set()
      release.wait(60)

  def reader(name, done):
    done.append(_prepare(digits, name, tmp_path))

  lock_holder = threading.Thread(target=writer, daemon=True)
  lock_holder.start()
  assert held.wait(30)
  try:
    prepared, unprepared = [], []
    threads = [threading.Thread(target=reader, args=args, daemon=True)
               for args in (('digits/2', prepared), ('digits/4', unprepared))]
    for t in threads:
      t.start()
    threads[0].join(30)
    assert prepared and prepared[0].info.splits['train'].num_examples > 0
    threads[1].join(0.5)
    assert not unprepared, 'a dataset was written while another run held the prepare lock'
  finally:
    release.set()
  threads[1].join(60)
  assert unprepared and unprepared[0].is_prepared()


def test_preparing_a_dataset_leaves_no_temporary_folders(tmp_path, monkeypatch):
  """tfds made an empty temporary folder for each builder of a dataset not yet prepared, for
  metadata from its GCS bucket, and never removed it; every builder of vivano_jax was left one,
  also when built without get_builder (and thread by thread, as folder datasets are)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from vivano_jax import datasets  # pylint: disable=g-import-not-at-top
  from vivano_jax.datasets import folder, mvtec_ad, one_class  # pylint: disable=g-import-not-at-top
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  cfg = load_config('tiny').dataset
  cfg.data_dir = str(tmp_path / 'tfds')
  builder = datasets.get_builder(cfg)
  assert builder.info.splits['train'].num_examples > 0
  data_dir = str(tmp_path / 'unprepared')
  made = [folder.Folder(config=folder.FolderConfig(name='a_1_2', root='/x'), data_dir=data_dir),
          mvtec_ad.MvtecAd(config='bottle', data_dir=data_dir),
          one_class.Cifar10OneClass(config='cat', data_dir=data_dir, manual_dir='/x')]
  assert [b.name for b in made] == ['folder', 'mvtec_ad', 'cifar10_one_class']
  assert list(scratch.iterdir()) == [] and tempfile.tempdir == str(scratch)
