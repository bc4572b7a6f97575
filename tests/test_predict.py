"""Scoring new images with a trained run: real magnetic tile photos, any size, gray or RGB, on two
devices with a padded batch; and the clear errors (missing run, empty glob, unreadable image).
Scoring with an exported model (--model) is tested in test_export_model.py."""

import csv
import json
import os
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
from tests.test_export import trained_folder_run
from vivano_jax import errors
from vivano_jax import export_format

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
MAGNETIC_TILE = SHARED_DATA / 'magnetic_tile'


@pytest.fixture
def folder_run(tmp_path_factory, tfds_dir):
  return trained_folder_run(tmp_path_factory, tfds_dir)


@pytest.mark.skipif(not MAGNETIC_TILE.is_dir(),
                    reason=f'real data folder {MAGNETIC_TILE} is absent (only on the project\'s '
                           'machines); the predict CLI test needs its magnetic tile photos')
def test_predict_cli_on_magnetic_tile_photos(folder_run, tmp_path):
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  # Photos of different sizes: the first of three test folders.
  chosen = [sorted((MAGNETIC_TILE / 'test' / d).iterdir())[0]
            for d in ('crack', 'good', 'blowhole')]
  for i, p in enumerate(chosen):
    shutil.copyfile(p, inputs / f'tile{i}{p.suffix}')
  # An RGB JPEG of an odd size, and one of the run's own test images (scored at export too).
  rgb = np.random.default_rng(0).integers(0, 256, (23, 37, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(inputs / 'rgb.jpg')
  shutil.copyfile(folder_run.parent / 'folder' / 'test' / 'spot' / '001.png', inputs / 'own.png')
  out = tmp_path / 'out'
  # Two devices, batch 3 -> 4: two batches, the second padded.
  proc = subprocess.run([sys.executable, '-m', 'vivano_jax.predict', f'--workdir={folder_run}',
                         f'--input={inputs}/*', f'--output={out}', '--batch_size=3'],
                        env=subprocess_env(devices=2), cwd=str(REPO), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '2 device(s)' in proc.stdout
  with open(out / 'predictions.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  names = sorted(p.name for p in inputs.iterdir())
  assert [pathlib.Path(r['path']).name for r in rows] == names
  threshold = json.loads((folder_run / 'thresholds.json').read_text())['threshold']
  for r in rows:
    with Image.open(r['path']) as im:
      size = (im.height, im.width)
    amap = np.load(out / r['map'])
    assert amap.dtype == np.float32 and amap.shape == size and np.isfinite(amap).all()
    with Image.open(out / r['overlay']) as im:  # image | map
      assert im.size == (2 * size[1] + 4, size[0])
    assert (int(r['height']), int(r['width'])) == size
    score = float(r['score'])
    assert r['decision'] == ('anomalous' if score >= threshold else 'normal')
    line = next(l for l in proc.stdout.splitlines() if l.endswith(r['path']))
    assert line.split()[0] == ('ANOMALOUS' if score >= threshold else 'normal')
  # The run's own test image scores as at export (1 device, batch 8 there).
  exported = export_format.read_export(folder_run / 'export' / 'test', load_maps=False)
  own = next(r for r in rows if r['path'].endswith('own.png'))
  i = list(exported.filenames).index('test/spot/001.png')
  assert float(own['score']) == pytest.approx(exported.scores[i], rel=1e-5)
  for name, values in exported.components.items():
    assert float(own[name]) == pytest.approx(values[i], rel=1e-4, abs=1e-6)


def test_predict_errors_are_clear(folder_run, tmp_path):
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='names no image file'):
    predict.find_images(str(tmp_path / 'nothing' / '*.png'))
  bad = tmp_path / 'bad'
  bad.mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / 'ok.png')
  (bad / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  (bad / 'notes.png').write_text('hello')
  paths = predict.find_images(str(bad))
  assert [p.name for p in paths] == ['broken.png', 'notes.png', 'ok.png']
  with pytest.raises(ValueError) as e:
    predict.predict(str(folder_run), paths)
  msg = str(e.value)
  assert '2 problem(s)' in msg and 'broken.png' in msg and 'notes.png' in msg
  with pytest.raises(ValueError, match='not a run folder'):
    predict.predict(str(tmp_path), paths[2:])
  no_thresholds = tmp_path / 'run'
  shutil.copytree(folder_run, no_thresholds, ignore=shutil.ignore_patterns('thresholds.json'))
  with pytest.raises(ValueError, match='vivano export'):
    predict.predict(str(no_thresholds), paths[2:])
  with pytest.raises(ValueError, match=r'--step=3: .* no checkpoint for it; there are \[5, 10\]'):
    predict.predict(str(folder_run), paths[2:], step=3)
  # The CLI: one line, no stack trace.
  proc = subprocess.run([sys.executable, '-m', 'vivano_jax.predict', f'--workdir={tmp_path / "x"}',
                         f'--input={bad}', f'--output={tmp_path / "o"}'], env=subprocess_env(),
                        cwd=str(REPO), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and 'error: --workdir=' in proc.stderr
  assert 'no such run folder' in proc.stderr and 'Traceback' not in proc.stderr


def test_predict_skips_its_own_outputs_and_refuses_bad_flags_leaving_nothing(folder_run, tmp_path,
                                                                             capsys):
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  photos = tmp_path / 'photos'
  for name in ('a.png', 'b.png', 'out/overlays/000000_a.png', 'out/maps/x.png'):
    (photos / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(photos / name)
  # --output inside --input: its files (from an earlier call) are not inputs.
  own = [str(photos / 'out' / d) for d in predict.OUTPUT_FOLDERS]
  assert [p.name for p in predict.find_images(str(photos), exclude=own)] == ['a.png', 'b.png']
  assert len(predict.find_images(f'{photos}/**/*.png', exclude=own)) == 2
  assert len(predict.find_images(str(photos))) == 4
  (tmp_path / 'file').write_text('x')
  (photos / 'c.png').write_text('not an image')
  for flags, code, message in (
      (['--batch_size=0'], 2, '--batch_size must be positive, got 0'),
      ([f'--output={tmp_path / "file"}'], 2, 'is a file, not a folder'),
      ([], 1, 'c.png'),  # Fails while reading the inputs: no empty output folder is left.
  ):
    argv = ['vivano', 'predict', f'--workdir={folder_run}', f'--input={photos}',
            f'--output={tmp_path / "new"}', *flags]
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err, err
    assert not (tmp_path / 'new').exists()


def test_predict_imports_no_jax_until_a_run_is_scored():
  # predict.py is the --model path's module too: JAX, Flax and TensorFlow only come with --workdir.
  code = ('import sys\nimport vivano_jax.predict\nprint(sorted({m.split(".")[0] for m in '
          'sys.modules} & {"jax", "jaxlib", "flax", "tensorflow", "orbax"}))')
  proc = subprocess.run([sys.executable, '-c', code], env=subprocess_env(), cwd=str(REPO),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip() == '[]', proc.stdout + proc.stderr[-2000:]


def test_output_names_follow_the_export():
  # One naming function for exports and predict's outputs, against hand-written names.
  expected = {'test/a b.png': 'test_a_b', '..hidden.jpg': 'hidden', 'ü/ß.tif': 'image',
              'x' * 200 + '.png': 'x' * 80, '.png': 'png', 'a.b.c': 'a.b'}
  for name, stem in expected.items():
    assert export_format.safe_stem(name) == stem, name


def test_input_folders_and_globs_name_each_image_once(tmp_path, capsys):
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'in'
  (folder / 'sub').mkdir(parents=True)
  pixels = np.zeros((4, 4, 3), np.uint8)
  Image.fromarray(pixels).save(folder / 'a.png')
  Image.fromarray(pixels).save(folder / 'sub' / 'b.webp', lossless=True)
  Image.fromarray(pixels).save(folder / 'c.gif')
  (folder / 'notes.txt').write_text('x')
  (folder / '.DS_Store').write_text('x')  # A system file: skipped without a word.
  found = predict.find_images(str(folder))
  assert found == [folder / 'a.png', folder / 'sub' / 'b.webp']
  err = capsys.readouterr().err
  assert err.startswith(f'warning: 2 file(s) in --input={folder} are not images of a read type')
  assert str(folder / 'c.gif') in err and str(folder / 'notes.txt') in err
  assert '.DS_Store' not in err
  # A '**' glob through a link back up the tree names a file many times: it is scored once.
  (folder / 'sub' / 'up').symlink_to('..')
  found = predict.find_images(str(folder / '**' / '*.png'))
  assert found == [folder / 'a.png']
  assert 'file(s) again through links; each file is scored once' in capsys.readouterr().err


def test_hidden_and_system_files_among_the_input_images_are_skipped(tmp_path, capsys):
  """The two rules at their boundary: reading --input skips every hidden name and system folder
  (image_io.is_ignored), a hidden .x.png too, while only a file browser's own files are no one's
  data when a folder is replaced (image_io.is_browser_file: .git is someone's)."""
  from vivano_jax import image_io  # pylint: disable=g-import-not-at-top
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'in'
  for name in ('a.png', '.x.png', '__MACOSX/b.png', '.git/c.png', 'sub/.d.png'):
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / name)
  for name in ('._a.png', 'Thumbs.db', 'desktop.ini', '.DS_Store'):
    (folder / name).write_bytes(b'not an image')
  assert predict.find_images(str(folder)) == [folder / 'a.png']
  assert predict.find_images(f'{folder}/**/*.png') == [folder / 'a.png']
  assert capsys.readouterr().err == ''  # Skipped without a word.
  for name in ('.DS_Store', '._a.png', 'Thumbs.db', 'desktop.ini'):
    assert image_io.is_ignored(name) and image_io.is_browser_file(name), name
  for name in ('.git', '.gitkeep', '.x.png', '.env', '__MACOSX'):
    assert image_io.is_ignored(name) and not image_io.is_browser_file(name), name


def test_predict_at_another_checkpoint_than_its_thresholds_is_refused(folder_run, tmp_path,
                                                                      capsys):
  """thresholds.json holds the threshold chosen for the scores of one checkpoint (step 10 here):
  predict --step=5 warned, then decided step 5's scores by it, a wrong answer. predict has no mode
  that scores without deciding, so it is refused."""
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  run, image, out = tmp_path / 'run', tmp_path / 'a.png', tmp_path / 'out'
  shutil.copytree(folder_run, run)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
  path = run / 'thresholds.json'
  argv = ['vivano', 'predict', f'--workdir={run}', f'--input={image}', f'--output={out}']
  assert cli.main([*argv, '--step=5']) == errors.EXIT_USAGE
  assert capsys.readouterr().err == (
      f'error: --step=5: {path} was chosen at checkpoint step 10 and decides the scores of that '
      f'checkpoint only; export step 5 first (vivano export --workdir={run} --step=5) or drop '
      '--step\n')
  assert not out.exists()
  # Exported at step 5 (vivano export --step=5): the latest checkpoint, step 10, is refused alike.
  path.write_text(json.dumps(json.loads(path.read_text()) | {'checkpoint_step': 5}))
  assert cli.main(argv) == errors.EXIT_DATA
  assert capsys.readouterr().err == (
      f'error: {path} was chosen at checkpoint step 5, but the latest checkpoint is step 10, whose '
      f'scores it does not decide; export step 10 (vivano export --workdir={run}) or give '
      '--step=5\n')
  assert not out.exists()
  assert cli.main([*argv, '--step=5']) == 0
  assert 'checkpoint step 5' in capsys.readouterr().out and (out / 'predictions.csv').is_file()


def test_predict_output_keeps_what_it_did_not_write(folder_run, tmp_path, capsys):
  """--output may be the folder holding --input (only predict's own maps/ and overlays/ there
  are not inputs); files of someone else's maps/ are never deleted; a rerun replaces exactly the
  files its predictions.csv lists."""
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  project = tmp_path / 'project'
  (project / 'shots').mkdir(parents=True)
  for name in ('a.png', 'b.png'):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(project / 'shots' / name)
  argv = ['vivano', 'predict', f'--workdir={folder_run}', f'--input={project / "shots"}',
          f'--output={project}']
  assert cli.main(argv) == 0, capsys.readouterr().err
  first = sorted(p.name for p in (project / 'maps').iterdir())
  assert len(first) == 2 and (project / 'predictions.csv').is_file()
  (project / 'shots' / 'b.png').unlink()
  assert cli.main(argv) == 0, capsys.readouterr().err  # Rerun: its earlier outputs go.
  assert len(list((project / 'maps').iterdir())) == 1
  (project / 'maps' / 'site_map.tif').write_text('the user\'s')
  assert cli.main(argv) == errors.EXIT_DATA
  err = capsys.readouterr().err
  assert 'with files an earlier vivano predict did not write' in err and 'site_map.tif' in err
  assert (project / 'maps' / 'site_map.tif').read_text() == "the user's"
  # A huge --batch_size is not padded beyond the images there are.
  out = tmp_path / 'o'
  assert cli.main(['vivano', 'predict', f'--workdir={folder_run}',
                   f'--input={project / "shots"}', f'--output={out}',
                   '--batch_size=100000000']) == 0, capsys.readouterr().err


def test_input_links_are_followed_or_named_never_skipped(tmp_path, monkeypatch, capsys):
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  elsewhere, folder = tmp_path / 'camera', tmp_path / 'in'
  elsewhere.mkdir()
  folder.mkdir()
  pixels = np.zeros((4, 4), np.uint8)
  Image.fromarray(pixels).save(elsewhere / 'b.png')
  Image.fromarray(pixels).save(folder / 'a.png')
  (folder / 'batch').symlink_to(elsewhere)  # A linked folder of images is scored.
  (folder / 'up').symlink_to('.')  # A loop: each folder once.
  assert predict.find_images(str(folder)) == [folder / 'a.png', folder / 'batch' / 'b.png']
  (folder / 'gone.png').symlink_to(tmp_path / 'deleted.png')
  (folder / 'loop.png').symlink_to(folder / 'loop.png')
  for spec in (str(folder), str(folder / '*.png')):
    with pytest.raises(errors.DataError) as e:
      predict.find_images(spec)
    message = str(e.value)
    assert f'{folder / "gone.png"}: broken symlink' in message, message
    assert f'{folder / "loop.png"}: broken symlink' in message, message
  for link in ('gone.png', 'loop.png'):
    (folder / link).unlink()
  (folder / 'locked').mkdir()  # chmod 000 (root reads it anyway): scanning it fails.
  (folder / 'notes.txt').write_text('x')
  scandir = os.scandir
  def no_permission(path='.'):
    if os.fspath(path).endswith('locked'):
      raise PermissionError(13, 'Permission denied', os.fspath(path))
    return scandir(path)
  monkeypatch.setattr(os, 'scandir', no_permission)
  with pytest.raises(errors.DataError, match=re.escape(f'{folder / "locked"}: unreadable folder')):
    predict.find_images(str(folder))
  assert capsys.readouterr().err == ''  # The error, not first a warning about notes.txt.


def test_an_input_name_that_is_not_utf8_is_named_readably(tmp_path):
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'ok.png')
  os.link(tmp_path / 'ok.png', os.fsencode(tmp_path) + b'/caf\xe9.png')  # A Latin-1 name.
  for spec in (tmp_path, os.fsdecode(os.fsencode(tmp_path) + b'/caf\xe9.png'), tmp_path / '*.png'):
    with pytest.raises(errors.DataError, match=re.escape(
        f'{tmp_path}/caf\ufffd.png: its name is not UTF-8 text')):  # Not a codec error.
      predict.find_images(str(spec))


def test_a_write_failing_midway_leaves_no_partial_predictions(tmp_path, monkeypatch):
  from vivano_jax import overlays  # pylint: disable=g-import-not-at-top
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  paths = [tmp_path / f'{name}.png' for name in 'abc']
  scores = np.array([0.1, 0.7, 0.2])
  result = {'thresholds': {'threshold': 0.5, 'pixel_display_range': [0.0, 1.0]},
            'components': {'recon': scores}, 'scores': scores, 'anomalous': scores >= 0.5,
            'images': [np.zeros((4, 5, 1), np.uint8)] * 3,
            'maps': [np.full((4, 5), v, np.float32) for v in scores]}
  out = tmp_path / 'out'
  predict.write_predictions(str(out), paths, result)  # An earlier, complete call.
  with open(out / 'predictions.csv', newline='') as f:
    assert [r['decision'] for r in csv.DictReader(f)] == ['normal', 'anomalous', 'normal']
  save = overlays.save_overlay
  def disk_full_at_the_second(path, *args):
    if '000001' in str(path):
      raise OSError(28, 'No space left on device', str(path))
    save(path, *args)
  monkeypatch.setattr(overlays, 'save_overlay', disk_full_at_the_second)
  with pytest.raises(OSError, match='No space left'):
    predict.write_predictions(str(out), paths, result, predict.previous_outputs(str(out)))
  assert list(out.iterdir()) == []  # Neither the earlier results (replaced) nor a part of these.


def test_an_image_scored_nan_is_named_not_decided_normal(tmp_path, monkeypatch, capsys):
  """score >= threshold is false for NaN: an image scored NaN (a damaged checkpoint) was printed
  and written as normal."""
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  inputs = tmp_path / 'in'
  inputs.mkdir()
  for name in 'ab':
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(inputs / f'{name}.png')
  scores = np.array([0.1, np.nan])

  def scored(workdir, paths, step, batch_size):
    del workdir, step, batch_size
    return {'thresholds': {'threshold': 0.5, 'pixel_display_range': [0.0, 1.0], 'chosen': 'q',
                           'rule': 'r'}, 'components': {}, 'scores': scores,
            'anomalous': scores >= 0.5, 'images': [np.zeros((4, 5, 1), np.uint8)] * 2,
            'maps': [np.zeros((4, 5), np.float32)] * 2, 'scored_by': 'checkpoint step 3'}

  monkeypatch.setattr(predict, 'predict', scored)
  out = tmp_path / 'out'
  code = cli.main(['vivano', 'predict', f'--workdir={tmp_path}', f'--input={inputs}',
                   f'--output={out}'])
  captured = capsys.readouterr()
  assert code == errors.EXIT_DATA and captured.out == '', captured.out
  assert captured.err == (f'error: 1 of 2 image(s) scored NaN or infinite (e.g. {inputs / "b.png"})'
                          ' by checkpoint step 3: its checkpoint or score statistics are damaged; '
                          'nothing is written\n')
  assert not out.exists()


def test_a_model_folder_given_as_workdir_and_a_run_as_model_are_named(tmp_path, capsys):
  """--workdir and --model mixed up: each said only that a file was missing."""
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  model, run = tmp_path / 'model', tmp_path / 'run'
  model.mkdir()
  run.mkdir()
  (model / 'model_card.json').write_text('{}')
  (run / 'config.json').write_text('{}')
  image = tmp_path / 'a.png'
  Image.fromarray(np.zeros((4, 5), np.uint8)).save(image)
  out = tmp_path / 'out'
  for flag, folder, message in (
      ('--workdir', model, f'--workdir={model}: a model folder written by vivano export-model, '
       f'not a trained run; give --model={model}'),
      ('--model', run, f'--model={run}: a trained run folder, not a model written by vivano '
       f'export-model; give --workdir={run}')):
    code = cli.main(['vivano', 'predict', f'{flag}={folder}', f'--input={image}',
                     f'--output={out}'])
    assert code == errors.EXIT_USAGE and capsys.readouterr().err == f'error: {message}\n'
  assert cli.main(['vivano', 'export', f'--workdir={model}']) == errors.EXIT_DATA
  assert 'it is a model written by vivano export-model (vivano predict --model takes it)' in (
      capsys.readouterr().err)
  assert not out.exists() and sorted(p.name for p in model.iterdir()) == ['model_card.json']


def test_a_file_browsers_droppings_in_an_earlier_output_are_left_alone(tmp_path):
  """Opening overlays/ in Finder or Explorer leaves .DS_Store or Thumbs.db there: the next call
  on that --output was refused as if it held someone else's files."""
  from vivano_jax import predict  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'out'
  for name in ('maps/000000_a.npy', 'maps/Thumbs.db', 'overlays/000000_a.png',
               'overlays/.DS_Store'):
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(b'x')
  assert predict.previous_outputs(str(out)) == [out / 'maps' / '000000_a.npy',
                                                out / 'overlays' / '000000_a.png']
  (out / 'overlays' / 'notes.txt').write_text('mine')
  with pytest.raises(errors.DataError, match=re.escape(f'(e.g. {out / "overlays" / "notes.txt"})')):
    predict.previous_outputs(str(out))


def test_an_exported_split_as_output_is_refused_and_keeps_its_overlays(tmp_path, capsys):
  """predict --output=RUN/export/test took the export's overlays (NNNNNN_<name>.png, the names
  predict gives its own) for an earlier call's and deleted them: the report then failed."""
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  split = run / 'export' / 'test'
  (split / 'overlays').mkdir(parents=True)
  (split / 'scores.csv').write_text('index\n')
  (split / 'overlays' / '000000_test_a.png').write_bytes(b'png')
  (run / 'config.json').write_text('{}')
  image = tmp_path / 'a.png'
  Image.fromarray(np.zeros((4, 5), np.uint8)).save(image)
  copy = tmp_path / 'copy'
  shutil.copytree(split, copy)
  for output, message in (
      (split, 'an exported split (it holds scores.csv), whose overlays predict would take for its '
       'own and delete; choose another folder'),
      (copy, 'an exported split (it holds scores.csv)'),
      (run / 'export' / 'new', "inside the run's export/, which holds exported overlays and is "
       'replaced as a whole by the next export; choose another folder')):
    code = cli.main(['vivano', 'predict', f'--workdir={run}', f'--input={image}',
                     f'--output={output}'])
    err = capsys.readouterr().err
    assert code == errors.EXIT_USAGE and err.startswith(f'error: --output={output}: ') and (
        message in err), err
  assert (split / 'overlays' / '000000_test_a.png').read_bytes() == b'png'
  assert (copy / 'overlays' / '000000_test_a.png').exists()
  assert sorted(p.name for p in (run / 'export').iterdir()) == ['test']
