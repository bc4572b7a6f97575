"""The `vivano` command: subcommands, help, and one exit code per kind of outcome.

Every subcommand is run in-process through `cli.main` (as the console script calls it): --help
exits 0, a bad flag 2 (usage), a missing file 1 (data), a correct call 0; each error is one line on
stderr without a traceback unless --verbosity=1.
"""

import re
import shutil
import warnings

import numpy as np
from PIL import Image
import pytest

from tests.conftest import REPO
from tests.test_export import trained_folder_run
from vivano_jax import cli
from vivano_jax import config_files
from vivano_jax import errors

TINY = str(REPO / 'configs' / 'tiny.py')


@pytest.fixture
def folder_run(tmp_path_factory, tfds_dir):
  return trained_folder_run(tmp_path_factory, tfds_dir)


def _call(capsys, *args):
  code = cli.main(['vivano', *args])
  out, err = capsys.readouterr()
  return code, out, err


def _one_error_line(err: str) -> str:
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


def test_vivano_help_lists_every_subcommand(capsys):
  code, out, _ = _call(capsys, '--help')
  assert code == 0
  for name in ('train', 'export', 'evaluate', 'predict', 'sweep', 'benchmark', 'report',
               'export-model'):
    assert f'  {name} ' in out
  assert cli.main(['vivano']) == errors.EXIT_USAGE
  code, _, err = _call(capsys, 'nope')
  assert code == errors.EXIT_USAGE and 'unknown command' in _one_error_line(err)


@pytest.mark.parametrize('command', sorted(set(cli.COMMANDS) - {'sweep'}))
def test_help_and_bad_flag(capsys, command):
  code, out, _ = _call(capsys, command, '--help')
  assert code == 0 and f'usage: vivano {command}' in out and '--verbosity' in out
  code, _, err = _call(capsys, command, '--no_such_flag=1')
  assert code == errors.EXIT_USAGE and 'no_such_flag' in _one_error_line(err)


def test_sweep_help_and_bad_argument(capsys):
  code, out, _ = _call(capsys, 'sweep', '--help')
  assert code == 0 and 'run' in out and 'gather' in out
  code, _, err = _call(capsys, 'sweep', 'nope')
  assert code == errors.EXIT_USAGE


@pytest.mark.parametrize('command,args', [
    ('train', [f'--config={REPO / "configs" / "missing.py"}', '--workdir=W']),
    ('export', ['--workdir=/nonexistent/run']),
    ('evaluate', ['--predictions=/nonexistent/run/export/test']),
    ('predict', ['--workdir=/nonexistent/run', '--input=x.png', '--output=o']),
    ('report', ['--workdir=/nonexistent/run']),
    ('benchmark', ['--config=/nonexistent/config.py']),
    ('export-model', ['--workdir=/nonexistent/run', '--format=onnx', '--output=/tmp/unused']),
    ('sweep', ['run', '--sweep=/nonexistent/sweep.py', '--root=/tmp/r', '--dry_run']),
])
def test_missing_file_is_a_data_error(capsys, command, args):
  code, _, err = _call(capsys, command, *args)
  assert code == errors.EXIT_DATA, err
  assert 'nonexistent' in _one_error_line(err) or 'missing.py' in err


def test_unknown_config_field_names_it_and_a_close_match(capsys, tmp_path):
  code, _, err = _call(capsys, 'train', f'--config={TINY}', f'--workdir={tmp_path}',
                       '--config.seed=1', '--config.model.depthh=2')
  assert code == errors.EXIT_USAGE
  line = _one_error_line(err)
  assert '--config.model.depthh' in line and "'depth'" in line
  assert not (tmp_path / 'config.json').exists()  # Nothing written.


@pytest.mark.parametrize('flag,words', [
    ('--config.train.num_epochs=0.5', "train.num_epochs takes a whole number, not '0.5' (for "
                                      'part of an epoch, set train.num_steps)'),
    ('--config.train.learning_rate=fast', "train.learning_rate takes a number, not 'fast'"),
    ('--config.export.at_end=maybe', "export.at_end takes true or false, not 'maybe'"),
])
def test_a_config_value_of_the_wrong_type_is_named_in_words(capsys, tmp_path, flag, words):
  """--config.train.num_epochs=0.5 said "invalid literal for int() with base 10: '0.5'"."""
  code, _, err = _call(capsys, 'train', f'--config={TINY}', f'--workdir={tmp_path / "run"}', flag)
  assert code == errors.EXIT_USAGE and err == f'error: {flag}: {words}\n', err
  assert not (tmp_path / 'run').exists()
  with pytest.raises(errors.UsageError, match=re.escape(f'{flag}: {words}')):
    config_files.apply_overrides(config_files.load_config(TINY),
                                 {flag[len('--config.'):].split('=')[0]: flag.split('=')[1]})


def test_verbosity_1_shows_the_traceback(capsys):
  code, _, err = _call(capsys, 'evaluate', '--predictions=/nonexistent', '--verbosity=1')
  assert code == errors.EXIT_DATA and 'Traceback' in err and 'error: ' in err


def test_ctrl_c_exits_130(capsys, monkeypatch):
  from vivano_jax import evaluate  # pylint: disable=g-import-not-at-top

  def interrupted(fv):
    raise KeyboardInterrupt

  monkeypatch.setattr(evaluate, 'run', interrupted)
  code, _, _ = _call(capsys, 'evaluate', '--predictions=x')
  assert code == errors.EXIT_INTERRUPTED


def test_out_of_memory_is_one_line_and_other_errors_keep_their_traceback(capsys, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from vivano_jax import evaluate  # pylint: disable=g-import-not-at-top
  failures = iter([jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating '
                                              '25509671680 bytes.'), MemoryError(),
                   jax.errors.JaxRuntimeError('INTERNAL: something else')])

  def failing(fv):
    raise next(failures)

  monkeypatch.setattr(evaluate, 'run', failing)
  for _ in range(2):
    code, _, err = _call(capsys, 'evaluate', '--predictions=x')
    line = _one_error_line(err)
    assert code == errors.EXIT_DATA and 'out of memory' in line and 'train.batch_size' in line
  with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL'):  # A bug: its traceback.
    _call(capsys, 'evaluate', '--predictions=x')

@pytest.mark.parametrize('body, arg, code, message', [
    ('def get_config(:\n', '', 1, 'failed to load: SyntaxError: invalid syntax'),
    ('def get_config():\n  raise RuntimeError("boom")\n', '', 1,
     'get_config() failed: RuntimeError: boom'),
    ('x = 1\n', '', 1, 'defines no get_config() function'),
    ('def get_config():\n  return 5\n', '', 1, 'returned a value of type int, not an'),
    ('from configs.tiny import get_config\n', ':3', 2, 'takes no argument'),
    ('import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict({"dataset": '
     '{"name": "digits/0"}})\n', '', 2, 'the config lacks dataset.augment.hflip'),
    ('from configs.tiny import get_config as tiny\ndef get_config():\n  c = tiny()\n'
     '  c.train.learning_rat = 1.0\n  return c\n', '', 2,  # A typo: not ignored.
     'the config has no field train.learning_rat (did you mean train.learning_rate?)'),
])
def test_a_broken_config_file_is_one_line(capsys, tmp_path, body, arg, code, message):
  (tmp_path / 'cfg.py').write_text(body)
  got, _, err = _call(capsys, 'train', f'--config={tmp_path / "cfg.py"}{arg}',
                      f'--workdir={tmp_path / "w"}')
  assert got == code and message in _one_error_line(err)
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('body, message', [
    (None, 'no such config file'),
    ('def get_config():\n  raise RuntimeError("boom")\n',
     'get_config() failed: RuntimeError: boom'),
])
def test_a_config_flag_spelt_with_a_space_is_checked_alike(capsys, tmp_path, body, message):
  """`--config FILE` (absl's other spelling) skipped the file's checks: a missing file was
  ml_collections' 'earlier failure to load' line, a failing get_config() a traceback."""
  path = tmp_path / 'cfg.py'
  if body is not None:
    path.write_text(body)
  got, _, err = _call(capsys, 'train', '--config', str(path), f'--workdir={tmp_path / "w"}')
  assert got == errors.EXIT_DATA and _one_error_line(err) == f'error: --config={path}: {message}'
  assert not (tmp_path / 'w').exists()

@pytest.mark.parametrize('flag, message', [
    ('--sizes=0', 'image sizes must be positive'), ('--sizes=-32', 'image sizes must be positive'),
    ('--steps=0', '--steps'), ('--warmup=-1', '--warmup'), ('--matmul_size=-5', '--matmul_size'),
    ('--output=/nonexistent_folder/x.json', 'its folder does not exist'),
    ('--output=/tmp', 'is a folder: name the JSON file to write, e.g. --output=/tmp/bench.json'),
])
def test_benchmark_flags_are_checked_before_it_runs(capsys, flag, message):
  code, out, err = _call(capsys, 'benchmark', f'--config={TINY}', flag)
  assert code == errors.EXIT_USAGE and message in _one_error_line(err)
  assert 'benchmarking on' not in out

def test_a_folder_flag_naming_a_file_is_a_usage_error(capsys, tmp_path):
  file = tmp_path / 'notes.txt'
  file.write_text('x')
  for args in (['train', f'--config={TINY}', f'--workdir={file}'],
               ['evaluate', f'--predictions={tmp_path}', f'--output={file}']):
    code, _, err = _call(capsys, *args)
    assert code == errors.EXIT_USAGE and f'={file}: is a file, not a folder' in _one_error_line(err)
  assert file.read_text() == 'x'


def test_a_folder_flag_below_a_file_names_the_file(capsys, tmp_path):
  """--output=notes.txt/out was the system's bare 'Not a directory' or 'File exists' (exit 1)."""
  file = tmp_path / 'notes.txt'
  file.write_text('x')
  for args in (['train', f'--config={TINY}', f'--workdir={file / "run"}'],
               ['evaluate', f'--predictions={tmp_path}', f'--output={file / "a" / "b"}'],
               ['predict', f'--model={tmp_path}', f'--input={file}', f'--output={file / "o"}'],
               ['export-model', f'--workdir={tmp_path}', '--format=jax', f'--output={file / "m"}']):
    code, _, err = _call(capsys, *args)
    assert code == errors.EXIT_USAGE and _one_error_line(err) == (
        f'error: {args[-1]}: {file} is a file, not a folder'), (args, err)
  assert file.read_text() == 'x' and sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']


def test_shifts_that_do_not_divide_the_patch_are_refused_before_training(capsys, tmp_path):
  """score.shifts=3 with 8 px patches was refused when the run was first scored: after training."""
  code, out, err = _call(capsys, 'train', f'--config={TINY}', f'--workdir={tmp_path / "run"}',
                         f'--config.dataset.data_dir={tmp_path / "tfds"}',
                         '--config.score.shifts=3')
  assert code == errors.EXIT_USAGE and _one_error_line(err) == (
      'error: score.shifts=3 must divide model.patch_size=8')
  assert 'train' not in out and not any(tmp_path.iterdir())


def test_a_data_dir_that_is_a_file_is_named_before_anything_is_written(capsys, tmp_path):
  """tfds failed on '<data_dir>/downloads: Not a directory', naming no field (exit 1)."""
  file = tmp_path / 'tfds'
  file.write_text('x')
  code, _, err = _call(capsys, 'train', f'--config={TINY}', f'--workdir={tmp_path / "run"}',
                       f'--config.dataset.data_dir={file}')
  assert code == errors.EXIT_USAGE and _one_error_line(err) == (
      f'error: dataset.data_dir={file}: is a file, not a folder (where prepared datasets are kept)')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['tfds'] and file.read_text() == 'x'


@pytest.mark.parametrize('args', [
    ['train', f'--config={TINY}', '--workdir='],
    ['predict', '--workdir=run', '--input=', '--output=o'],  # Would score the current folder.
    ['predict', '--workdir=run', '--input=x.png', '--output= '],
    ['export', '--workdir='],
    ['export-model', '--workdir=run', '--format=jax', '--output='],
    ['evaluate', '--predictions=x', '--ground_truth='],
])
def test_an_empty_path_flag_is_a_usage_error(capsys, tmp_path, monkeypatch, args):
  monkeypatch.chdir(tmp_path)  # Nothing may be read or written in the current folder.
  code, _, err = _call(capsys, *args)
  flag = next(a for a in args if a.endswith('=') or a.endswith('= ')).split('=')[0]
  assert code == errors.EXIT_USAGE and f'{flag}=' in _one_error_line(err)
  assert 'is empty' in err and not any(tmp_path.iterdir())


def test_an_image_over_pils_pixel_limits_is_named_not_warned_about_anonymously(
    capsys, tmp_path, monkeypatch):
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 150)  # Warns above 150 pixels, refuses 300.
  for name, size in (('train/good/big.png', 13), ('train/good/huge.png', 18),
                     ('test/good/a.png', 8), ('test/crack/b.png', 8)):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size, size), np.uint8)).save(tmp_path / name)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    code, _, err = _call(capsys, 'train', f'--config={TINY}', f'--workdir={tmp_path / "run"}',
                         '--config.dataset.name=folder', f'--config.dataset.manual_dir={tmp_path}',
                         f'--config.dataset.data_dir={tmp_path / "tfds"}')
  line = _one_error_line(err)
  assert code == errors.EXIT_DATA and str(tmp_path / 'train/good/huge.png: too large') in line
  assert 'big.png' not in err and not [w for w in caught if 'decompression' in str(w.message)]


def test_os_error_is_one_line(capsys, folder_run, tmp_path):
  blocker = tmp_path / 'link'  # A link that leads nowhere: no folder can be made there.
  blocker.symlink_to(tmp_path / 'nowhere' / 'x')
  code, _, err = _call(capsys, 'evaluate', f'--predictions={folder_run / "export" / "test"}',
                       f'--output={blocker}')
  assert code == errors.EXIT_DATA and str(blocker) in _one_error_line(err)


def test_a_path_flag_starting_with_a_tilde_is_in_the_home_folder(capsys, folder_run, tmp_path,
                                                                 monkeypatch):
  """The shell leaves the '~' of --output=~/eval as it is: the files went to a folder named '~'
  in the current folder (which a later `rm -rf ~` meant for it would not spare)."""
  home, cwd = tmp_path / 'home', tmp_path / 'cwd'
  home.mkdir()
  cwd.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(cwd)
  shutil.copytree(folder_run / 'export' / 'test', home / 'split')
  code, out, err = _call(capsys, 'evaluate', '--predictions=~/split', '--output=~/eval')
  assert code == 0, err
  assert f'written: {home / "eval" / "evaluation.csv"}' in out
  assert (home / 'eval' / 'evaluation.md').is_file() and not any(cwd.iterdir())


def test_every_subcommand_succeeds(capsys, folder_run, tmp_path, tfds_dir):
  split = folder_run / 'export' / 'test'
  code, out, err = _call(capsys, 'evaluate', f'--predictions={split}', f'--output={tmp_path}')
  assert code == 0 and 'overall' in out and (tmp_path / 'evaluation.csv').is_file(), err
  run = tmp_path / 'run'  # A copy: the session's run serves other tests, on other workers too.
  shutil.copytree(folder_run, run)
  code, out, err = _call(capsys, 'report', f'--workdir={run}')
  assert code == 0 and out.strip().endswith('index.html'), err
  images = sorted((folder_run.parent / 'folder' / 'test' / 'spot').iterdir())[:2]
  code, out, err = _call(capsys, 'predict', f'--workdir={folder_run}', f'--input={images[0]}',
                         f'--output={tmp_path / "pred"}')
  assert code == 0 and (tmp_path / 'pred' / 'predictions.csv').is_file(), err
  code, out, err = _call(capsys, 'export', f'--workdir={run}', '--step=5', '--verbosity=1')
  assert code == 0 and 'checkpoint step 5' in out, err
  assert 'INFO' in err  # --verbosity=1: library logs on the console too.
  code, out, err = _call(capsys, 'benchmark', f'--config={TINY}', '--steps=1', '--warmup=0')
  assert code == 0 and 'MFU' in out, err
  code, out, err = _call(capsys, 'sweep', 'run', f'--sweep={REPO / "sweeps" / "example.py"}',
                         f'--root={tmp_path / "sweep"}', '--dry_run')
  assert code == 0, err
  code, out, err = _call(capsys, 'train', f'--config={TINY}', f'--workdir={tmp_path / "train"}',
                         f'--config.dataset.data_dir={tfds_dir}', '--config.train.num_steps=10',
                         '--config.export.at_end=False')
  assert code == 0 and 'image AUROC' in out, err
  # One line per stage and a progress bar; library logs in the workdir's log file, not on the console.
  for line in ('prepare data (digits/0) ...', 'train [', 'evaluate (test split): done in'):
    assert line in out, out
  assert 'INFO' not in err and 'INFO' not in out, err
  log = (tmp_path / 'train' / 'vivano.log').read_text()
  assert 'JAX process 0 of 1' in log and 'INFO' in log
