"""Export, offline evaluation, thresholds and report.

One tiny run on a synthetic MVTec-layout folder (images of several sizes, masks, a defect type
without masks) is trained and exported by the main CLI once per session for every pytest-xdist
worker (`trained_folder_run`, shared with test_cli.py, test_predict.py and test_export_model.py);
its offline evaluation must equal the in-training metrics.json.
"""

import contextlib
import csv
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.conftest import disk_full_open
from tests.conftest import shared_tmp
from vivano_jax import atomic_files
from vivano_jax import cli
from vivano_jax import evaluate
from vivano_jax import export
from vivano_jax import export_format
from vivano_jax import tables
from vivano_jax import thresholds

TINY = str(REPO / 'configs' / 'tiny.py')
# Test images (H, W) per defect type; 'stain' has no ground-truth folder (has_mask False).
TEST_SIZES = {'good': [(36, 30), (36, 34), (40, 38), (30, 44)],
              'scratch': [(34, 38), (36, 35), (38, 32)],
              'spot': [(34, 38), (36, 35), (38, 32)],
              'stain': [(34, 38), (36, 35)]}
NUM_TEST = sum(len(v) for v in TEST_SIZES.values())


def write_folder(root: pathlib.Path) -> pathlib.Path:
  """Noise images with a bright rectangle on the defective ones; masks for scratch and spot."""
  rng = np.random.default_rng(0)

  def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)

  def noise(h, w):
    return rng.normal(100, 20, (h, w)).clip(0, 255).astype(np.uint8)

  for i in range(12):
    save(root / 'train' / 'good' / f'{i:03d}.png', noise(32 + i % 3 * 6, 40 - i % 4 * 3))
  for defect, sizes in TEST_SIZES.items():
    for i, (h, w) in enumerate(sizes):
      image, mask = noise(h, w), np.zeros((h, w), np.uint8)
      if defect != 'good':
        y, x = 5 + 3 * i, 6 + 2 * i
        image[y:y + 8, x:x + 10], mask[y:y + 8, x:x + 10] = 250, 255
      save(root / 'test' / defect / f'{i:03d}.png', image)
      if defect in ('scratch', 'spot'):
        save(root / 'ground_truth' / defect / f'{i:03d}_mask.png', mask)
  return root


def folder_overrides(folder, tfds_dir):
  return [f'--config={TINY}', '--config.dataset.name=folder',
          f'--config.dataset.manual_dir={folder}',
          f'--config.dataset.data_dir={tfds_dir}', '--config.train.num_steps=10',
          '--config.train.checkpoint_every_steps=5', '--config.dataset.validation_fraction=0.25',
          # With the segmenter, so export, predict and every deployed format carry its component.
          '--config.model.segmenter_features=4', '--config.train.synthetic_anomalies=0.5']


def trained_folder_run(tmp_path_factory, tfds_dir: str) -> pathlib.Path:
  """The session's folder run, trained 10 steps (checkpoints 5, 10) and exported by `main`, made
  once for all workers (`shared_tmp`); tests copy it before changing it."""
  base = shared_tmp(tmp_path_factory) / 'export_runs'
  workdir = base / 'folder_run'
  base.mkdir(parents=True, exist_ok=True)
  with atomic_files.exclusive_lock(base / '.lock'):  # One worker trains; the others wait for it.
    if (workdir / 'report' / 'index.html').exists():
      return workdir
    folder = write_folder(base / 'folder')
    # In this process, as the console script calls main (test_train.py runs `python -m
    # vivano_jax.main` itself in a subprocess).
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      code = cli.main(['vivano', 'train', f'--workdir={workdir}',
                       *folder_overrides(folder, tfds_dir)])
  assert code == 0, stderr.getvalue()[-3000:]
  out = stdout.getvalue()
  assert f'export/test: {NUM_TEST} images' in out and 'threshold: quantile' in out
  # The export after training takes the test split's native maps and metrics from its evaluation.
  assert (f'Native maps and metrics of {NUM_TEST} images taken from the earlier evaluation'
          in (workdir / 'vivano.log').read_text())
  return workdir


@pytest.fixture
def folder_run(tmp_path_factory, tfds_dir):
  return trained_folder_run(tmp_path_factory, tfds_dir)


def _assert_metrics_equal(got, want, tol=1e-9):
  assert list(got) == list(want)
  for name in want:
    assert got[name]['num_images'] == want[name]['num_images'], name
    for k in tables.METRIC_NAMES:
      if want[name][k] is None:
        assert got[name][k] is None, (name, k)
      else:
        assert abs(got[name][k] - want[name][k]) <= tol, (name, k, got[name][k], want[name][k])


# --------------------------------------------------------------------------------------------------
# Thresholds: hand-computed cases.


def test_quantile_threshold_hand_cases():
  # Linear interpolation: position q (n - 1) = 3.6 between the sorted values 4 and 5.
  scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
  assert thresholds.quantile_threshold(scores, 0.9) == pytest.approx(4.6)
  assert thresholds.quantile_threshold(np.array([2.0, 7.0]), 0.5) == pytest.approx(4.5)
  assert thresholds.quantile_threshold(np.array([2.0, 7.0]), 1.0) == 7.0
  with pytest.raises(ValueError, match='threshold_quantile'):
    thresholds.quantile_threshold(np.ones(3), 1.5)
  with pytest.raises(ValueError, match='no held-out'):
    thresholds.quantile_threshold(np.array([]), 0.9)


def test_thresholds_of_a_run_saved_before_a_score_field_are_its_own():
  """thresholds.json and config.json written before score.always_ssim existed: both read it at its
  former value (config_defaults.FORMER_DEFAULTS), so predict accepts the run; a field whose
  default never changed reads at today's default."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vivano_jax import config_defaults  # pylint: disable=g-import-not-at-top
  from vivano_jax import errors  # pylint: disable=g-import-not-at-top
  old = json.loads(json.dumps(config_defaults.base_config().score.to_dict()))
  del old['always_ssim'], old['shifts']
  config = ml_collections.ConfigDict(config_defaults.completed({'score': old}))
  assert config.score.always_ssim and config.score.shifts == 1  # As workdir.load_config reads.
  thresholds.check_score({'score': old['image'], 'score_config': old}, config.score, 'run')
  config.score.always_ssim = False  # A score that differs from the export's.
  with pytest.raises(errors.DataError, match='score.always_ssim=True there, False in config'):
    thresholds.check_score({'score': old['image'], 'score_config': old}, config.score, 'run')


def test_f1_threshold_hand_cases():
  # Thresholds 0.1: P 2/4, R 1 -> F1 2/3; 0.35: P 2/3, R 1 -> 0.8; 0.4: P 1/2, R 1/2 -> 1/2;
  # 0.8: P 1, R 1/2 -> 2/3. Best: 0.35.
  got = thresholds.f1_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
  assert got == pytest.approx({'threshold': 0.35, 'f1': 0.8, 'precision': 2 / 3, 'recall': 1.0})
  # Separable: the lowest anomalous score gives F1 = 1.
  got = thresholds.f1_threshold(np.array([1.0, 2.0, 5.0, 6.0]), np.array([0, 0, 1, 1]))
  assert got['threshold'] == 5.0 and got['f1'] == 1.0
  # Equal F1 at two thresholds: the lower one. Scores [1, 2, 3, 4], labels [1, 0, 1, 0]:
  # t=1: P 2/4 R 1 -> 2/3; t=2: P 1/3 R 1/2 -> 0.4; t=3: P 1/2 R 1/2 -> 1/2; t=4: P 0 -> 0.
  got = thresholds.f1_threshold(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0]))
  assert got['threshold'] == 1.0 and got['f1'] == pytest.approx(2 / 3)
  # Tied scores at the best threshold.
  got = thresholds.f1_threshold(np.array([3.0, 1.0, 2.0, 3.0]), np.array([1, 0, 0, 1]))
  assert got['threshold'] == 3.0 and got['f1'] == 1.0
  assert thresholds.f1_threshold(np.array([1.0, 2.0]), np.array([0, 0])) is None
  assert thresholds.f1_threshold(np.array([1.0, 2.0]), np.array([1, 1])) is None


def test_choose_records_both_and_falls_back():
  normal = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  rec = thresholds.choose(normal, 'validation', 0.5, 'f1',
                          val_scores=np.array([1.0, 2.0, 5.0, 6.0]),
                          val_labels=np.array([0, 0, 1, 1]))
  assert rec['chosen'] == 'f1' and rec['threshold'] == 5.0
  assert rec['quantile'] == {'q': 0.5, 'threshold': 3.0} and rec['source'] == 'validation'
  assert rec['num_normal'] == 5 and rec['rule'] == thresholds.RULE
  rec = thresholds.choose(normal, 'train', 0.5, 'f1')  # No labelled anomalies: quantile, noted.
  assert rec['chosen'] == 'quantile' and rec['threshold'] == 3.0 and rec['f1'] is None
  assert 'note' in rec and rec['requested'] == 'f1'
  # Fewer than 10 normals: a new normal exceeds the highest of 5 with probability 1/6.
  assert rec['warning'].startswith('the threshold rests on 5 train normal images')
  assert '1/6 (17 %)' in rec['warning'] and 'not 50 %' in rec['warning']
  assert 'warning' not in thresholds.choose(np.arange(10.0), 'validation', 0.99, 'quantile')
  printed = export.format_export({'thresholds': rec, 'splits': {}, 'workdir': 'run',
                                  'checkpoint_step': 3, 'report': None})
  assert printed.splitlines()[-1] == f"warning: {rec['warning']}"
  assert '1/2 (50 %)' in thresholds.choose(np.ones(1), 'validation', 0.99, 'quantile')['warning']
  np.testing.assert_array_equal(thresholds.is_anomalous(np.array([2.9, 3.0, 3.1]), 3.0),
                                [False, True, True])
  with pytest.raises(ValueError, match='export.threshold'):
    thresholds.choose(normal, 'train', 0.5, 'median')


# --------------------------------------------------------------------------------------------------
# The exported files.


def test_export_writes_complete_split_with_native_maps(folder_run):
  split = folder_run / 'export' / 'test'
  folder = folder_run.parent / 'folder'
  with open(split / export_format.SCORES_CSV, newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == NUM_TEST
  assert [int(r['index']) for r in rows] == list(range(NUM_TEST))
  assert set(rows[0]) >= set(export_format.SCORE_COLUMNS) | {'nll_max', 'nll_mean', 'recon', 'overlay'}
  exp = export_format.read_export(split)
  for i, name in enumerate(exp.filenames):
    with Image.open(folder / name) as im:
      native = (im.height, im.width)
    assert exp.maps[i].dtype == np.float32 and exp.maps[i].shape == native, name
    assert exp.masks[i].dtype == bool and exp.masks[i].shape == native, name
    assert exp.labels[i] == (exp.defect_types[i] != 'good')
    assert exp.has_mask[i] == (exp.defect_types[i] != 'stain')
    if exp.defect_types[i] in ('scratch', 'spot'):
      assert exp.masks[i].sum() == 80  # The 8 x 10 rectangle.
    with Image.open(split / exp.overlays[i]) as im:  # image | map | mask
      assert im.size == (3 * native[1] + 8, native[0]) and im.mode == 'RGB'
  run = exp.run
  # The final score is the configured component.
  np.testing.assert_array_equal(exp.scores, exp.components[run['score']['image']])
  assert run['checkpoint_step'] == 10 and run['split'] == 'test' and run['num_images'] == NUM_TEST
  assert run['config']['dataset']['name'] == 'folder' and run['maps']['resolution'] == 'native'
  # No temporary folders left beside the export.
  assert sorted(p.name for p in (folder_run / 'export').iterdir()) == ['test', 'thresholds.json']
  assert not [p for p in folder_run.iterdir() if p.name.startswith('.export')]
  # The workdir's thresholds.json is a copy of the one committed with the splits.
  assert (folder_run / 'thresholds.json').read_bytes() == (
      folder_run / 'export' / 'thresholds.json').read_bytes()

  t = json.loads((folder_run / 'thresholds.json').read_text())
  assert t['source'] == 'validation' and t['quantile']['q'] == 0.99 and t['chosen'] == 'quantile'
  assert t['f1'] is None  # The carved validation split holds normals only.
  assert t['checkpoint_step'] == 10 and t['threshold'] == t['quantile']['threshold']
  assert t['pixel_display_range'][0] < t['pixel_display_range'][1]

  page = (folder_run / 'report' / 'index.html').read_text()
  assert 'image AUROC' in page and 'Most anomalous' in page and 'Least anomalous' in page
  for src in ['roc.png', 'pro.png'] + [p.split('"')[0] for p in page.split('src="')[1:]]:
    assert (folder_run / 'report' / src).is_file(), src


_NO_JAX_SCRIPT = """
import json, runpy, sys
sys.argv = ['evaluate'] + sys.argv[1:]
try:
  runpy.run_module('vivano_jax.evaluate', run_name='__main__', alter_sys=True)
  code = 0
except SystemExit as e:
  code = e.code or 0
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               ('jax', 'jaxlib', 'flax', 'tensorflow', 'tensorflow_datasets', 'optax', 'orbax'))
print('RESULT ' + json.dumps({'code': code, 'heavy': heavy}))
"""


def test_offline_evaluation_equals_training_metrics_without_jax(folder_run, tmp_path):
  split = folder_run / 'export' / 'test'
  proc = subprocess.run([sys.executable, '-c', _NO_JAX_SCRIPT, f'--predictions={split}',
                         f'--output={tmp_path}'], env=subprocess_env(), capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split('RESULT ')[-1])
  assert result == {'code': 0, 'heavy': []}
  assert 'overall' in proc.stdout and 'AU-PRO' in proc.stdout
  in_training = json.loads((folder_run / 'metrics.json').read_text())['metrics']
  offline = evaluate.read_evaluation_csv(tmp_path / evaluate.EVALUATION_CSV)
  _assert_metrics_equal(offline, in_training)
  assert in_training['overall']['pixel_auroc'] is not None
  assert in_training['stain']['au_pro'] is None  # No masks for 'stain'.
  assert f'| overall | {NUM_TEST} |' in (tmp_path / evaluate.EVALUATION_MD).read_text()
  _assert_metrics_equal(json.loads((split / export_format.METRICS_JSON).read_text()), in_training)
  # Masks from the MVTec-layout folder instead of masks.npz: the same numbers.
  from_folder = evaluate.evaluate(
      export_format.read_export(split, ground_truth=folder_run.parent / 'folder'))
  _assert_metrics_equal(from_folder, in_training)


def _copy_export(folder_run, tmp_path):
  dst = tmp_path / 'test'
  shutil.copytree(folder_run / 'export' / 'test', dst)
  return dst


def _rewrite_npz(path, change):
  with np.load(path) as npz:
    arrays = {k: npz[k] for k in npz.files}
  change(arrays)
  np.savez_compressed(path, **arrays)


def test_evaluation_errors_list_every_problem(folder_run, tmp_path):
  split = _copy_export(folder_run, tmp_path)
  _rewrite_npz(split / 'maps.npz', lambda a: (a.pop('000003'), a.update({'000099': a['000000']})))
  _rewrite_npz(split / 'masks.npz', lambda a: a.update({'000005': np.zeros((3, 3), bool)}))
  with pytest.raises(export_format.ExportError) as e:
    export_format.read_export(split)
  msg = str(e.value)
  assert 'maps.npz: no array for 1 image(s)' in msg and '000003' in msg
  assert 'maps.npz: 1 array(s) for no image' in msg and '000099' in msg

  split = _copy_export(folder_run, tmp_path / 'b')
  _rewrite_npz(split / 'masks.npz', lambda a: a.update({'000005': np.zeros((3, 3), bool)}))
  with pytest.raises(export_format.ExportError, match=r"mask \(3, 3\) but map"):
    export_format.read_export(split)

  (split / 'scores.csv').unlink()
  (split / 'run.json').unlink()
  with pytest.raises(export_format.ExportError) as e:
    export_format.read_export(split)
  assert '2 problem(s)' in str(e.value) and 'scores.csv: missing' in str(e.value)

  # Ground truth from a folder: a missing mask, an extra one and a wrong size, all in one error.
  gt = tmp_path / 'gt'
  shutil.copytree(folder_run.parent / 'folder' / 'ground_truth', gt / 'ground_truth')
  (gt / 'ground_truth' / 'scratch' / '001_mask.png').unlink()
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(gt / 'ground_truth' / 'spot' / '000_mask.png')
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(gt / 'ground_truth' / 'spot' / '123_mask.png')
  with pytest.raises(export_format.ExportError) as e:
    export_format.read_export(folder_run / 'export' / 'test', ground_truth=str(gt))
  msg = str(e.value)
  assert '3 problem(s)' in msg and 'no mask for test/scratch/001.png' in msg
  assert '123_mask.png: a mask for no image' in msg and 'mask size (5, 5)' in msg
  # A defect type's whole mask folder missing, though the export scored it against masks; a
  # second mask for one image; masks for good images (ignored: good images have no defect).
  shutil.rmtree(gt / 'ground_truth')
  shutil.copytree(folder_run.parent / 'folder' / 'ground_truth', gt / 'ground_truth')
  shutil.rmtree(gt / 'ground_truth' / 'scratch')
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(gt / 'ground_truth' / 'spot' / '000_mask.bmp')
  with pytest.raises(export_format.ExportError) as e:
    export_format.read_export(folder_run / 'export' / 'test', ground_truth=str(gt))
  msg = str(e.value)
  assert f'{gt / "ground_truth" / "scratch"}: no such folder, but scores.csv scored' in msg
  assert '000_mask.png: a second mask for 000 beside 000_mask.bmp' in msg
  (gt / 'ground_truth' / 'spot' / '000_mask.bmp').unlink()
  shutil.copytree(folder_run.parent / 'folder' / 'ground_truth' / 'scratch',
                  gt / 'ground_truth' / 'scratch')
  exported = export_format.read_export(folder_run / 'export' / 'test')
  good = [i for i, d in enumerate(exported.defect_types) if d == 'good']
  (gt / 'ground_truth' / 'good').mkdir()
  for i in good:
    stem = pathlib.PurePath(exported.filenames[i]).stem
    Image.fromarray(np.full(exported.masks[i].shape, 255, np.uint8)).save(
        gt / 'ground_truth' / 'good' / f'{stem}_mask.png')
  (gt / 'ground_truth' / 'spot' / 'Thumbs.db').write_bytes(b'\xd0\xcf')  # Ignored, as in datasets.
  (gt / 'ground_truth' / 'spot' / '._000_mask.png').write_bytes(b'\0\5\26\7')
  from_folder = export_format.read_export(folder_run / 'export' / 'test', ground_truth=str(gt))
  for i in good:
    assert not from_folder.masks[i].any() and from_folder.has_mask[i]
  np.testing.assert_array_equal(from_folder.has_mask, exported.has_mask)

  # The CLI: one line, no stack trace.
  proc = subprocess.run([sys.executable, '-m', 'vivano_jax.evaluate',
                         f'--predictions={tmp_path / "nowhere"}'], env=subprocess_env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and proc.stderr.strip().startswith('error:')
  assert 'no such export folder' in proc.stderr and 'Traceback' not in proc.stderr


def test_maps_that_are_not_finite_and_twice_listed_images_are_named(folder_run, tmp_path):
  split = _copy_export(folder_run, tmp_path)

  def spoil(arrays):
    arrays['000002'] = arrays['000002'].copy()
    arrays['000002'][0, :3] = [np.nan, np.inf, np.nan]
  _rewrite_npz(split / 'maps.npz', spoil)
  with pytest.raises(export_format.ExportError) as e:
    export_format.read_export(split)
  names = export_format.read_export(split, load_maps=False).filenames
  assert (f'{split}/maps.npz[000002] ({names[2]}): 3 values are not finite (NaN or infinite)'
          in str(e.value))
  lines = (split / 'scores.csv').read_text().splitlines()
  row = lines[4].split(',')
  lines[5] = ','.join([lines[5].split(',')[0]] + row[1:])  # Row 4's image again, as row 5.
  (split / 'scores.csv').write_text('\n'.join(lines) + '\n')
  with pytest.raises(export_format.ExportError) as e:
    export_format.read_export(split, load_maps=False)
  assert f'scores.csv, line 6: {row[1]} ({row[3]}) is listed twice (line 5 too)' in str(e.value)


def test_offline_commands_take_spreadsheet_csvs_and_refuse_odd_flags(folder_run, tmp_path,
                                                                     capsys):
  from vivano_jax import errors  # pylint: disable=g-import-not-at-top
  split = _copy_export(folder_run, tmp_path)
  want = evaluate.evaluate(export_format.read_export(split))
  text = (split / 'scores.csv').read_text()
  (split / 'scores.csv').write_text('\ufeff' + text, encoding='utf-8')  # Excel's "CSV UTF-8".
  assert evaluate.evaluate(export_format.read_export(split)) == want
  (split / 'scores.csv').write_bytes(text.encode()[:60] + b'\xff' + text.encode()[60:])
  with pytest.raises(errors.DataError, match=re.escape(f'{split / "scores.csv"}: not UTF-8 text')):
    export_format.read_export(split)
  (split / 'scores.csv').write_text(text)
  _rewrite_npz(split / 'masks.npz', lambda a: a.update(
      {'has_mask': np.array([object()] * len(a['has_mask']), dtype=object)}))
  with pytest.raises(errors.DataError, match=re.escape(f"{split / 'masks.npz'}['has_mask']: "
                                                       'unreadable')):
    export_format.read_export(split)
  for args, message in ((['evaluate', '--predictions='], '--predictions= is empty'),
                        (['report', f'--workdir={folder_run}', '--num_images=-1'],
                         '--num_images must be >= 0, got -1'),
                        (['report', f'--workdir={folder_run}', f'--split={split}'],
                         'the name of an exported split'),
                        (['report', f'--workdir={folder_run}', '--split='],
                         'the name of an exported split')):
    assert cli.main(['vivano', *args]) == errors.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_the_runs_own_thresholds_json_decides(folder_run, tmp_path):
  """WORKDIR/thresholds.json (the one the docs name, which a user may edit) is the one read."""
  run = tmp_path / 'run'
  shutil.copytree(folder_run, run, ignore=shutil.ignore_patterns('checkpoints'))
  record = json.loads((run / 'thresholds.json').read_text())
  (run / 'thresholds.json').write_text(json.dumps(record | {'threshold': 0.125}))
  assert thresholds.load(str(run))['threshold'] == 0.125
  (run / 'thresholds.json').unlink()  # Without the copy: the export's own.
  assert thresholds.load(str(run))['threshold'] == record['threshold']


def test_a_corrupt_json_file_is_named(folder_run, tmp_path):
  from vivano_jax import errors  # pylint: disable=g-import-not-at-top
  from vivano_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  for name, text, problem in (('run.json', '{"config": ', 'unreadable or corrupt'),
                              ('metrics.json', '[1, 2]', 'corrupt (not a JSON object)')):
    split = _copy_export(folder_run, tmp_path / name)
    (split / name).write_text(text)
    with pytest.raises(errors.DataError, match=re.escape(f'{split / name}: {problem}')):
      export_format.read_export(split, load_maps=False)
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text('{')
  with pytest.raises(errors.DataError, match=re.escape(f'{run / "config.json"}: unreadable')):
    workdir_lib.load_config(str(run))
  # Valid JSON of the wrong shape: named before a report or evaluation reads a field of it.
  good_run = json.loads((folder_run / 'export' / 'test' / 'run.json').read_text())
  good_metrics = json.loads((folder_run / 'export' / 'test' / 'metrics.json').read_text())
  for k, (name, value, problem) in enumerate((
      ('run.json', good_run | {'score': 'recon'}, "score 'recon', not an object"),
      ('run.json', good_run | {'format_version': 99}, 'reads exports up to version 1'),
      ('run.json', good_run | {'thresholds': [1]}, 'thresholds [1], not an object'),
      ('run.json', good_run | {'thresholds': good_run['thresholds'] | {'threshold': 'high'}},
       "threshold 'high', not a finite number"),
      ('run.json', good_run | {'thresholds': {k: v for k, v in good_run['thresholds'].items()
                                              if k != 'quantile'}}, 'quantile.q'),
      ('metrics.json', good_metrics | {'overall': {'image_auroc': 0.9}}, "'overall' does not"),
      ('metrics.json', good_metrics | {'overall': 0.9}, "'overall' does not hold"))):
    split = _copy_export(folder_run, tmp_path / f'shape{k}')
    (split / name).write_text(json.dumps(value))
    with pytest.raises(errors.DataError, match=re.escape(f'{split / name}: corrupt')) as e:
      export_format.read_export(split, load_maps=False)
    assert problem in str(e.value)

def test_exclusive_lock_keeps_another_process_out_until_released(tmp_path):
  lock = tmp_path / 'lock'
  probe = ('import fcntl, sys\n'
           'f = open(sys.argv[1], "a")\n'
           'try:\n'
           '  fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n'
           'except BlockingIOError:\n'
           '  sys.exit(3)\n')

  def other_process_gets_it():
    code = subprocess.run([sys.executable, '-c', probe, str(lock)], timeout=60).returncode
    assert code in (0, 3)
    return code == 0

  with atomic_files.exclusive_lock(lock):
    assert lock.exists() and not other_process_gets_it()
  assert other_process_gets_it()


def test_a_json_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / 'thresholds.json'
  atomic_files.write_json(path, {'threshold': 1.5})
  monkeypatch.setattr(atomic_files, 'open', disk_full_open, raising=False)  # Half, then full.
  with pytest.raises(OSError, match='No space left'):
    atomic_files.write_json(path, {'threshold': 2.0})
  monkeypatch.undo()
  assert json.loads(path.read_text()) == {'threshold': 1.5}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['thresholds.json']


def test_atomic_directory_keeps_previous_content_on_error(tmp_path):
  target = tmp_path / 'out'
  with atomic_files.atomic_directory(target) as d:
    (d / 'a.txt').write_text('old')
  with pytest.raises(RuntimeError):
    with atomic_files.atomic_directory(target) as d:
      (d / 'a.txt').write_text('new')
      raise RuntimeError('disk full')
  assert (target / 'a.txt').read_text() == 'old'
  with atomic_files.atomic_directory(target) as d:
    (d / 'b.txt').write_text('replaced')
  assert sorted(p.name for p in target.iterdir()) == ['b.txt']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']  # No temporary siblings left.


def test_export_failing_halfway_leaves_no_complete_looking_split(folder_run, tmp_path,
                                                                  monkeypatch):
  from vivano_jax import export  # pylint: disable=g-import-not-at-top
  from vivano_jax import overlays  # pylint: disable=g-import-not-at-top
  from vivano_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  shutil.copytree(folder_run, run, ignore=shutil.ignore_patterns('export', 'report'))
  thresholds_before = (run / 'thresholds.json').read_bytes()
  config = workdir_lib.load_config(str(run))
  calls = []
  real = overlays.save_overlay

  def failing(*args, **kwargs):  # Scores, maps and masks are written; the 4th overlay fails.
    calls.append(args[0])
    if len(calls) == 4:
      raise OSError('No space left on device')
    return real(*args, **kwargs)

  monkeypatch.setattr(overlays, 'save_overlay', failing)
  with pytest.raises(OSError, match='No space'):
    export.export_run(config, str(run))
  split_tmp = pathlib.Path(calls[0]).parent.parent
  export_tmp = split_tmp.parent  # The whole export is staged in one hidden folder.
  assert split_tmp.name.startswith('.test.tmp-') and export_tmp.name.startswith('.export.tmp-')
  assert not export_tmp.exists() and not (run / 'export').exists()
  assert (run / 'thresholds.json').read_bytes() == thresholds_before
  assert not (run / 'report').exists()


def test_export_mode_of_main_uses_the_given_step(folder_run, tmp_path, tfds_dir, capsys):
  run = tmp_path / 'run'
  shutil.copytree(folder_run, run)
  log = run / 'vivano.log'
  log_before = log.read_text() if log.exists() else ''
  # `python -m vivano_jax.main --mode=export`, in this process (main is the `vivano train` command).
  flags = folder_overrides(folder_run.parent / 'folder', tfds_dir)
  code = cli.main(['vivano', 'train', f'--workdir={run}', '--mode=export', '--step=5', *flags])
  out, err = capsys.readouterr()
  assert code == 0, err[-3000:]
  assert 'checkpoint step 5' in out and 'train [' not in out
  new_logs = log.read_text()[len(log_before):]
  assert 'Restoring' in new_logs or 'restor' in new_logs.lower(), new_logs[-2000:]
  assert 'Training' not in new_logs and 'taken from the earlier evaluation' not in new_logs
  assert json.loads((run / 'export' / 'test' / 'run.json').read_text())['checkpoint_step'] == 5
  assert json.loads((run / 'thresholds.json').read_text())['checkpoint_step'] == 5
  before = export_format.read_export(folder_run / 'export' / 'test', load_maps=False).scores
  after = export_format.read_export(run / 'export' / 'test', load_maps=False).scores
  assert not np.array_equal(before, after)  # Step 5's parameters, not step 10's.
  code = cli.main(['vivano', 'train', f'--workdir={run}', '--mode=export', '--step=7', *flags])
  err = capsys.readouterr().err
  assert code == 2 and '--step=7: ' in err
  assert 'has no checkpoint for it; there are [5, 10]' in err


def test_export_takes_an_equal_evaluation_and_recomputes_a_different_one(folder_run, tmp_path,
                                                                          monkeypatch):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from vivano_jax import export  # pylint: disable=g-import-not-at-top
  from vivano_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from vivano_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
  from vivano_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  shutil.copytree(folder_run, run, ignore=shutil.ignore_patterns('export', 'report'))
  config = workdir_lib.load_config(str(run))
  seen, calls = [], []
  real_evaluate, real_metrics = scorer_lib.Scorer.evaluate, metrics_lib.per_defect_type

  def recording(self, *args, **kwargs):
    result = real_evaluate(self, *args, **kwargs)
    seen.append((self, args, result))
    return result

  def counting(*args, **kwargs):
    calls.append(1)
    return real_metrics(*args, **kwargs)

  monkeypatch.setattr(scorer_lib.Scorer, 'evaluate', recording)
  monkeypatch.setattr(metrics_lib, 'per_defect_type', counting)
  export.export_run(config, str(run))
  scorer, args, first = seen[-1]
  assert len(calls) == 1 and first.metrics is not None
  written = (run / 'export' / 'test' / 'metrics.json').read_text()
  export.export_run(config, str(run), reuse={'test': first})  # Same checkpoint: bit-equal scores.
  assert len(calls) == 1 and seen[-1][2].metrics is first.metrics
  assert (run / 'export' / 'test' / 'metrics.json').read_text() == written
  # Scores that differ from the earlier evaluation's: everything is computed from these.
  again = real_evaluate(scorer, *args, reuse=dataclasses.replace(first, scores=first.scores + 1))
  assert len(calls) == 2 and again.metrics == first.metrics and again.metrics is not first.metrics


def test_ensemble_score_is_standardised_on_the_heldout_normals(folder_run, tmp_path):
  from vivano_jax import export  # pylint: disable=g-import-not-at-top
  from vivano_jax import score_stats  # pylint: disable=g-import-not-at-top
  from vivano_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  shutil.copytree(folder_run, run)
  config = workdir_lib.load_config(str(run))
  config.score.update(image='ensemble', pixel='seg', normalize='global',
                      ensemble=('seg_max', 'recon'))
  config.export.splits = ('test', 'validation')
  export.export_run(config, str(run))
  stats = score_stats.load_stats(str(run / score_stats.STATS_FILENAME))
  normals = export_format.read_export(run / 'export' / 'validation', load_maps=False)
  assert (normals.labels == 0).all()
  for member in ('seg_max', 'recon'):  # Each member's mean and std over the held-out normals.
    np.testing.assert_allclose(stats[f'ensemble:{member}'],
                               (normals.components[member].mean(),
                                normals.components[member].std()), rtol=1e-5)
  test = export_format.read_export(run / 'export' / 'test', load_maps=False)
  want = sum((test.components[m] - stats[f'ensemble:{m}'][0]) / stats[f'ensemble:{m}'][1]
             for m in ('seg_max', 'recon'))
  np.testing.assert_allclose(test.scores, want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Digits: no pixel ground truth.


def test_digits_export_then_evaluate_equals_training(tiny_config, tmp_path):
  from vivano_jax import export  # pylint: disable=g-import-not-at-top
  from vivano_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from vivano_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config
  config.train.num_steps = 10  # As the other tiny runs: one compiled train step (test_train.py).
  config.export.max_overlays = 3
  # 'combined' standardises by training statistics: the export must use the same ones.
  config.score.image, config.score.pixel = 'combined', 'nll'
  summary = train.train_and_evaluate(config, str(tmp_path))
  exported = export.export_run(config, str(tmp_path))
  assert exported['checkpoint_step'] == 10
  exp = export_format.read_export(tmp_path / 'export' / 'test')
  offline = evaluate.evaluate(exp)
  _assert_metrics_equal(offline, summary['metrics'])
  assert offline['overall']['pixel_auroc'] is None and offline['overall']['au_pro'] is None
  assert sum(bool(o) for o in exp.overlays) == 6  # The 3 most and the 3 least anomalous.
  t = exported['thresholds']
  assert t['source'] == 'train' and t['score_stats'] == summary['score_stats']
  assert t['num_normal'] == len(input_pipeline.load(config, ('train',))['train'])
  page = (tmp_path / 'report' / 'index.html').read_text()
  assert 'no PRO curve' in page and (tmp_path / 'report' / 'roc.png').is_file()


def test_overlay_colours_are_matplotlibs_jet_and_the_panels_are_laid_out():
  import matplotlib  # pylint: disable=g-import-not-at-top
  from vivano_jax import overlays  # pylint: disable=g-import-not-at-top
  want = matplotlib.colormaps['jet'](np.linspace(0.0, 1.0, 256))[:, :3] * 255
  np.testing.assert_allclose(overlays.jet_colors(), want, atol=1e-3)
  image = np.full((6, 5), 100, np.uint8)
  amap = np.zeros((6, 5), np.float32)
  amap[0, 0] = 1.0  # Red at the top of the range, blue (0, 0, 127.5) elsewhere.
  mask = np.zeros((6, 5), bool)
  pic = overlays.overlay(image, amap, mask, (0.0, 1.0))
  assert pic.shape == (6, 3 * 5 + 2 * 4, 3) and pic.dtype == np.uint8
  np.testing.assert_array_equal(pic[:, :5], 100)  # The image, grey to RGB.
  np.testing.assert_array_equal(pic[:, 5:9], 255)  # The white gap.
  np.testing.assert_array_equal(pic[0, 9], np.round(0.5 * 100 + 0.5 * want[255]))
  np.testing.assert_array_equal(pic[5, 13], np.round(0.5 * 100 + 0.5 * want[0]))
  np.testing.assert_array_equal(pic[:, 18:], 0)  # The mask panel: no defect.
