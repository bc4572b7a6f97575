"""Tests of the builders that read local files: mvtec_ad, folder, mnist/cifar10_one_class.

Synthetic folders are written with PIL into tmp_path; the real data in ../shared/data (magnetic
tile, MNIST, CIFAR-10) is read in place, and those tests skip when it is absent.
"""

import concurrent.futures
import gzip
import os
import pathlib
import re
import shutil
import tempfile
import time
import zipfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from vivano_jax import config_files  # noqa: E402
from vivano_jax import datasets  # noqa: E402
from vivano_jax import errors  # noqa: E402
from vivano_jax import image_io  # noqa: E402
from vivano_jax.datasets import folder  # noqa: E402
from vivano_jax.datasets import image_files  # noqa: E402
from vivano_jax.datasets import mvtec_ad  # noqa: E402
from vivano_jax.datasets import mvtec_layout  # noqa: E402
from vivano_jax.datasets import one_class  # noqa: E402
from vivano_jax.datasets import one_class_sources  # noqa: E402

tf.config.set_visible_devices([], 'GPU')

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f'real test data not found at {SHARED_DATA} (only present on the project machines)')


def make_cfg(name, manual_dir=None, **kwargs):
  return ml_collections.ConfigDict(
      dict(name=name, manual_dir=None if manual_dir is None else str(manual_dir), **kwargs))


def load_split(builder, split, decode_images=True):
  """All examples of a split as numpy dicts, strings decoded (images and masks too unless
  `decode_images` is False: their PNG bytes then). Read in batches when every image has one shape
  (the one-class datasets: 10,000s of images, each tf.data element costs more than it)."""
  decoders = None if decode_images else {k: tfds.decode.SkipDecoding() for k in ('image', 'mask')}
  ds = builder.as_dataset(split=split, decoders=decoders)
  features = builder.info.features
  if all(None not in features[k].shape for k in ('image', 'mask')):
    batches = tfds.as_numpy(ds.batch(1024))
    raw = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b['label']))]
  else:
    raw = tfds.as_numpy(ds)
  examples = []
  for ex in raw:
    ex['defect_type'] = ex['defect_type'].decode()
    ex['filename'] = ex['filename'].decode()
    examples.append(ex)
  return examples


def finished_datasets(data_dir):
  """Every folder under data_dir that tfds could load as a prepared dataset."""
  return sorted(str(p.parent) for p in pathlib.Path(data_dir).rglob('dataset_info.json'))


def leftovers(data_dir):
  """Partial-write folders tfds may leave (incomplete.*) and finished-looking datasets."""
  data_dir = pathlib.Path(data_dir)
  return finished_datasets(data_dir) + sorted(str(p) for p in data_dir.rglob('incomplete.*'))


def write_image(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def write_layout(root, *, train=3, test=None, masks=True, size=(20, 24), rgb=False, seed=0):
  """A small folder in the MVTec AD layout; images [H, W] (or [H, W, 3]) with H, W = size.

  `test` maps defect type -> image count ('good' included); masks mark a rectangle with 255.
  """
  rng = np.random.default_rng(seed)
  shape = size + (3,) if rgb else size
  test = {'good': 2, 'crack': 2} if test is None else test
  for i in range(train):
    write_image(root / 'train' / 'good' / f'{i:03d}.png', rng.integers(0, 256, shape))
  for defect, count in test.items():
    for i in range(count):
      write_image(root / 'test' / defect / f'{i:03d}.png', rng.integers(0, 256, shape))
      if defect != 'good' and masks:
        mask = np.zeros(size, np.uint8)
        mask[2:6, 3:9] = 255
        write_image(root / 'ground_truth' / defect / f'{i:03d}_mask.png', mask)
  return root


# --- folder: real data


@needs_shared_data
def test_folder_magnetic_tile(tmp_path):
  root = SHARED_DATA / 'magnetic_tile'
  builder = folder.make_builder(make_cfg('folder', root), data_dir=tmp_path)
  assert builder.builder_config.name.startswith('magnetic_tile_')
  assert builder.info.features['image'].shape == (None, None, 1)  # All images are grayscale.
  train, test = load_split(builder, 'train'), load_split(builder, 'test')
  assert len(train) == 761 and len(test) == 583

  # Per-defect counts: the dataset's README and an independent listing of the folders.
  counts = {d: sum(e['defect_type'] == d for e in test) for d in {e['defect_type'] for e in test}}
  assert counts == {'good': 191, 'blowhole': 115, 'break': 85, 'crack': 57, 'fray': 32,
                    'uneven': 103}
  assert counts == {d: len(os.listdir(root / 'test' / d)) for d in os.listdir(root / 'test')}
  assert {e['defect_type'] for e in train} == {'good'} and not any(e['label'] for e in train)

  for ex in test:
    assert ex['mask'].shape == ex['image'].shape[:2] + (1,)
    assert ex['has_mask']  # Every defect type has ground truth.
    assert ex['label'] == (ex['defect_type'] != 'good')
    assert set(np.unique(ex['mask'])) <= {0, 1}
  # Images equal a PIL read of the file; masks are the files' nonzero pixels.
  for ex in test[::50]:
    pixels = np.asarray(Image.open(root / ex['filename']).convert('L'))
    np.testing.assert_array_equal(ex['image'][..., 0], pixels)
    if ex['defect_type'] != 'good':
      stem = pathlib.Path(ex['filename']).stem
      gt = np.asarray(Image.open(root / 'ground_truth' / ex['defect_type'] / f'{stem}_mask.png'))
      np.testing.assert_array_equal(ex['mask'][..., 0], gt > 0)

  # The 4 empty uneven masks in the source are accepted as valid (empty) ground truth.
  gt_dir = root / 'ground_truth' / 'uneven'
  empty_files = sum(np.asarray(Image.open(gt_dir / n)).max() == 0 for n in os.listdir(gt_dir))
  empty = [e for e in test if e['defect_type'] == 'uneven' and e['mask'].max() == 0]
  assert empty_files == len(empty) == 4 and all(e['has_mask'] for e in empty)

  # A second call loads the cache (same config) without decoding anything again.
  again = folder.make_builder(make_cfg('folder', root), data_dir=tmp_path)
  assert again.builder_config.name == builder.builder_config.name
  assert again.info.splits['test'].num_examples == 583


# --- folder: synthetic


def test_folder_without_ground_truth_and_mixed_channels(tmp_path):
  root = write_layout(tmp_path / 'parts', masks=False, test={'good': 1, 'dent': 2})
  write_image(root / 'test' / 'dent' / '005.JPG', np.full((20, 24, 3), (200, 10, 10)))  # Color.
  (root / 'test' / 'dent' / '.DS_Store').write_bytes(b'\0\1junk')  # Hidden: ignored.
  (root / 'test' / 'dent' / '._000.png').write_bytes(b'\0\5\26\7')  # AppleDouble: ignored.
  (root / 'train' / 'good' / 'Thumbs.db').write_bytes(b'\xd0\xcf')
  for macosx in ('test', 'train/good'):  # A zip unpacked from a Mac: its __MACOSX/ is ignored.
    (root / macosx / '__MACOSX' / 'dent').mkdir(parents=True)
    (root / macosx / '__MACOSX' / 'dent' / '._000.png').write_bytes(b'\0\5\26\7')
  builder = folder.make_builder(make_cfg('folder', root), data_dir=tmp_path / 'data')
  assert builder.info.features['image'].shape == (None, None, 3)  # One color image -> RGB.
  test = {e['filename']: e for e in load_split(builder, 'test')}
  assert sorted(test) == ['test/dent/000.png', 'test/dent/001.png', 'test/dent/005.JPG',
                          'test/good/000.png']
  dent = test['test/dent/000.png']
  assert dent['label'] == 1 and not dent['has_mask'] and dent['mask'].max() == 0
  assert test['test/good/000.png']['has_mask']
  gray = np.asarray(Image.open(root / 'test' / 'dent' / '000.png'))
  np.testing.assert_array_equal(dent['image'], np.repeat(gray[..., None], 3, axis=-1))


def test_folder_cache_key_follows_the_files(tmp_path, monkeypatch):
  root = write_layout(tmp_path / 'parts')
  data_dir = tmp_path / 'data'
  first = folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  # Unchanged folder: loaded from the cache, nothing is decoded.
  with monkeypatch.context() as m:
    m.setattr(mvtec_layout, 'validate_images', lambda *a: pytest.fail('decoded a cached folder'))
    cached = folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
    assert cached.builder_config.name == first.builder_config.name
  # A new file: same path hash, new content hash, a fresh build that includes it.
  write_image(root / 'train' / 'good' / '099.png', np.zeros((20, 24)))
  second = folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  old_name, new_name = first.builder_config.name, second.builder_config.name
  assert old_name != new_name and old_name.rsplit('_', 1)[0] == new_name.rsplit('_', 1)[0]
  assert second.info.splits['train'].num_examples == 4
  # Another folder with identical content: different path hash.
  other = write_layout(tmp_path / 'copy' / 'parts')
  third = folder.make_builder(make_cfg('folder', other), data_dir=data_dir)
  assert third.builder_config.name.split('_')[1] != first.builder_config.name.split('_')[1]


# --- bad input


def _corrupt(root):
  (root / 'test' / 'crack' / '001.png').write_bytes(b'\x89PNG\r\n\x1a\n' + os.urandom(200))
  return root / 'test' / 'crack' / '001.png'


def _truncate(root):
  path = root / 'train' / 'good' / '002.png'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path


def _remove_mask(root):
  (root / 'ground_truth' / 'crack' / '001_mask.png').unlink()
  return root / 'test' / 'crack' / '001.png'


def _resize_mask(root):
  write_image(root / 'ground_truth' / 'crack' / '000_mask.png', np.zeros((10, 10)))
  return root / 'ground_truth' / 'crack' / '000_mask.png'


def _non_image(root):
  (root / 'test' / 'good' / 'notes.txt').write_text('camera settings')
  return root / 'test' / 'good' / 'notes.txt'


def _capital_good(root):
  (root / 'test' / 'good').rename(root / 'test' / 'Good')  # Not to be read as a defect type.
  return root / 'test' / 'Good'


def _no_train_good(root):
  for p in (root / 'train' / 'good').iterdir():
    p.unlink()
  (root / 'train' / 'good').rmdir()
  return root / 'train' / 'good'


def _empty_train_good(root):
  for p in (root / 'train' / 'good').iterdir():
    p.unlink()
  return root / 'train' / 'good'


def _missing_root(root):
  return root.parent / 'no_such_folder'


def _overall_folder(root):
  (root / 'test' / 'crack').rename(root / 'test' / 'overall')  # The metrics' row of all images.
  (root / 'ground_truth' / 'crack').rename(root / 'ground_truth' / 'overall')
  return root / 'test' / 'overall'


def _frames(size, values=(0, 128, 255)):
  return [Image.fromarray(np.full(size, v, np.uint8)) for v in values]


def _multipage_tiff(root):  # Which page is the picture? Not silently the first.
  path = root / 'train' / 'good' / '001.tif'
  first, *rest = _frames((20, 24))
  first.save(path, save_all=True, append_images=rest)
  (root / 'train' / 'good' / '001.png').unlink()
  return path


def _animated_mask(root):  # An APNG: the first frame need not be the mask that is shown.
  path = root / 'ground_truth' / 'crack' / '000_mask.png'
  first, *rest = _frames((20, 24))
  first.save(path, save_all=True, append_images=rest)
  return path


def _test_is_a_file(root):
  shutil.rmtree(root / 'test')
  (root / 'test').write_text('x')
  return root / 'test'


def _capital_ground_truth(root):  # Not read, its masks would be missing without a word.
  (root / 'ground_truth').rename(root / 'Ground_Truth')
  return root / 'Ground_Truth'


def _capital_train(root):
  (root / 'train').rename(root / 'Train')
  return root / 'Train'


def _capital_train_good(root):
  (root / 'train' / 'good').rename(root / 'train' / 'GOOD')
  return root / 'train' / 'GOOD'


@pytest.mark.parametrize('damage', [_corrupt, _truncate, _remove_mask, _resize_mask, _non_image,
                                    _capital_good, _no_train_good, _empty_train_good,
                                    _missing_root, _overall_folder, _multipage_tiff,
                                    _animated_mask, _capital_ground_truth, _capital_train,
                                    _capital_train_good, _test_is_a_file])
def test_folder_bad_input(tmp_path, damage):
  root = write_layout(tmp_path / 'parts')
  named = damage(root)
  manual_dir = named if damage is _missing_root else root
  data_dir = tmp_path / 'data'
  with pytest.raises(errors.DataError, match=re.escape(str(named))) as e:
    folder.make_builder(make_cfg('folder', manual_dir), data_dir=data_dir)
  assert leftovers(data_dir) == []
  if damage is _test_is_a_file:
    assert f'{named}: a file, not a folder' in str(e.value)


def test_files_of_several_frames_are_refused_but_a_cameras_mpo_is_read(tmp_path):
  gif = tmp_path / 'anim.gif'
  first, *rest = _frames((6, 5))
  first.save(gif, save_all=True, append_images=rest)
  for read in (image_files.read_image, image_io.read_mask):
    with pytest.raises(errors.DataError, match=re.escape(f'{gif}: holds 3 frames')):
      read(gif)
  mpo = tmp_path / 'photo.jpg'  # A camera's JPEG with a preview: the photo is its first image.
  Image.new('L', (6, 5), 200).save(mpo, format='MPO', save_all=True,
                                   append_images=[Image.new('L', (3, 2), 0)])
  with Image.open(mpo) as image:
    assert image.format == 'MPO' and image.n_frames == 2
  image = image_files.read_image(mpo)
  assert image.shape == (5, 6, 1) and abs(int(image.mean()) - 200) <= 2


def test_a_name_that_is_not_utf8_is_named_readably(tmp_path):
  root = write_layout(tmp_path / 'parts')
  for where, old, new in (('train/good', '000.png', b'caf\xe9.png'),
                          ('ground_truth/crack', '001_mask.png', b'\xff_mask.png')):
    os.rename(root / where / old, os.fsencode(root / where) + b'/' + new)  # Latin-1 bytes.
  with pytest.raises(errors.DataError) as e:
    folder.make_builder(make_cfg('folder', root), data_dir=tmp_path / 'data')
  message = str(e.value)
  assert f'{root}/train/good/caf\ufffd.png: its name is not UTF-8 text' in message, message
  assert f'{root}/ground_truth/crack/\ufffd_mask.png: its name is not UTF-8' in message, message
  assert leftovers(tmp_path / 'data') == []


def test_relative_data_folders_become_absolute_before_the_run_records_them(tmp_path, monkeypatch):
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  config = load_config('tiny')
  config.dataset.name, config.dataset.manual_dir, config.dataset.data_dir = 'folder', 'parts', '~/t'
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  datasets.resolve_config(config)  # Train and export call it before config.json is written.
  assert config.dataset.manual_dir == str(tmp_path / 'parts')  # Not another cwd's 'parts'.
  assert config.dataset.data_dir == str(tmp_path / 'home' / 't')
  config.dataset.manual_dir = config.dataset.data_dir = ''
  datasets.resolve_config(config)
  assert config.dataset.manual_dir == config.dataset.data_dir == ''  # Unset stays unset.


def test_ignored_masks_and_folders_are_warned_on_the_console(tmp_path, capsys):
  root = write_layout(tmp_path / 'parts', test={'good': 2, 'crack': 2, 'dent': 0})
  (root / 'ground_truth' / 'crack').rename(root / 'ground_truth' / 'cracks')  # A misnamed folder.
  (root / 'test' / 'dent').mkdir(parents=True)
  layout = mvtec_layout.scan_layout(root, masks_required=False)
  assert not any(e.has_mask for e in layout.test if e.defect_type == 'crack')
  err = capsys.readouterr().err
  assert (f'warning: {root / "ground_truth" / "cracks"}: no defective test folder test/cracks/'
          in err)
  assert f'warning: {root / "test" / "dent"}: empty class folder, ignored' in err
  mvtec_layout.scan_layout(root, masks_required=False)  # Scanned again for the next split:
  assert capsys.readouterr().err == ''  # each warning is said once.


def test_masks_that_mark_nothing_or_most_of_every_image_are_warned(tmp_path, capsys):
  root = write_layout(tmp_path / 'parts', test={'good': 1, 'crack': 2, 'dent': 2, 'hole': 2})
  for i in range(2):
    write_image(root / 'ground_truth' / 'dent' / f'{i:03d}_mask.png', np.zeros((20, 24)))
    inverted = np.full((20, 24), 255)
    inverted[5:9, 3:8] = 0  # A dark defect drawn on white.
    write_image(root / 'ground_truth' / 'hole' / f'{i:03d}_mask.png', inverted)
  write_image(root / 'ground_truth' / 'crack' / '000_mask.png', np.zeros((20, 24)))  # One: fine.
  builder = folder.make_builder(make_cfg('folder', root), data_dir=tmp_path / 'data')
  err = capsys.readouterr().err
  gt = root / 'ground_truth'
  assert (f"warning: {gt / 'dent'}: none of its 2 masks marks a defect pixel (values > 0), so the "
          "pixel metrics of 'dent' are n/a" in err), err
  assert f"warning: {gt / 'hole'}: each of its 2 masks marks more than half" in err
  assert str(gt / 'crack') not in err
  masks = {e['filename']: e['mask'].mean() for e in load_split(builder, 'test')}
  assert masks['test/dent/000.png'] == 0 and masks['test/hole/000.png'] > 0.9  # Read as they are.


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
  """A phone's photo stores its pixels turned and says so in an EXIF tag; its mask is drawn on the
  image as shown. Both are read as shown, so the defect and its mask line up."""
  shown = np.zeros((24, 40, 3), np.uint8)  # H 24, W 40 as a viewer shows it.
  shown[4:10, 25:35] = 255  # The defect.
  exif = Image.Exif()
  exif[0x0112] = 6  # Shown turned 90 degrees clockwise from the stored pixels.
  stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # W 24, H 40 on disk.
  stored.save(tmp_path / 'photo.png', exif=exif.tobytes())
  Image.fromarray(shown[..., 0]).save(tmp_path / 'photo_mask.png')
  image = image_files.read_image(tmp_path / 'photo.png', 3)
  np.testing.assert_array_equal(image, shown)
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'photo_mask.png'), shown[..., 0] > 0)
  data, shape = image_files.image_png(tmp_path / 'photo.png', 3)  # Not the stored bytes.
  assert shape == (24, 40) and tf.io.decode_png(data).numpy().shape == (24, 40, 3)
  # A mask drawn on the stored pixels instead: the size error says why the sizes differ.
  root = write_layout(tmp_path / 'parts', rgb=True, size=(24, 40))
  stored.save(root / 'test' / 'crack' / '000.png', exif=exif.tobytes())
  write_image(root / 'ground_truth' / 'crack' / '000_mask.png', np.zeros((40, 24)))
  with pytest.raises(errors.DataError, match='EXIF orientation tag'):
    mvtec_layout.validate_images(mvtec_layout.scan_layout(root, masks_required=True))

@pytest.mark.parametrize('mode', ['L', 'I;16', 'P', 'RGBA', 'CMYK', 'RGB'])
def test_a_turned_uncompressed_tiff_is_read_as_shown(tmp_path, mode):
  """Pillow 13 maps an uncompressed TIFF from its file at the size its orientation tag turns it
  to: one turned a quarter (tags 5-8) in 8-bit gray, a palette, 16 bits, RGBA or CMYK came out with
  its rows scrambled, for training, predict and masks alike (RGB was read right)."""
  rng = np.random.default_rng(0)
  stored = (Image.fromarray(rng.integers(0, 65535, (24, 40), np.uint16)) if mode == 'I;16' else
            Image.fromarray(rng.integers(0, 256, (24, 40, 3), np.uint8)).convert(mode))
  stored.save(tmp_path / 'plain.tif')
  exif = Image.Exif()
  exif[0x0112] = 6  # Shown turned 90 degrees clockwise from the stored pixels.
  stored.save(tmp_path / 'turned.tif', exif=exif.tobytes())
  shown = np.rot90(image_files.read_image(tmp_path / 'plain.tif'), k=-1)
  assert shown.shape[:2] == (40, 24)
  np.testing.assert_array_equal(image_files.read_image(tmp_path / 'turned.tif'), shown)
  data, shape = image_files.image_png(tmp_path / 'turned.tif', shown.shape[-1])  # As stored.
  assert shape == (40, 24)
  np.testing.assert_array_equal(tf.io.decode_png(data, channels=shown.shape[-1]).numpy(), shown)
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'turned.tif'),
                                np.rot90(image_io.read_mask(tmp_path / 'plain.tif'), k=-1))


def test_broken_symlinks_are_one_error_naming_the_file(tmp_path):
  root = write_layout(tmp_path / 'parts')
  dangling = root / 'train' / 'good' / '007.png'
  dangling.symlink_to(root / 'train' / 'good' / 'gone.png')
  data_dir = tmp_path / 'data'
  with pytest.raises(errors.DataError, match=re.escape(f'{dangling}: broken symlink')):
    folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  dangling.unlink()
  loop = root / 'test' / 'crack' / '009.png'
  loop.symlink_to(loop)
  with pytest.raises(errors.DataError, match=re.escape(f'{loop}: broken symlink')):
    folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  loop.unlink()
  # A looping class folder, and a looping dataset root.
  (root / 'test' / 'dent').symlink_to(root / 'test' / 'dent')
  with pytest.raises(errors.DataError, match=re.escape(f'{root / "test" / "dent"}: broken')):
    folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  (root / 'test' / 'dent').unlink()
  (tmp_path / 'loop').symlink_to(tmp_path / 'loop')
  with pytest.raises(errors.DataError, match='dataset.manual_dir'):
    folder.make_builder(make_cfg('folder', tmp_path / 'loop'), data_dir=data_dir)
  assert leftovers(data_dir) == []
  # A symlink to a real file is read like the file.
  (root / 'train' / 'good' / '007.png').symlink_to(root / 'train' / 'good' / '000.png')
  builder = folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  train = {e['filename']: e['image'] for e in load_split(builder, 'train')}
  np.testing.assert_array_equal(train['train/good/007.png'], train['train/good/000.png'])


@pytest.mark.parametrize('name, manual_dir, layout', [
    ('folder', None, 'train/good/'),
    ('folder', '', 'train/good/'),
    ('folder', 'missing', 'train/good/'),
    ('mvtec_ad/bottle', None, '<category>/train/good/'),
    ('mvtec_ad/bottle', 'missing', 'mvtec.com'),
    ('mnist_one_class/3', 'missing', 't10k-images-idx3-ubyte.gz'),
    ('cifar10_one_class/cat', 'missing', 'test/<class>/*.jpg'),
])
def test_manual_dir_empty_or_missing_is_one_line(tmp_path, name, manual_dir, layout):
  if manual_dir == 'missing':
    manual_dir = tmp_path / 'no_such_folder'
  cfg = make_cfg(name, manual_dir, data_dir=str(tmp_path / 'data'))
  error = errors.DataError if manual_dir else errors.UsageError  # Missing files; unset field.
  with pytest.raises(error) as info:
    datasets.get_builder(cfg)
  message = str(info.value)
  assert type(info.value) is error and '\n' not in message
  assert 'dataset.manual_dir' in message and repr(name) in message and layout in message
  if manual_dir:
    assert str(manual_dir) in message
  assert leftovers(tmp_path / 'data') == []


@pytest.mark.parametrize('name, valid', [
    ('mvtec', 'known builders: cifar10_one_class, digits, folder'),
    ('folder/parts', "unknown dataset.name='folder/parts'; valid names: folder"),
    ('mvtec_ad/zip', 'mvtec_ad/zipper'),
    ('mnist_one_class/10', 'valid: 0, 1, 2'),
    ('cifar10_one_class/cats', 'airplane, automobile'),
])
def test_unknown_dataset_name_is_a_usage_error(tmp_path, name, valid):
  with pytest.raises(errors.UsageError, match=re.escape(valid)) as info:
    datasets.get_builder(make_cfg(name, tmp_path, data_dir=str(tmp_path / 'data')))
  assert '\n' not in str(info.value)


def test_failure_during_writing_leaves_no_dataset(tmp_path, monkeypatch):
  root = write_layout(tmp_path / 'parts', test={'good': 2, 'crack': 4})
  data_dir = tmp_path / 'data'
  calls = []
  read_mask = image_io.read_mask

  def failing_read_mask(path):  # The disk goes away after validation, halfway through writing.
    calls.append(path)
    if len(calls) > 4 + 2:  # Validation decodes the 4 masks, then writing reads 2 of them.
      raise OSError(f'{path}: device not ready')
    return read_mask(path)

  with monkeypatch.context() as m:
    m.setattr(image_io, 'read_mask', failing_read_mask)
    with pytest.raises(OSError, match='device not ready'):
      folder.make_builder(make_cfg('folder', root), data_dir=data_dir)
  assert len(calls) == 7 and leftovers(data_dir) == []
  builder = folder.make_builder(make_cfg('folder', root), data_dir=data_dir)  # Fresh build.
  assert builder.is_prepared() and builder.info.splits['test'].num_examples == 6


def test_runs_side_by_side_write_a_dataset_once(tmp_path, monkeypatch):
  """Two runs started together on the same folder (a sweep's `xargs -P 2`): one writes the
  dataset, the other waits for it and reuses it, instead of failing on tfds's rename."""
  root = write_layout(tmp_path / 'parts')
  data_dir = tmp_path / 'data'
  spans, original = [], tfds.core.DatasetBuilder.download_and_prepare

  def slow(self, *args, **kwargs):  # Widens the window in which the two would overlap.
    start = time.monotonic()
    time.sleep(0.5)
    original(self, *args, **kwargs)
    spans.append((start, time.monotonic()))

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', slow)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    builders = list(pool.map(lambda _: folder.make_builder(make_cfg('folder', root), data_dir),
                             range(2)))
  (a0, a1), (b0, b1) = sorted(spans)
  assert a1 <= b0  # One after the other.
  assert [b.info.splits['test'].num_examples for b in builders] == [4, 4]
  assert len(finished_datasets(data_dir)) == 1
  # A data_dir where the lock cannot be created (read-only, prepared by someone else) is read.
  from vivano_jax.datasets import builder as builder_lib  # pylint: disable=g-import-not-at-top

  def no_lock(path, *args, **kwargs):
    raise PermissionError(f'{path}: read-only file system')

  monkeypatch.setattr(builder_lib, 'open', no_lock, raising=False)
  again = folder.make_builder(make_cfg('folder', root), data_dir)
  assert again.info.splits['test'].num_examples == 4


# --- pixel formats


def test_image_and_mask_conversions(tmp_path):
  wide = np.array([[0, 257 * 100, 65535]], np.uint16)  # 16-bit gray: scaled by 1/257.
  Image.fromarray(wide).save(tmp_path / 'wide.png')
  np.testing.assert_array_equal(image_files.read_image(tmp_path / 'wide.png', 1)[..., 0],
                                [[0, 100, 255]])
  # Every 16-bit file is scaled alike, however dark: PIL reads a PGM of maxval 65535 as mode 'I'.
  dark = np.array([0, 128, 255], '>u2').tobytes()  # 16-bit values that would fit in 8 bits.
  (tmp_path / 'dark.pgm').write_bytes(b'P5\n3 1\n65535\n' + dark)
  with Image.open(tmp_path / 'dark.pgm') as image:
    assert image.mode == 'I'
  assert image_io.is_image_name('dark.pgm') and image_io.is_image_name('frame.PPM')
  np.testing.assert_array_equal(image_files.read_image(tmp_path / 'dark.pgm', 1)[..., 0],
                                [[0, 0, 1]])
  # A 32-bit integer TIFF: 8- or 16-bit data alike in its container, so it is refused, by name.
  Image.fromarray(np.array([[0, 200, 255]], np.int32)).save(tmp_path / 'wide32.tif')
  with pytest.raises(errors.DataError, match=r'wide32\.tif: 32-bit integer TIFFs are not'):
    image_files.read_image(tmp_path / 'wide32.tif', 1)
  rgba = np.zeros((2, 3, 4), np.uint8)
  rgba[..., 1], rgba[..., 3] = 77, 10  # Alpha is dropped, not composited.
  write_image(tmp_path / 'rgba.png', rgba)
  assert image_files.read_image(tmp_path / 'rgba.png', 3)[0, 0].tolist() == [0, 77, 0]
  gray_palette = Image.fromarray(np.array([[0, 128, 255]], np.uint8)).convert('P')
  gray_palette.save(tmp_path / 'palette.png')
  with Image.open(tmp_path / 'palette.png') as image:
    assert image.mode == 'P' and image_files.image_channels(image) == 1
  color_mask = np.zeros((2, 3, 3), np.uint8)
  color_mask[0, 1] = (200, 0, 0)  # Any channel > 0 marks a defect.
  write_image(tmp_path / 'mask.png', color_mask)
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'mask.png'),
                                [[False, True, False], [False, False, False]])
  # A palette mask whose index 0 is white: the colors count, not the indices.
  palette_mask = Image.new('P', (2, 1))
  palette_mask.putdata([0, 1])
  palette_mask.putpalette([255, 255, 255, 0, 0, 0])
  palette_mask.save(tmp_path / 'palette_mask.png')
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'palette_mask.png'), [[True, False]])
  # Gray with alpha: read as shown over black (a transparent pixel is no defect, whatever value it
  # stores; alpha itself marks nothing); uniform alpha is ignored; 16-bit: any value > 0.
  write_image(tmp_path / 'la.png', np.array([[[0, 255], [9, 0], [7, 40]]], np.uint8))
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'la.png'), [[False, False, True]])
  write_image(tmp_path / 'la_opaque.png', np.array([[[0, 255], [9, 255]]], np.uint8))
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'la_opaque.png'), [[False, True]])
  # A red stroke on a transparent white layer (an editor's annotation layer): the stroke only.
  layer = np.zeros((3, 4, 4), np.uint8)
  layer[..., :3] = 255
  layer[1, 1:3] = (255, 0, 0, 255)
  write_image(tmp_path / 'layer.png', layer)
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'layer.png'), layer[..., 3] > 0)
  Image.fromarray(np.array([[0, 1, 65535]], np.uint16)).save(tmp_path / 'mask16.png')
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'mask16.png'), [[False, True, True]])
  assert image_io.read_mask(tmp_path / 'mask16.png').dtype == bool
  # A JPEG mask: compression noise around the drawn region is not defect (above half the maximum).
  drawn = np.zeros((64, 64), np.uint8)
  drawn[20:37, 11:50] = 255
  Image.fromarray(drawn).save(tmp_path / 'mask.jpg', quality=75)
  assert (np.asarray(Image.open(tmp_path / 'mask.jpg')) > 0).sum() > 1.2 * (drawn > 0).sum()
  np.testing.assert_array_equal(image_io.read_mask(tmp_path / 'mask.jpg'), drawn > 0)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / 'empty.jpg')
  assert not image_io.read_mask(tmp_path / 'empty.jpg').any()
  # A PNG already in the stored format is copied as is; anything else is re-encoded.
  write_image(tmp_path / 'gray.png', np.arange(12).reshape(3, 4))
  data, shape = image_files.image_png(tmp_path / 'gray.png', 1)
  assert data == (tmp_path / 'gray.png').read_bytes() and shape == (3, 4)
  data, shape = image_files.image_png(tmp_path / 'gray.png', 3)
  assert tf.io.decode_png(data).numpy().shape == (3, 4, 3)


# --- mvtec_ad: synthetic


def write_category(manual_dir, category, size=(12, 16), rgb=True, skip=()):
  """A complete copy of an MVTec AD category (official counts, tiny images) minus `skip` files."""
  counts = mvtec_ad.OFFICIAL_COUNTS[category]
  rng = np.random.default_rng(0)
  shape = size + (3,) if rgb else size
  for folder_name, count in counts.items():
    split, defect = folder_name.split('/')
    for i in range(count):
      relpath = f'{split}/{defect}/{i:03d}.png'
      if relpath in skip:
        continue
      write_image(manual_dir / category / relpath, rng.integers(0, 256, shape))
      if split == 'test' and defect != 'good':
        mask = np.zeros(size, np.uint8)
        mask[1:4, 2:5] = 255
        write_image(manual_dir / category / 'ground_truth' / defect / f'{i:03d}_mask.png', mask)
  return manual_dir / category


def test_mvtec_ad_complete_category(tmp_path):
  manual_dir = tmp_path / 'mvtec'
  write_category(manual_dir, 'toothbrush')  # The smallest category: 60 + 42 images.
  builder = mvtec_ad.make_builder(make_cfg('mvtec_ad/toothbrush', manual_dir),
                                  data_dir=tmp_path / 'data')
  assert builder.info.features['image'].shape == (None, None, 3)
  train, test = load_split(builder, 'train'), load_split(builder, 'test')
  assert len(train) == 60 and len(test) == 42
  by_name = {e['filename']: e for e in test}
  bad = by_name['test/defective/007.png']
  assert bad['label'] == 1 and bad['has_mask'] and bad['defect_type'] == 'defective'
  expected = np.zeros((12, 16, 1), np.uint8)
  expected[1:4, 2:5] = 1
  np.testing.assert_array_equal(bad['mask'], expected)
  good = by_name['test/good/003.png']
  assert good['label'] == 0 and good['has_mask'] and good['mask'].max() == 0
  np.testing.assert_array_equal(
      good['image'], np.asarray(Image.open(manual_dir / 'toothbrush' / 'test/good/003.png')))
  # Cached: a second call needs no files at all.
  again = mvtec_ad.make_builder(make_cfg('mvtec_ad/toothbrush', None), data_dir=tmp_path / 'data')
  assert again.info.splits['train'].num_examples == 60
  # Extra and unknown folders are reported too (fresh data_dir: the cache is not re-checked).
  root = manual_dir / 'toothbrush'
  write_image(root / 'test' / 'defective' / '030.png', np.zeros((12, 16, 3)))
  write_image(root / 'ground_truth' / 'defective' / '030_mask.png', np.zeros((12, 16)))
  write_image(root / 'test' / 'bent' / '000.png', np.zeros((12, 16, 3)))
  write_image(root / 'ground_truth' / 'bent' / '000_mask.png', np.zeros((12, 16)))
  with pytest.raises(errors.DataError) as info:
    mvtec_ad.make_builder(make_cfg('mvtec_ad/toothbrush', manual_dir), data_dir=tmp_path / 'd2')
  assert f'{root / "test/defective"}: 1 image(s) more than the official 30' in str(info.value)
  assert f'{root / "test/bent"}: not an official toothbrush folder' in str(info.value)


def test_mvtec_ad_incomplete_copy_lists_short_folders(tmp_path):
  manual_dir = tmp_path / 'mvtec'
  root = write_layout(manual_dir / 'bottle', train=2, rgb=True,
                      test={'good': 1, 'broken_large': 1, 'contamination': 2})
  with pytest.raises(errors.DataError) as info:
    mvtec_ad.make_builder(make_cfg('mvtec_ad/bottle', manual_dir), data_dir=tmp_path / 'data')
  message = str(info.value)
  assert f'{root / "train/good"}: 207 image(s) short (2 of 209)' in message
  assert f'{root / "test/good"}: 19 image(s) short (1 of 20)' in message
  assert f'{root / "test/broken_large"}: 19 image(s) short (1 of 20)' in message
  assert f'{root / "test/broken_small"}: 22 image(s) short (0 of 22)' in message
  assert f'{root / "test/contamination"}: 19 image(s) short (2 of 21)' in message
  assert '6 of the official 292 images found' in message and 'check_counts' in message
  assert leftovers(tmp_path / 'data') == []


def test_the_count_check_the_error_advises_can_be_turned_off_from_the_command_line(tmp_path):
  """The count error says "set dataset.check_counts = False": configs/mvtec_ad.py takes it as
  `--config.dataset.check_counts=False` (it was "no such config field")."""
  manual_dir = tmp_path / 'mvtec'
  write_layout(manual_dir / 'bottle', train=2, rgb=True, test={'good': 1, 'broken_large': 1})
  config = config_files.load_config(REPO / 'configs' / 'mvtec_ad.py', 'bottle')
  assert config.dataset.check_counts is True
  config_files.apply_overrides(config, {'dataset.manual_dir': str(manual_dir),
                                        'dataset.check_counts': 'False'})
  builder = mvtec_ad.make_builder(config.dataset, data_dir=tmp_path / 'data')
  assert len(load_split(builder, 'train')) == 2 and len(load_split(builder, 'test')) == 2


def test_mvtec_ad_prepared_from_another_copy_is_prepared_again(tmp_path, capsys):
  """A category prepared in a data_dir was reused whatever dataset.manual_dir named: a run on the
  full copy trained on an earlier trial's subset, without a word."""
  data_dir = tmp_path / 'data'
  trial = write_layout(tmp_path / 'trial' / 'bottle', train=2, rgb=True,
                       test={'good': 1, 'broken_large': 1})
  full = write_layout(tmp_path / 'full' / 'bottle', train=5, rgb=True, seed=1,
                      test={'good': 2, 'broken_large': 1, 'contamination': 1})
  build = lambda root: mvtec_ad.make_builder(
      make_cfg('mvtec_ad/bottle', root.parent, check_counts=False), data_dir=data_dir)
  assert len(load_split(build(trial), 'train')) == 2
  assert len(load_split(build(full), 'train')) == 5 and len(load_split(build(full), 'test')) == 4
  err = capsys.readouterr().err
  assert err.count('preparing it again') == 1, err  # The second call reused the full copy's.
  assert f'was made from {trial}: preparing it again from {full}' in err, err
  write_image(full / 'train' / 'good' / '005.png',
              np.random.default_rng(2).integers(0, 256, (20, 24, 3)))  # An image added.
  assert len(load_split(build(full), 'train')) == 6
  assert 'was made from these files before they changed' in capsys.readouterr().err
  # Without dataset.manual_dir the prepared dataset is used as it is.
  builder = mvtec_ad.make_builder(make_cfg('mvtec_ad/bottle', None), data_dir=data_dir)
  assert len(load_split(builder, 'train')) == 6 and capsys.readouterr().err == ''
  assert leftovers(data_dir) == [str(pathlib.Path(builder.data_path))]


def test_mvtec_ad_grayscale_category_without_count_check(tmp_path):
  manual_dir = tmp_path / 'mvtec'
  root = write_layout(manual_dir / 'grid', train=2, test={'good': 1, 'bent': 2})
  rgb = np.random.default_rng(1).integers(0, 256, (20, 24, 3)).astype(np.uint8)
  write_image(root / 'train' / 'good' / '009.png', rgb)  # A stray color image.
  builder = mvtec_ad.make_builder(make_cfg('mvtec_ad/grid', manual_dir, check_counts=False),
                                  data_dir=tmp_path / 'data')
  assert builder.info.features['image'].shape == (None, None, 1)
  train = {e['filename']: e for e in load_split(builder, 'train')}
  assert len(train) == 3 and all(e['image'].shape == (20, 24, 1) for e in train.values())
  np.testing.assert_array_equal(train['train/good/009.png']['image'][..., 0],
                                np.asarray(Image.fromarray(rgb).convert('L')))


def test_mvtec_ad_category_is_found_in_manual_dir(tmp_path):
  """configs/mvtec_ad.py without an argument: the category is the one in dataset.manual_dir."""
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  from vivano_jax import train  # pylint: disable=g-import-not-at-top
  root = write_category(tmp_path / 'mvtec', 'toothbrush')
  for given in (root, tmp_path / 'mvtec'):  # The category's folder, or its only category.
    config = load_config('mvtec_ad')
    config.dataset.manual_dir = str(given)
    config.dataset.augment.vflip = True  # Given: kept; the others from the category.
    datasets.resolve_config(config)
    assert config.dataset.name == 'mvtec_ad/toothbrush'
    assert config.dataset.augment.to_dict() == dict(mvtec_ad.AUGMENT['toothbrush'], vflip=True)
  config = load_config('mvtec_ad_paper')
  config.dataset.manual_dir = str(root)
  datasets.resolve_config(config)
  assert config.dataset.name == 'mvtec_ad/toothbrush' and not any(config.dataset.augment.values())
  # The builder reads a category's own folder, with the category named or not.
  for name in ('mvtec_ad', 'mvtec_ad/toothbrush'):
    builder = mvtec_ad.make_builder(make_cfg(name, root), data_dir=tmp_path / name)
    assert builder.builder_config.name == 'toothbrush'
    assert len(load_split(builder, 'train')) == 60 and len(load_split(builder, 'test')) == 42
  renamed = root.rename(tmp_path / 'part_17')  # No category's name: known by its defect folders.
  assert mvtec_ad.find_category(renamed) == 'toothbrush'
  # Several categories and none named; a folder of no category; a folder with none.
  for extra in ('bottle', 'cable'):
    (tmp_path / 'mvtec' / extra / 'train').mkdir(parents=True)
  config = load_config('mvtec_ad')
  config.dataset.manual_dir = str(tmp_path / 'mvtec')
  with pytest.raises(errors.UsageError, match=re.escape(
      '(bottle, cable): choose one with the config argument, e.g. '
      '--config=configs/mvtec_ad.py:bottle')):
    train.train_and_evaluate(config, str(tmp_path / 'run'))  # Before anything is written.
  assert not (tmp_path / 'run').exists()
  (renamed / 'test' / 'defective').rename(renamed / 'test' / 'dent')
  with pytest.raises(errors.UsageError, match=f'{re.escape(str(renamed))} holds train/, but'):
    mvtec_ad.find_category(renamed)
  with pytest.raises(errors.DataError, match='no MVTec AD category folder'):
    mvtec_ad.find_category(renamed / 'test')
  assert mvtec_ad.category(None) == mvtec_ad.category('') == ''


def test_mvtec_ad_category_is_recognised_past_hidden_folders(tmp_path):
  """A renamed category folder is recognised by its defect folders; hidden and OS folders in
  test/ (a notebook's checkpoints, a Mac's __MACOSX), which the builder skips, do not count."""
  root = write_category(tmp_path, 'toothbrush').rename(tmp_path / 'toothbrush_copy')
  for hidden in ('.ipynb_checkpoints', '__MACOSX'):
    (root / 'test' / hidden).mkdir()
  assert mvtec_ad.find_category(root) == 'toothbrush'


def test_mvtec_ad_category_given_as_the_dataset_name_gets_its_augmentation(tmp_path):
  """configs/mvtec_ad.py leaves dataset.augment to the category; given as
  --config.dataset.name=mvtec_ad/screw instead of the config's argument, screw was trained with
  no quarter turns (the fields stayed None) and scored without its test-time views."""
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  config = load_config('mvtec_ad')
  config.dataset.name, config.dataset.manual_dir = 'mvtec_ad/screw', str(tmp_path)
  config.dataset.augment.hflip = True  # Given: kept.
  datasets.resolve_config(config)
  assert config.dataset.name == 'mvtec_ad/screw'
  assert config.dataset.augment.to_dict() == dict(hflip=True, vflip=False, rot90=True)


def test_mvtec_ad_config_on_another_dataset_says_it_augments_nothing(tmp_path, capsys):
  """configs/mvtec_ad.py read through the folder builder (a product of one's own, as its errors
  advise) has no category to take dataset.augment from: the fields stay unset (off), as before,
  and the console says so (it said nothing)."""
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  config = load_config('mvtec_ad')
  config.dataset.name, config.dataset.manual_dir = 'folder', str(tmp_path)
  config.dataset.augment.rot90 = True  # Given: not named.
  datasets.resolve_config(config)
  assert config.dataset.augment.to_dict() == dict(hflip=None, vflip=None, rot90=True)
  assert capsys.readouterr().err == (
      "warning: dataset 'folder' has no MVTec AD category to take dataset.augment.hflip, vflip "
      'from: off in training; set --config.dataset.augment.<field>=True for each flip or turn '
      'under which the product still looks normal\n')
  config.dataset.name = 'mvtec_ad/toothbrush'  # A category's fills them, without a word.
  datasets.resolve_config(config)
  assert capsys.readouterr().err == '' and None not in config.dataset.augment.values()


def test_a_product_of_ones_own_in_the_mvtec_layout_is_pointed_to_the_folder_builder(tmp_path):
  """configs/mvtec_ad.py on a folder of another product in MVTec AD's layout: the errors say how to
  read it (dataset.name=folder). Named as a category, such a folder (or a renamed copy too partial
  to be recognised) is checked as that category's copy, not called 'another category (unknown)'."""
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  root = write_layout(tmp_path / 'widget', test={'good': 1, 'crack': 1, 'scratch': 1})
  config = load_config('mvtec_ad')
  config.dataset.manual_dir = str(root)  # crack and scratch: capsule's and pill's defects alike.
  with pytest.raises(errors.UsageError, match=re.escape(
      'e.g. --config=configs/mvtec_ad.py:bottle, or read a product of your own in this layout '
      'with --config.dataset.name=folder')):
    datasets.resolve_config(config)
  with pytest.raises(errors.DataError) as e:
    mvtec_ad.make_builder(make_cfg('mvtec_ad/capsule', root), data_dir=tmp_path / 'data')
  assert f'{root / "test/squeeze"}: 20 image(s) short (0 of 20)' in str(e.value)
  assert ('set dataset.check_counts = False to build from an incomplete copy anyway; if it is not '
          'a copy of MVTec AD capsule, read a product of your own in this layout with '
          '--config.dataset.name=folder') in str(e.value)
  # A generic defect name that is one category's alone ('defective': toothbrush) is taken for it.
  (root / 'test' / 'crack').rename(root / 'test' / 'defective')
  (root / 'ground_truth' / 'crack').rename(root / 'ground_truth' / 'defective')
  shutil.rmtree(root / 'test' / 'scratch')
  shutil.rmtree(root / 'ground_truth' / 'scratch')
  config.dataset.name = 'mvtec_ad'
  datasets.resolve_config(config)
  assert config.dataset.name == 'mvtec_ad/toothbrush'
  with pytest.raises(errors.DataError, match='not a copy of MVTec AD toothbrush, read a product'):
    mvtec_ad.make_builder(config.dataset, data_dir=tmp_path / 'data')
  assert leftovers(tmp_path / 'data') == []


def test_mvtec_ad_as_extracted_on_a_mac(tmp_path):
  """The archive's root keeps license.txt, readme.txt and the .tar.xz beside the categories; a Mac
  adds .DS_Store, AppleDouble ._<name> files beside every file and folder, and __MACOSX/: none is
  read or refused, with the category named or found."""
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  manual_dir = tmp_path / 'mvtec_anomaly_detection'
  root = write_category(manual_dir, 'toothbrush')
  for name, data in (('license.txt', b'CC BY-NC-SA 4.0'), ('readme.txt', b'MVTec AD'),
                     ('mvtec_anomaly_detection.tar.xz', b'\xfd7zXZ\0'), ('.DS_Store', b'Bud1')):
    (manual_dir / name).write_bytes(data)
  (root / 'license.txt').write_text('CC BY-NC-SA 4.0')  # A single category's archive has them.
  (manual_dir / '__MACOSX' / 'toothbrush' / 'train').mkdir(parents=True)
  (manual_dir / '__MACOSX' / 'toothbrush' / 'train' / '._good').write_bytes(b'\0\5\26\7')
  for folder_path in [root, *root.rglob('*')]:
    if folder_path.is_dir():
      (folder_path / '.DS_Store').write_bytes(b'Bud1')
      for entry in list(folder_path.iterdir()):
        if not entry.name.startswith('.'):
          (folder_path / f'._{entry.name}').write_bytes(b'\0\5\26\7')  # AppleDouble.
  config = load_config('mvtec_ad')
  config.dataset.manual_dir = str(manual_dir)
  datasets.resolve_config(config)
  assert config.dataset.name == 'mvtec_ad/toothbrush'
  builder = mvtec_ad.make_builder(make_cfg('mvtec_ad/toothbrush', manual_dir),
                                  data_dir=tmp_path / 'data')
  names = [e['filename'] for s in ('train', 'test') for e in load_split(builder, s)]
  assert len(names) == 102 and not [n for n in names if '/.' in n or 'MACOSX' in n]


def test_mvtec_ad_reads_the_pixel_formats_a_copy_may_hold(tmp_path):
  """Images saved as RGBA, palette or gray in a color category are read as their RGB pixels;
  masks of values 0/1 or 0/254, or 1-bit, as their nonzero pixels (as numpy reads them)."""
  manual_dir = tmp_path / 'mvtec'
  root = write_layout(manual_dir / 'toothbrush', rgb=True, size=(12, 16),
                      test={'good': 1, 'defective': 3})
  rng = np.random.default_rng(3)
  rgb = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
  alpha = rng.integers(0, 256, (12, 16, 1)).astype(np.uint8)
  good = root / 'train' / 'good'
  write_image(good / '000.png', np.concatenate([rgb, alpha], -1))  # RGBA: alpha is dropped.
  palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
  indices = rng.integers(0, 256, (12, 16)).astype(np.uint8)
  indexed = Image.fromarray(indices, 'P')
  indexed.putpalette(palette.ravel().tolist())
  indexed.save(good / '001.png')
  write_image(good / '002.png', rgb[..., 0])  # Gray: copied into the three channels.
  expected_images = {'000.png': rgb, '001.png': palette[indices],
                     '002.png': np.repeat(rgb[..., :1], 3, -1)}
  drawn = rng.random((12, 16)) < 0.3
  gt = root / 'ground_truth' / 'defective'
  write_image(gt / '000_mask.png', drawn * 1)
  write_image(gt / '001_mask.png', drawn * 254)
  Image.fromarray(drawn).convert('1').save(gt / '002_mask.png')
  with Image.open(gt / '002_mask.png') as image:
    assert image.mode == '1'
  builder = mvtec_ad.make_builder(make_cfg('mvtec_ad/toothbrush', manual_dir, check_counts=False),
                                  data_dir=tmp_path / 'data')
  train = {e['filename']: e['image'] for e in load_split(builder, 'train')}
  for name, expected in expected_images.items():
    np.testing.assert_array_equal(train[f'train/good/{name}'], expected, err_msg=name)
  test = {e['filename']: e['mask'] for e in load_split(builder, 'test')}
  for i in range(3):
    np.testing.assert_array_equal(test[f'test/defective/{i:03d}.png'][..., 0], drawn)


def test_mvtec_ad_bad_input(tmp_path):
  manual_dir = tmp_path / 'mvtec'
  root = write_layout(manual_dir / 'grid', masks=False, test={'good': 1, 'bent': 1})
  cfg = make_cfg('mvtec_ad/grid', manual_dir, check_counts=False)
  # MVTec AD always has masks: a defect folder without ground truth is an error.
  with pytest.raises(errors.DataError, match=re.escape(str(root / 'ground_truth' / 'bent'))):
    mvtec_ad.make_builder(cfg, data_dir=tmp_path / 'data')
  # manual_dir pointing at the category itself reads it (the same error), at another category's
  # folder, or at a folder without it.
  with pytest.raises(errors.DataError, match=re.escape(str(root / 'ground_truth' / 'bent'))):
    mvtec_ad.make_builder(make_cfg('mvtec_ad/grid', root, check_counts=False),
                          data_dir=tmp_path / 'data')
  with pytest.raises(errors.DataError, match=r'is the folder of another category \(grid\)'):
    mvtec_ad.make_builder(make_cfg('mvtec_ad/screw', root), data_dir=tmp_path / 'data')
  with pytest.raises(errors.DataError, match=re.escape(str(manual_dir / 'screw'))):
    mvtec_ad.make_builder(make_cfg('mvtec_ad/screw', manual_dir), data_dir=tmp_path / 'data')
  with pytest.raises(errors.UsageError, match='mvtec.com'):
    mvtec_ad.make_builder(make_cfg('mvtec_ad/grid', None), data_dir=tmp_path / 'data')
  with pytest.raises(errors.UsageError, match='mvtec_ad/zipper'):
    mvtec_ad.make_builder(make_cfg('mvtec_ad/zip', manual_dir), data_dir=tmp_path / 'data')
  assert leftovers(tmp_path / 'data') == []


def test_mvtec_ad_mask_without_its_image_is_one_error_naming_it(tmp_path, capsys):
  """MVTec AD has an image for every mask: a mask whose image is gone (deleted, renamed) is one
  error naming the mask and the image it expects, as an image without its mask is (it was a
  warning, then a count error naming only the folder; a stray extra mask was built without a
  word but that warning). The folder builder, whose masks are optional, still warns."""
  manual_dir = tmp_path / 'mvtec'
  root = write_category(manual_dir, 'toothbrush')
  gt, images = root / 'ground_truth' / 'defective', root / 'test' / 'defective'
  (images / '007.png').unlink()
  cfg = make_cfg('mvtec_ad/toothbrush', manual_dir)
  with pytest.raises(errors.DataError) as e:
    mvtec_ad.make_builder(cfg, data_dir=tmp_path / 'data')
  assert str(e.value) == (f'{gt / "007_mask.png"}: a mask without its image (expected '
                          f'{images / "007.png"}, or another image extension)')
  write_image(images / '007.png', np.zeros((12, 16, 3)))
  shutil.copy(gt / '007_mask.png', gt / '030_mask.png')  # A stray one beside the full set.
  with pytest.raises(errors.DataError, match=re.escape(f'{gt / "030_mask.png"}: a mask without')):
    mvtec_ad.make_builder(cfg, data_dir=tmp_path / 'data')
  assert leftovers(tmp_path / 'data') == []
  capsys.readouterr()
  folder.make_builder(make_cfg('folder', root), data_dir=tmp_path / 'data')
  assert (f'warning: 1 mask(s) without an image are ignored, e.g. {gt / "030_mask.png"}'
          in capsys.readouterr().err)


def test_mvtec_ad_official_counts_total():
  assert sum(c['train/good'] for c in mvtec_ad.OFFICIAL_COUNTS.values()) == 3629
  assert sum(n for c in mvtec_ad.OFFICIAL_COUNTS.values() for k, n in c.items()
             if k.startswith('test/')) == 1725
  assert len(mvtec_ad.CATEGORIES) == 15


# --- one-class: MNIST


def read_idx_labels(path):
  """Independent reader: idx1 labels = 8-byte header, then one byte per label."""
  with gzip.open(path) as f:
    return np.frombuffer(f.read(), np.uint8, offset=8)


@needs_shared_data
def test_mnist_one_class_local(tmp_path):
  mnist = SHARED_DATA / 'mnist'
  builder = one_class.make_builder(make_cfg('mnist_one_class/3', mnist), data_dir=tmp_path)
  assert set(builder.info.splits) == {'train', 'test'}
  assert builder.info.metadata['source'] == 'local_npz_approx'  # No train-images idx file here.
  train_labels = read_idx_labels(mnist / 'train-labels-idx1-ubyte.gz')
  test_labels = read_idx_labels(mnist / 't10k-labels-idx1-ubyte.gz')
  train, test = load_split(builder, 'train'), load_split(builder, 'test')

  assert len(train) == np.sum(train_labels == 3)  # 6131 threes.
  assert sorted(e['filename'] for e in train) == [
      f'train/{i:05d}' for i in np.flatnonzero(train_labels == 3)]
  assert all(e['label'] == 0 and e['defect_type'] == 'good' for e in train)
  # Inversion undone: dark background like the exact test images (mean intensity ~33 of 255).
  train_mean = np.mean([e['image'].mean() for e in train])
  test_mean = np.mean([e['image'].mean() for e in test])
  assert abs(train_mean - test_mean) < 5

  assert len(test) == 10000
  digits = {e['filename']: e for e in test}
  for d in range(10):
    kind = 'good' if d == 3 else str(d)
    assert sum(e['defect_type'] == kind for e in test) == np.sum(test_labels == d)
  assert sum(e['label'] for e in test) == np.sum(test_labels != 3)
  assert all(e['has_mask'] == (e['label'] == 0) and e['mask'].max() == 0 for e in test)
  # Test images are the exact idx pixels.
  with gzip.open(mnist / 't10k-images-idx3-ubyte.gz') as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
  for i in (0, 1234, 9999):
    np.testing.assert_array_equal(digits[f'test/{i:05d}']['image'][..., 0], images[i])


def write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_tiny_mnist(root, num_train=40, num_test=30):
  rng = np.random.default_rng(0)
  root.mkdir(parents=True, exist_ok=True)
  write_idx(root / 'train-images-idx3-ubyte.gz', rng.integers(0, 256, (num_train, 28, 28)))
  write_idx(root / 'train-labels-idx1-ubyte.gz', np.arange(num_train) % 10)
  write_idx(root / 't10k-images-idx3-ubyte.gz', rng.integers(0, 256, (num_test, 28, 28)))
  write_idx(root / 't10k-labels-idx1-ubyte.gz', np.arange(num_test) % 10)
  return root


def test_a_one_class_dataset_prepared_from_another_local_copy_is_prepared_again(tmp_path, capsys):
  """mnist_one_class/<digit> prepared from one local copy was reused for any other copy of the
  same kind: a run on a variant (fewer images, a corrupted MNIST) scored the first copy."""
  first = write_tiny_mnist(tmp_path / 'mnist')
  variant = write_tiny_mnist(tmp_path / 'mnist_variant', num_train=60, num_test=20)
  data_dir = tmp_path / 'data'
  build = lambda root: one_class.make_builder(make_cfg('mnist_one_class/7', root),
                                              data_dir=data_dir)
  assert build(first).info.splits['train'].num_examples == 4
  assert build(first).info.splits['test'].num_examples == 30  # Reused: same files.
  assert 'preparing it again' not in capsys.readouterr().err
  builder = build(variant)
  assert (builder.info.splits['train'].num_examples, builder.info.splits['test'].num_examples) == (
      6, 20)
  assert f'was made from {first}: preparing it again from {variant}' in capsys.readouterr().err


def test_mnist_idx_files_and_bad_input(tmp_path):
  root = write_tiny_mnist(tmp_path / 'mnist')
  builder = one_class.make_builder(make_cfg('mnist_one_class/7', root), data_dir=tmp_path / 'd1')
  assert builder.info.metadata['source'] == 'local_idx'
  assert builder.info.splits['train'].num_examples == 4
  assert builder.info.splits['test'].num_examples == 30

  # A truncated gzip stream, a missing label file: DataError naming the file, nothing written.
  data = (root / 't10k-images-idx3-ubyte.gz').read_bytes()
  (root / 't10k-images-idx3-ubyte.gz').write_bytes(data[:len(data) // 2])
  with pytest.raises(errors.DataError, match=re.escape(str(root / 't10k-images-idx3-ubyte.gz'))):
    one_class.make_builder(make_cfg('mnist_one_class/7', root), data_dir=tmp_path / 'd2')
  (root / 't10k-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(errors.DataError, match=re.escape(str(root / 't10k-labels-idx1-ubyte.gz'))):
    one_class.make_builder(make_cfg('mnist_one_class/7', root), data_dir=tmp_path / 'd2')
  assert leftovers(tmp_path / 'd2') == []


# --- one-class: CIFAR-10


@needs_shared_data
def test_cifar10_one_class_local(tmp_path):
  cifar = SHARED_DATA / 'cifar10'
  builder = one_class.make_builder(make_cfg('cifar10_one_class/3', cifar), data_dir=tmp_path)
  assert builder.builder_config.name == 'cat'  # Index 3 maps to its class name.
  train, val = load_split(builder, 'train'), load_split(builder, 'validation')
  assert len(train) == 4500 and len(val) == 500
  train_names, val_names = {e['filename'] for e in train}, {e['filename'] for e in val}
  assert not train_names & val_names
  with zipfile.ZipFile(cifar / 'train_jpg_stored.zip') as archive:
    cats = {n for n in archive.namelist() if n.startswith('train/cat/') and n.endswith('.jpg')}
  assert train_names | val_names == cats
  assert all(e['label'] == 0 and e['image'].shape == (32, 32, 3) for e in train + val)

  test = load_split(builder, 'test', decode_images=False)  # Its labels and names are checked.
  listing = {c: len(os.listdir(cifar / 'test' / c)) for c in one_class.CIFAR10_CLASSES}
  assert len(test) == sum(listing.values()) == 10000
  for c, count in listing.items():
    assert sum(e['defect_type'] == ('good' if c == 'cat' else c) for e in test) == count
  assert sum(e['label'] == 0 for e in test) == listing['cat']
  assert all(e['has_mask'] == (e['label'] == 0) for e in test)

  # The split is seeded: every build holds out the same 500 of the class's files (sorted by name),
  # those of a permutation drawn with VALIDATION_SEED; the class may be given by name too.
  ordered = sorted(cats)
  held_out = np.random.default_rng(one_class.VALIDATION_SEED).permutation(len(ordered))[:500]
  assert val_names == {ordered[i] for i in held_out}
  assert one_class.Cifar10OneClass.config_name('cat') == one_class.Cifar10OneClass.config_name('3')


def test_cifar10_local_bad_image(tmp_path):
  root = tmp_path / 'cifar'
  rng = np.random.default_rng(0)
  for split in ('train', 'test'):
    for c in one_class.CIFAR10_CLASSES:
      for i in range(2):
        write_image(root / split / c / f'{i:04d}.jpg', rng.integers(0, 256, (32, 32, 3)))
  (root / 'test' / 'dog' / '0001.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  with pytest.raises(errors.DataError, match=re.escape(str(root / 'test' / 'dog' / '0001.jpg'))):
    one_class.make_builder(make_cfg('cifar10_one_class/dog', root), data_dir=tmp_path / 'data')
  assert leftovers(tmp_path / 'data') == []


# --- one-class: catalog


@pytest.mark.parametrize('name, channels', [('mnist_one_class/2', 1), ('cifar10_one_class/2', 3)])
def test_one_class_from_tfds_catalog(tmp_path, monkeypatch, name, channels):
  dataset = one_class.BUILDERS[name.split('/')[0]].catalog_name()
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # The catalog builder's GCS folder.
  with tfds.testing.mock_data(num_examples=60):  # Random examples instead of the download.
    source = one_class_sources.load_catalog(dataset, normal_class=2)
  assert source.kind == 'tfds_catalog' and len(source.test_images) == 60
  # Build from what the (mocked) catalog returned; mock_data would also no-op our own writing.
  monkeypatch.setattr(one_class_sources, 'load_catalog', lambda *args: source)
  builder = one_class.make_builder(make_cfg(name), data_dir=tmp_path)
  assert builder.info.metadata['source'] == 'tfds_catalog'
  num_normal = len(source.train_images)
  splits = {s: info.num_examples for s, info in builder.info.splits.items()}
  assert sum(n for s, n in splits.items() if s != 'test') == num_normal
  test = load_split(builder, 'test')
  assert sum(e['label'] for e in test) == np.sum(source.test_labels != 2)
  assert test[0]['image'].shape[-1] == channels

  # The cache records its source: a local copy is not silently mixed with the catalog build.
  if dataset == 'mnist':
    local = write_tiny_mnist(tmp_path / 'local')
    with pytest.raises(errors.DataError, match='tfds_catalog'):
      one_class.make_builder(make_cfg(name, local), data_dir=tmp_path)
