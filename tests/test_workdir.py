"""A workdir never gives a wrong answer: refused reruns, locks, all-or-none exports, damaged
checkpoints, one-class test splits and unwritable outputs (each reproduced, then checked fixed).

One tiny run (digits, 10 steps, checkpoints at 5 and 10, exported) is trained once and copied for
every test that changes it.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, disk_full_open
from tests.test_export import NUM_TEST, folder_overrides, write_folder
from vivano_jax import cli
from vivano_jax import errors
from vivano_jax import export
from vivano_jax import export_format
from vivano_jax import thresholds
from vivano_jax import workdir as workdir_lib
from vivano_jax import workdir_lock

TINY = str(REPO / 'configs' / 'tiny.py')


def _flags(tfds_dir, *extra):
  return [f'--config={TINY}', f'--config.dataset.data_dir={tfds_dir}',
          '--config.train.num_steps=10', '--config.train.checkpoint_every_steps=5',
          '--config.export.max_overlays=1', *extra]


def _vivano(capsys, *args):
  code = cli.main(['vivano', *args])
  out, err = capsys.readouterr()
  return code, out, err


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tfds_dir):
  workdir = tmp_path_factory.mktemp('workdir') / 'run'
  assert cli.main(['vivano', 'train', f'--workdir={workdir}', *_flags(tfds_dir)]) == 0
  return workdir


@pytest.fixture
def run(trained, tmp_path):
  copy = tmp_path / 'run'
  shutil.copytree(trained, copy)
  return copy


def test_rerun_with_fewer_steps_is_refused(run, tfds_dir, capsys):
  before = (run / 'config.json').read_bytes()
  code, _, err = _vivano(capsys, 'train', f'--workdir={run}', *_flags(tfds_dir),
                         '--config.train.num_steps=6')
  assert code == errors.EXIT_USAGE
  assert 'step 10' in err and 'train.num_steps=6' in err
  assert (run / 'config.json').read_bytes() == before


# Orbax's async restore leaves asyncio callbacks that fail after the failed restores: noise only.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_run_without_config_json_is_not_given_another_models_config(run, tfds_dir, capsys):
  (run / 'config.json').unlink()
  steps = sorted(p.name for p in (run / 'checkpoints').iterdir())
  code, _, err = _vivano(capsys, 'train', f'--workdir={run}', *_flags(tfds_dir),
                         '--config.train.num_steps=20', '--config.model.width=48')
  assert code == errors.EXIT_DATA
  line = [l for l in err.splitlines() if l.startswith('error:')][0]
  assert 'checkpoint step 10' in line and 'holds another model' in line, line
  assert 'not damaged' in line and 'delete' not in line and not (run / 'config.json').exists()
  assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == steps  # None deleted.


def test_rerun_with_another_model_or_data_is_refused(run, tfds_dir, capsys):
  before = (run / 'config.json').read_bytes()
  code, _, err = _vivano(capsys, 'train', f'--workdir={run}', *_flags(tfds_dir),
                         '--config.model.width=48', '--config.dataset.name=digits/1')
  assert code == errors.EXIT_USAGE
  line = [l for l in err.splitlines() if l.startswith('error:')][0]
  assert 'model.width' in line and 'dataset.name' in line and 'new --workdir' in line
  assert (run / 'config.json').read_bytes() == before
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', f'--config={TINY}',
                         '--config.model.width=48')
  assert code == errors.EXIT_USAGE and 'model.width' in err


def test_score_change_reexports_thresholds_and_predict_checks_them(run, tfds_dir, capsys):
  assert json.loads((run / 'thresholds.json').read_text())['score'] == 'recon'
  code, _, err = _vivano(capsys, 'train', f'--workdir={run}', *_flags(tfds_dir),
                         '--config.score.image=nll_max', '--config.export.at_end=False')
  assert code == 0, err
  record = json.loads((run / 'thresholds.json').read_text())
  assert record['score'] == 'nll_max' and record['score_config']['image'] == 'nll_max'
  # A config.json whose score no longer matches thresholds.json: predict refuses.
  config = json.loads((run / 'config.json').read_text())
  config['score']['image'] = 'recon'
  (run / 'config.json').write_text(json.dumps(config))
  image = sorted((run / 'export' / 'test' / 'overlays').iterdir())[0]
  code, _, err = _vivano(capsys, 'predict', f'--workdir={run}', f'--input={image}',
                         f'--output={run / "pred"}')
  assert code == errors.EXIT_DATA and 'thresholds.json' in err and 'vivano export' in err
  assert "score.image='nll_max' there, 'recon' in config.json" in err
  # A score field added to the package after the export (absent from thresholds.json) counts at
  # its default: the run stays usable.
  config['score']['image'] = 'nll_max'
  (run / 'config.json').write_text(json.dumps(config))
  for path in (run / 'thresholds.json', run / 'export' / 'thresholds.json'):
    old = json.loads(path.read_text())
    del old['score_config']['shifts']
    path.write_text(json.dumps(old))
  code, _, err = _vivano(capsys, 'predict', f'--workdir={run}', f'--input={image}',
                         f'--output={run / "pred"}')
  assert code == 0, err


def test_export_with_another_score_records_it_for_predict(run, capsys):
  """`vivano export --config.score...` (the run's own config with these fields) writes thresholds
  for that score and records it in config.json, so predict serves what was exported; a failed
  export leaves config.json alone; an override of a command needing --config is one error."""
  before = (run / 'config.json').read_bytes()
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', '--config.score.image=nl_max')
  assert code == errors.EXIT_USAGE and 'score.image must be one of' in err
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', '--config.score.imag=nll_max')
  assert code == errors.EXIT_USAGE
  assert '--config.score.imag: no such config field (did you mean' in err
  assert (run / 'config.json').read_bytes() == before
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', '--config.score.image=nll_max')
  assert code == 0, err
  record = json.loads((run / 'thresholds.json').read_text())
  assert record['score'] == 'nll_max'
  config = json.loads((run / 'config.json').read_text())
  assert config['score']['image'] == 'nll_max'
  assert {k: v for k, v in config.items() if k != 'score'} == {
      k: v for k, v in json.loads(before).items() if k != 'score'}
  image = sorted((run / 'export' / 'test' / 'overlays').iterdir())[0]
  code, _, err = _vivano(capsys, 'predict', f'--workdir={run}', f'--input={image}',
                         f'--output={run / "pred"}')
  assert code == 0, err
  code, _, err = _vivano(capsys, 'train', f'--workdir={run}', '--config.train.num_steps=3')
  assert code == errors.EXIT_USAGE
  assert err == ('error: --config.train.num_steps=3: a --config.<field> flag overrides a config '
                 'file: give --config=<file> too (vivano train)\n')


def test_export_is_all_splits_and_thresholds_or_nothing(run, tfds_dir, monkeypatch):
  config = workdir_lib.load_config(str(run))
  config.export.splits = ('train', 'test')
  before = {p: p.read_bytes() for p in [run / 'thresholds.json', *sorted(
      (run / 'export').rglob('*.csv'))]}
  real, calls = export_format.write_split, []

  def fail_second(directory, *args, **kwargs):
    calls.append(directory)
    if len(calls) == 2:
      raise OSError(28, 'No space left on device', str(directory))
    return real(directory, *args, **kwargs)

  monkeypatch.setattr(export_format, 'write_split', fail_second)
  with pytest.raises(OSError):
    export.export_run(config, str(run), step=5)
  assert {p: p.read_bytes() for p in before} == before
  assert not (run / 'export' / 'train').exists()
  assert not [p for p in run.iterdir() if p.name.startswith('.')], list(run.iterdir())


def test_test_split_with_one_class_exports_without_metrics(tmp_path, tfds_dir, capsys):
  folder = write_folder(tmp_path / 'folder')
  for d in ('scratch', 'spot', 'stain'):
    shutil.rmtree(folder / 'test' / d)
  shutil.rmtree(folder / 'ground_truth')
  work = tmp_path / 'run'
  code, out, err = _vivano(capsys, 'train', f'--workdir={work}',
                           *folder_overrides(folder, tfds_dir))
  assert code == 0, err
  assert 'only normal images' in out + err
  assert json.loads((work / 'metrics.json').read_text())['metrics'] is None
  exp = export_format.read_export(work / 'export' / 'test', load_maps=False)
  assert len(exp) == 4 and exp.metrics is None
  assert (work / 'thresholds.json').is_file()


def test_second_process_on_a_workdir_is_refused_and_stale_locks_are_taken(run, tfds_dir, capsys):
  lock = run / workdir_lock.LOCK_FILE
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    lock.write_text(json.dumps({'host': socket.gethostname(), 'pid': sleeper.pid}))
    code, _, err = _vivano(capsys, 'export', f'--workdir={run}')
    assert code == errors.EXIT_DATA
    assert f'pid {sleeper.pid}' in err and socket.gethostname() in err
  finally:
    sleeper.kill()
    sleeper.wait()
  # The process is gone: its lock is stale and taken over; released afterwards.
  code, out, err = _vivano(capsys, 'export', f'--workdir={run}')
  assert code == 0, err
  assert 'stale lock' in err and not lock.exists()


def test_a_lock_copied_with_a_run_does_not_hold_the_copy(tmp_path, capsys):
  """A run copied (cp -r, rsync) while a process wrote it carries that process's lock: every
  command on the copy was refused as "in use by pid N" for as long as the original's writer ran.
  The lock records the workdir it was taken in; one naming another folder is taken over."""
  original, copy = tmp_path / 'original', tmp_path / 'copy'
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    with workdir_lock.lock(str(original)):
      holder = json.loads((original / workdir_lock.LOCK_FILE).read_text())
      assert holder['workdir'] == str(original.resolve()) and holder['pid'] == os.getpid()
    holder['pid'] = sleeper.pid  # The writer of the original, still running.
    for folder in (original, copy):
      folder.mkdir(exist_ok=True)
      (folder / workdir_lock.LOCK_FILE).write_text(json.dumps(holder))
    with workdir_lock.lock(str(copy)):
      assert json.loads((copy / workdir_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
    assert capsys.readouterr().err == (
        f'warning: {copy}: removing the stale lock copied from {original.resolve()}, which pid '
        f'{sleeper.pid} was writing\n')
    with pytest.raises(errors.DataError, match=f'in use by pid {sleeper.pid}'):
      with workdir_lock.lock(str(original)):  # The original stays held by its writer.
        pass
  finally:
    sleeper.kill()
    sleeper.wait()
  assert not (copy / workdir_lock.LOCK_FILE).exists()


def _damage(run, step):
  for path in sorted((run / 'checkpoints' / str(step)).rglob('*')):
    if path.is_file() and path.stat().st_size > 0 and 'state' in path.parts:
      path.write_bytes(b'\0' * 16)


def test_a_restore_error_is_described_in_one_short_line():
  from vivano_jax import checkpoints  # pylint: disable=g-import-not-at-top
  tensorstore = ValueError('Encountered error while reading array index: OUT_OF_RANGE: short read '
                           '[source locations=...] See full TensorStore details: <bound method '
                           'pybind11_detail_function_record_v1_system_li>\nsecond line')
  assert checkpoints.describe(tensorstore) == (
      'ValueError: Encountered error while reading array index: OUT_OF_RANGE: short read '
      '[source locations=...]')
  assert checkpoints.describe(OSError('x' * 500)) == 'OSError: ' + 'x' * 200
  assert checkpoints.describe(KeyError()) == 'KeyError: '

def test_damaged_latest_checkpoint_is_named_and_training_falls_back(run, tfds_dir, capsys):
  _damage(run, 10)
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}')
  assert code == errors.EXIT_DATA
  assert 'step 10' in err and 'damaged' in err and '--step=5' in err
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', '--step=5')
  assert code == 0, err
  # Resuming training falls back to step 5 with a warning and trains again to step 10.
  code, out, err = _vivano(capsys, 'train', f'--workdir={run}', *_flags(tfds_dir))
  assert code == 0, err
  assert 'damaged' in err and 'step 5' in err
  assert json.loads((run / 'metrics.json').read_text())['checkpoint_step'] == 10


def test_predict_checks_its_output_before_scoring(run, tmp_path, capsys):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  image = sorted((run / 'export' / 'test' / 'overlays').iterdir())[0]
  code, _, err = _vivano(capsys, 'predict', f'--workdir={run}', f'--input={image}',
                         f'--output={blocker / "out"}')
  assert code == errors.EXIT_USAGE and f'{blocker} is a file, not a folder' in err
  assert 'Traceback' not in err


@pytest.mark.parametrize('damage,message', [
    ('truncate', 'not a readable npz archive'),
    ('foreign', 'not a readable npz archive'),
    ('pickle', 'unreadable array'),
    ('nan', 'is not a finite number'),
    ('label', 'labels are 0 (normal) or 1 (anomalous)'),
])
def test_evaluate_on_a_damaged_export_names_the_file(run, capsys, damage, message):
  split = run / 'export' / 'test'
  maps = split / export_format.MAPS_NPZ
  if damage == 'truncate':
    maps.write_bytes(maps.read_bytes()[:100])
  elif damage == 'foreign':
    np.save(maps.with_suffix('.npy'), np.zeros(3))
    maps.with_suffix('.npy').rename(maps)
  elif damage == 'pickle':
    with np.load(maps) as npz:
      arrays = dict(npz)
    arrays['000000'] = np.array([{'a': 1}], dtype=object)
    np.savez(maps, **arrays)
  else:
    csv_path = split / export_format.SCORES_CSV
    lines = csv_path.read_text().splitlines()
    cells = lines[1].split(',')
    column = export_format.SCORE_COLUMNS.index('score' if damage == 'nan' else 'label')
    cells[column] = 'nan' if damage == 'nan' else '2'
    lines[1] = ','.join(cells)
    csv_path.write_text('\n'.join(lines) + '\n')
  code, _, err = _vivano(capsys, 'evaluate', f'--predictions={split}')
  assert code == errors.EXIT_DATA and message in err and 'Traceback' not in err
  name = export_format.SCORES_CSV if damage in ('nan', 'label') else export_format.MAPS_NPZ
  assert name in err


def test_stale_temporaries_and_outputs_are_cleaned_and_tiny_images_named(run, tmp_path, capsys):
  # A killed export leaves a hidden staging folder: the next command on the workdir removes it.
  (run / '.export.tmp-killed').mkdir()
  out = tmp_path / 'pred'
  (out / 'maps').mkdir(parents=True)
  (out / 'maps' / '000009_old.npy').write_bytes(b'stale')
  tiny = tmp_path / 'tiny.png'
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.full((1, 1), 128, np.uint8)).save(tiny)
  code, _, err = _vivano(capsys, 'predict', f'--workdir={run}', f'--input={tiny}',
                         f'--output={out}')
  assert code == 0, err
  assert f'{tiny} is 1 x 1 px' in err
  assert sorted(p.name for p in (out / 'maps').iterdir()) == ['000000_tiny.npy']
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}')
  assert code == 0, err
  assert '.export.tmp-killed' in err and not (run / '.export.tmp-killed').exists()


def test_rerun_keeps_the_training_throughput(run, tfds_dir, capsys):
  before = json.loads((run / 'metrics.json').read_text())['train_images_per_sec']
  assert before is not None
  code, _, err = _vivano(capsys, 'train', f'--workdir={run}', *_flags(tfds_dir))
  assert code == 0, err
  assert json.loads((run / 'metrics.json').read_text())['train_images_per_sec'] == before


def test_a_run_failing_before_training_leaves_no_workdir(tmp_path, tfds_dir, capsys):
  work = tmp_path / 'new'
  code, _, err = _vivano(capsys, 'train', f'--workdir={work}', *_flags(tfds_dir),
                         '--config.dataset.name=folder', f'--config.dataset.manual_dir={tmp_path}/x')
  assert code == errors.EXIT_DATA and 'dataset.manual_dir' in err
  assert not work.exists()


def test_an_mvtec_ad_run_saved_without_its_categorys_augmentation_exports_as_trained(tmp_path):
  """A run trained with dataset.name=mvtec_ad/bottle before that name took bottle's augmentation
  holds None in dataset.augment: `vivano export --workdir` on it, with its own config.json, was
  refused as "trained with another config (dataset.augment.hflip: None -> True; ...)"."""
  from vivano_jax import config_defaults, datasets  # pylint: disable=g-import-not-at-top
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  (run / 'checkpoints' / '10').mkdir(parents=True)
  saved = config_defaults.small_128px_config().to_dict()
  saved['dataset'].update(name='mvtec_ad/bottle', channels=3,
                          augment={'hflip': None, 'vflip': None, 'rot90': None})
  (run / 'config.json').write_text(json.dumps(saved))
  config = workdir_lib.load_config(str(run))
  datasets.resolve_config(config)  # What export and a rerun do first.
  assert config.dataset.augment.to_dict() == {'hflip': False, 'vflip': False, 'rot90': False}
  workdir_lib.check_compatible(config, str(run))  # Its own config: not refused.
  # The category's augmentation now (configs/mvtec_ad.py:bottle) would train another model.
  today = load_config('mvtec_ad', 'bottle')
  today.dataset.manual_dir = ''
  assert workdir_lib.differing_fields(today, str(run))[:3] == [
      'dataset.augment.hflip: False -> True', 'dataset.augment.rot90: False -> True',
      'dataset.augment.vflip: False -> True']
  # A folder dataset's None fields (off, and warned of) stay None: resolve_config leaves them.
  saved['dataset'].update(name='folder')
  (run / 'config.json').write_text(json.dumps(saved))
  assert workdir_lib.load_config(str(run)).dataset.augment.hflip is None


def test_a_run_saved_before_a_default_changed_keeps_its_former_value(run):
  """config.json without model.decoder_upsample was written when only nearest upsampling existed:
  it loads as 'nearest', not as today's default, so its checkpoint restores into the same model."""
  path = run / 'config.json'
  saved = json.loads(path.read_text())
  assert saved['model']['decoder_upsample'] == 'subpixel'  # Today's default, recorded.
  assert workdir_lib.load_config(str(run)).model.decoder_upsample == 'subpixel'
  del saved['model']['decoder_upsample']
  path.write_text(json.dumps(saved))
  assert workdir_lib.load_config(str(run)).model.decoder_upsample == 'nearest'
  # The conv output layer, the only one before model.decoder_output existed.
  assert saved['model']['decoder_output'] == 'subpixel'
  del saved['model']['decoder_output']
  path.write_text(json.dumps(saved))
  assert workdir_lib.load_config(str(run)).model.decoder_output == 'conv'
  # Runs from before score.always_ssim computed the SSIM components always: their exports keep them.
  assert not workdir_lib.load_config(str(run)).score.always_ssim
  del saved['score']['always_ssim']
  path.write_text(json.dumps(saved))
  assert workdir_lib.load_config(str(run)).score.always_ssim


def _assert_predict_refuses_naming(run, out, capsys, path, message):
  """predict on one of the run's images fails with one line naming `path` and `message`, exit 1,
  and writes nothing."""
  image = sorted((run / 'export' / 'test' / 'overlays').iterdir())[0]
  code, _, err = _vivano(capsys, 'predict', f'--workdir={run}', f'--input={image}',
                         f'--output={out}')
  assert code == errors.EXIT_DATA and err.startswith(f'error: {path}: ') and message in err, err
  assert err.count('\n') == 1 and not out.exists(), err


def _predict_and_export_with_config_field(run, out, capsys, section, field, value):
  """(exit code, stderr) of predict and of export on `run` after its config.json's field is set
  to `value` (a hand edit)."""
  path = run / 'config.json'
  saved = json.loads(path.read_text())
  assert saved[section].get(field) != value
  saved[section][field] = value
  path.write_text(json.dumps(saved))
  image = sorted((run / 'export' / 'test' / 'overlays').iterdir())[0]
  for args in (['predict', f'--input={image}', f'--output={out}'], ['export']):
    code, _, err = _vivano(capsys, *args, f'--workdir={run}')
    yield code, err


@pytest.mark.parametrize('section,field,value,message', [
    ('dataset', 'image_size', '32', "dataset.image_size must be an int >= 1, got '32'"),
    ('dataset', 'channels', 2, 'dataset.channels must be 1 (gray) or 3 (RGB), got 2'),
    ('model', 'widht', 64, 'has no field model.widht'),
])
def test_an_edited_config_json_is_named_not_blamed_on_the_checkpoint(run, tmp_path, capsys,
                                                                      section, field, value,
                                                                      message):
  """A value no run could have trained with was restored into a model the checkpoint does not fit
  and reported as a damaged checkpoint, with advice to delete that (intact) checkpoint."""
  path = run / 'config.json'
  out = tmp_path / 'out'
  for code, err in _predict_and_export_with_config_field(run, out, capsys, section, field, value):
    assert code == errors.EXIT_DATA, err
    assert err.startswith(f'error: {path}: edited or damaged') and message in err, err
    assert 'checkpoint' not in err, err
    assert err.count('\n') == 1
  assert not out.exists()
  assert (run / 'checkpoints' / '10').is_dir()


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('field,value', [('width', 64), ('depth', 3)])
def test_a_config_json_of_another_valid_model_is_not_called_a_damaged_checkpoint(
    run, tmp_path, capsys, field, value):
  """config.json edited to another model that could train (a wider or deeper one): Orbax refuses
  the arrays, which was reported as a damaged checkpoint, with advice to delete that intact one."""
  out = tmp_path / 'out'
  for code, err in _predict_and_export_with_config_field(run, out, capsys, 'model', field, value):
    assert code == errors.EXIT_DATA, err
    line = [l for l in err.splitlines() if l.startswith('error:')][-1]
    assert 'checkpoint step 10' in line and 'holds another model' in line, err
    assert 'not damaged' in line and 'delete' not in line and 'damaged (' not in line, err
  assert not out.exists()
  assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['10', '5']


@pytest.mark.parametrize('field,value,message', [
    ('rule', 'anomalous if score <= threshold', "rule 'anomalous if score <= threshold', but "
     "images are decided by the rule 'anomalous if score >= threshold' alone"),
    ('pixel_display_range', [1.0, 0.0], 'the low end is above the high end'),
])
def test_an_edited_rule_or_colour_scale_in_thresholds_json_is_refused(run, tmp_path, capsys,
                                                                      field, value, message):
  """thresholds.json may be edited to move the threshold; a rule edited there was printed beside
  every decision while the decisions kept score >= threshold, and a reversed colour scale drew
  every map in one colour."""
  path = run / thresholds.FILENAME
  record = json.loads(path.read_text())
  path.write_text(json.dumps(record | {field: value}))
  _assert_predict_refuses_naming(run, tmp_path / 'out', capsys, path, message)


@pytest.mark.parametrize('edit,message', [
    (('label', 'x'), "line 2: label 'x' is not an integer"),
    (('score', 'high'), "line 2: score 'high' is not a number"),
    (('has_mask', '2'), 'line 2: has_mask 2; it is 0 (no mask) or 1'),
    (('nll_max', '1,5'), 'line 2: 11 fields, the header 10'),
    ('cut', 'line 2: 4 fields, the header 10'),
    (('defect_type', 'overall'), "line 2: defect type 'overall' is the name of the metrics' row "
     "of all images, which would replace this type's row; rename it"),
])
def test_a_hand_edited_scores_csv_names_the_line_and_column(run, capsys, edit, message):
  """A cell that is not a number was 'invalid literal for int() with base 10' (no column), a line
  cut short an 'int() argument must be ... NoneType' line, and has_mask 2 counted as a mask."""
  split = run / 'export' / 'test'
  path = split / export_format.SCORES_CSV
  lines = path.read_text().splitlines()
  cells = lines[1].split(',')
  if edit == 'cut':
    cells = cells[:4]
  else:
    cells[lines[0].split(',').index(edit[0])] = edit[1]
  lines[1] = ','.join(cells)
  path.write_text('\n'.join(lines) + '\n')
  code, _, err = _vivano(capsys, 'evaluate', f'--predictions={split}')
  hint = ' (an unquoted comma, or a line cut short?)' if 'fields' in message else ''
  assert code == errors.EXIT_DATA and err == f'error: {path}, {message}{hint}\n', err
  assert not (split / 'evaluation.csv').exists()


def test_evaluate_on_a_full_disk_leaves_no_partial_table(run, tmp_path, capsys, monkeypatch):
  """evaluation.csv was written in place: a full disk left a table cut short, which reads as
  one with fewer defect types."""
  from vivano_jax import atomic_files  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(atomic_files, 'open', disk_full_open, raising=False)
  split = run / 'export' / 'test'
  out = tmp_path / 'evaluation'
  for args in ([], [f'--output={out}']):
    code, _, err = _vivano(capsys, 'evaluate', f'--predictions={split}', *args)
    assert code == errors.EXIT_DATA and 'No space left on device' in err, err
  assert not out.exists()
  assert not [p.name for p in split.iterdir() if 'evaluation' in p.name]


@pytest.mark.parametrize('failure', ['disk full', 'rename'])
def test_evaluate_failing_between_its_two_tables_leaves_both_as_they_were(run, capsys, monkeypatch,
                                                                          failure):
  """evaluation.csv was renamed into place before evaluation.md was: a failure in between (a full
  disk, a failed rename) left a new csv beside the md of an earlier evaluation."""
  from vivano_jax import atomic_files  # pylint: disable=g-import-not-at-top
  from vivano_jax import evaluate  # pylint: disable=g-import-not-at-top

  split = run / 'export' / 'test'
  for name in (evaluate.EVALUATION_CSV, evaluate.EVALUATION_MD):
    (split / name).write_text(f'an earlier {name}\n')
  before = sorted((p.name, p.read_bytes()) for p in split.iterdir() if p.is_file())
  md = str(split / evaluate.EVALUATION_MD)
  if failure == 'disk full':  # Writing evaluation.md, once evaluation.csv is in place.
    opener = lambda path, *a, **k: (disk_full_open if os.fspath(path).startswith(md) else open)(
        path, *a, **k)
    monkeypatch.setattr(atomic_files, 'open', opener, raising=False)
  else:
    real_replace = os.replace

    def replace(src, dst):
      if os.fspath(dst) == md:
        raise OSError(5, 'Input/output error', md)
      real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
  code, _, err = _vivano(capsys, 'evaluate', f'--predictions={split}')
  monkeypatch.undo()
  assert code == errors.EXIT_DATA and err.startswith(f'error: {md}') and err.count('\n') == 1, err
  assert sorted((p.name, p.read_bytes()) for p in split.iterdir() if p.is_file()) == before


def test_export_overrides_a_tuple_field_of_the_runs_config(run, capsys):
  """config.json holds tuple fields (export.splits, score.combine) as JSON lists, which
  ml_collections cannot override: each such flag failed with an UnsupportedOperationError
  traceback."""
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', '--config.export.splits=tset')
  assert code == errors.EXIT_USAGE and err == (
      "error: export.splits must name distinct splits of ('train', 'validation', 'test'), got "
      "('tset',)\n"), err
  assert workdir_lib.load_config(str(run)).export.splits == ('test',)
  code, _, err = _vivano(capsys, 'export', f'--workdir={run}', "--config.score.combine=('recon',)",
                         '--config.score.image=combined')
  assert code == 0, err
  assert json.loads((run / 'config.json').read_text())['score']['combine'] == ['recon']
  assert json.loads((run / 'thresholds.json').read_text())['score_config']['combine'] == ['recon']


@pytest.fixture(scope='module')
def standardised(trained, tmp_path_factory):
  """A copy of the run exported with a score standardised on held-out normals (score_stats.npz)."""
  copy = tmp_path_factory.mktemp('standardised') / 'run'
  shutil.copytree(trained, copy)
  assert cli.main(['vivano', 'export', f'--workdir={copy}', '--config.score.image=combined']) == 0
  return copy


@pytest.mark.parametrize('damage,message', [
    ('truncate', 'unreadable (BadZipFile: File is not a zip file)'),
    ('nan', 'a mean or std that is not a finite number, or a negative std'),
])
def test_damaged_score_statistics_are_named(standardised, tmp_path, capsys, damage, message):
  """A truncated score_stats.npz was a BadZipFile traceback; a NaN in it scored every image NaN
  and decided each one normal."""
  run = tmp_path / 'run'
  shutil.copytree(standardised, run)
  path = run / 'export' / 'score_stats.npz'
  if damage == 'truncate':
    path.write_bytes(path.read_bytes()[:300])
  else:
    with np.load(path) as npz:
      arrays = {k: np.full_like(v, np.nan) if k.endswith('/std') else v for k, v in npz.items()}
    np.savez(path, **arrays)
  _assert_predict_refuses_naming(run, tmp_path / 'out', capsys, path, message)


def test_evaluate_on_a_run_folder_names_its_splits(run, capsys):
  """--predictions=RUN (or RUN/export) listed four missing files, with no word of the splits."""
  for given in (run, run / 'export'):
    code, _, err = _vivano(capsys, 'evaluate', f'--predictions={given}')
    assert code == errors.EXIT_USAGE and err == (
        f'error: --predictions={given}: holds the exported split(s) test, not one split; give '
        f'one, e.g. --predictions={run / "export" / "test"}\n'), err
  assert not list(run.rglob('evaluation.*'))


@pytest.mark.parametrize('command', ['report', 'export-model'])
def test_report_and_export_model_are_refused_while_another_process_writes_the_run(run, capsys,
                                                                                 tmp_path, command):
  """Neither took WORKDIR/.lock: beside an export replacing export/ and thresholds.json they read
  a half-updated run (report rewrote report/ from it, export-model deployed its threshold)."""
  lock = run / workdir_lock.LOCK_FILE
  report = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in (run / 'report').rglob('*'))
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  try:
    lock.write_text(json.dumps({'host': socket.gethostname(), 'pid': sleeper.pid}))
    args = [] if command == 'report' else ['--format=jax', f'--output={tmp_path / "model"}']
    code, out, err = _vivano(capsys, command, f'--workdir={run}', *args)
  finally:
    sleeper.kill()
    sleeper.wait()
  assert code == errors.EXIT_DATA and out == '' and err == (
      f'error: {run} is in use by pid {sleeper.pid} on {socket.gethostname()} (since None): wait '
      f'for it to end or use another --workdir; if that process is gone, delete {lock}\n'), err
  assert sorted((p.relative_to(run), p.stat().st_mtime_ns)
                for p in (run / 'report').rglob('*')) == report
  assert not (tmp_path / 'model').exists() and lock.is_file()


def test_a_read_only_run_is_read_without_its_lock_unless_a_process_holds_it(tmp_path,
                                                                           monkeypatch):
  """export-model only reads the run: a copy it may not write is read without taking .lock (it
  cannot be created there), but a lock held by a running process is still refused."""
  monkeypatch.setattr(workdir_lock.os, 'access', lambda path, mode: False)
  with workdir_lock.lock(str(tmp_path), reads_only=True):
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps({'host': 'elsewhere', 'pid': 1}))
  with pytest.raises(errors.DataError, match=r'in use by pid 1 on elsewhere'):
    with workdir_lock.lock(str(tmp_path), reads_only=True):
      pass


@pytest.mark.parametrize('content', ['[1]', '{"host": "h", "pid": "12"}', '{"pid": true}'])
def test_a_lock_of_another_shape_is_refused_in_one_line(run, capsys, content):
  """A .lock holding a JSON list was an AttributeError traceback, a text pid an 'invalid literal
  for int()' line: the lock is named, as a damaged one is."""
  work = run
  (work / workdir_lock.LOCK_FILE).write_text(content)
  code, _, err = _vivano(capsys, 'export', f'--workdir={work}')
  assert code == errors.EXIT_DATA and err == (
      f'error: {work} is in use by another process: wait for it to end or use another --workdir; '
      f'if that process is gone, delete {work / workdir_lock.LOCK_FILE}\n'), err
  assert (work / workdir_lock.LOCK_FILE).read_text() == content


def test_a_smoothing_wider_than_the_image_is_refused_before_scoring(run, capsys):
  """score.smoothing_sigma=1000 unrolled 8001 kernel taps into the scoring step, which compiled
  for minutes without a word (to flatten every map)."""
  before = (run / 'config.json').read_bytes()
  code, out, err = _vivano(capsys, 'export', f'--workdir={run}',
                           '--config.score.smoothing_sigma=1000')
  assert code == errors.EXIT_USAGE and err == (
      'error: score.smoothing_sigma=1000 is wider than the image (dataset.image_size=32) and would '
      'flatten every map; use at most 32\n'), err
  assert out == '' and (run / 'config.json').read_bytes() == before


def test_an_export_keeps_a_hand_edited_thresholds_json_and_says_so(run, capsys):
  """README: WORKDIR/thresholds.json may be edited to move the decision threshold; a later export
  replaced that edit without a word."""
  path = run / thresholds.FILENAME
  record = json.loads(path.read_text())
  code, out, _ = _vivano(capsys, 'export', f'--workdir={run}')  # Nothing edited: nothing kept.
  assert code == 0 and 'note:' not in out and not (run / export.EDITED_THRESHOLDS).exists()
  edited = json.loads(path.read_text()) | {'threshold': record['threshold'] + 1.0}
  path.write_text(json.dumps(edited))
  code, out, _ = _vivano(capsys, 'export', f'--workdir={run}')
  assert code == 0
  assert json.loads((run / export.EDITED_THRESHOLDS).read_text()) == edited
  assert json.loads(path.read_text()) == json.loads(
      (run / 'export' / thresholds.FILENAME).read_text())
  note = [line for line in out.splitlines() if line.startswith('note: ')]
  assert len(note) == 1 and f'{path} had been edited' in note[0], out
  assert str(run / export.EDITED_THRESHOLDS) in note[0]
