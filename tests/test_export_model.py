"""Deploying a trained run (export_model.py, serving/): every exported format scores real images as
the JAX scorer does, the JAX scorer is the one `vivano predict` uses, the numpy resize is the
training pipeline's, an ONNX model scores without JAX or TensorFlow, and bad input is one clear
error naming the file.

The tiny run of test_export.py (`trained_folder_run`, trained once per session) is exported once
per format for the whole module; nothing is trained here.
"""

import csv
import itertools
import json
import re
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.test_export import trained_folder_run
from vivano_jax import cli
from vivano_jax import errors
from vivano_jax import export_model
from vivano_jax import input_pipeline
from vivano_jax import predict
from vivano_jax import scorer as scorer_lib
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax.datasets import image_files
from vivano_jax.datasets import textures
from vivano_jax.serving import from_checkpoint
from vivano_jax.serving import model_dir
from vivano_jax.serving import preprocess
from vivano_jax.serving import score_function

MAGNETIC_TILE = REPO.parent / 'shared' / 'data' / 'magnetic_tile'
FORMATS = model_dir.FORMATS
TOLERANCE = 1e-4  # Of the range of the scores and maps, as the issue asks.


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, tfds_dir):
  return trained_folder_run(tmp_path_factory, tfds_dir)


@pytest.fixture(scope='module')
def run(workdir):
  return from_checkpoint.load_run(str(workdir), None, sharding.make_mesh(jax.devices()[:1]))


@pytest.fixture(scope='module')
def scorer_fn(run):
  return score_function.build(run.config, run.state, run.stats)


@pytest.fixture(scope='module')
def exported(workdir, run, scorer_fn, tmp_path_factory):
  """{format: model folder} of the run, written in this process (CPU lowering only)."""
  root = tmp_path_factory.mktemp('models')
  for fmt in FORMATS:
    export_model.write_model(run, scorer_fn, fmt, str(root / fmt), str(workdir), ('cpu',))
  return {fmt: root / fmt for fmt in FORMATS}


def texture_images() -> list[np.ndarray]:
  """8 images: test tiles of the embedded textures dataset (normal and defective, uint8
  [128, 128, 1]) and a whole photograph, grayscale as stored."""
  tiles = []
  for texture in textures.TEXTURES:  # Normal, then defective tiles.
    examples = textures.generate_split(texture, 'test', seed=1000)
    tiles += [ex['image'] for _, ex in itertools.islice(examples, 0, 150, 60)]
  return tiles[:7] + [textures.load_photo('gravel')[..., None]]


def magnetic_tile_images() -> list[np.ndarray]:
  if not MAGNETIC_TILE.is_dir():
    pytest.skip(f'real data folder {MAGNETIC_TILE} is absent (only on the project\'s machines)')
  folders = ('crack', 'good', 'blowhole', 'fray')  # 8 photos of several sizes.
  paths = [sorted((MAGNETIC_TILE / 'test' / d).iterdir())[i] for d in folders for i in (0, 1)]
  return [image_files.read_image(p) for p in paths]


REAL_IMAGES = {'textures': texture_images, 'magnetic_tile': magnetic_tile_images}


def _relative(want: np.ndarray, got: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / max(np.ptp(want), 1e-12))


# --------------------------------------------------------------------------------------------------
# Agreement.


@pytest.mark.parametrize('source', sorted(REAL_IMAGES))
def test_every_format_scores_real_images_as_the_jax_scorer(exported, scorer_fn, source):
  images = preprocess.batch(REAL_IMAGES[source](), scorer_fn.image_size, scorer_fn.channels)
  want = scorer_fn(images)
  for fmt in FORMATS:
    model = model_dir.load(exported[fmt])
    got = model(images)  # export_model.verify ran it on batches of 4 and 1 too.
    assert list(got) == list(want) == list(model.output_names)
    for name in ('score', 'map'):
      assert got[name].shape == want[name].shape and got[name].dtype == np.float32
      assert _relative(want[name], got[name]) <= TOLERANCE, (fmt, name)
    for name in model.output_names[2:]:  # The components, for predictions.csv.
      assert _relative(want[name], got[name]) <= 10 * TOLERANCE, (fmt, name)
    np.testing.assert_array_equal(model.decide(got['score']), model.decide(want['score']))
    # The tiny run finds every real photo anomalous: a threshold between the middle scores too.
    middle = np.sort(want['score'])[len(images) // 2 - 1:len(images) // 2 + 1].mean()
    np.testing.assert_array_equal(got['score'] >= middle, want['score'] >= middle)


def test_the_jax_scorer_is_predicts_scorer(run, scorer_fn):
  # vivano predict --workdir scores float images through scorer.Scorer; the exported function
  # takes their uint8 values and normalises them inside.
  images = preprocess.batch(texture_images(), scorer_fn.image_size, scorer_fn.channels)
  scorer = scorer_lib.Scorer(run.config, sharding.make_mesh())
  scored = scorer.arrays(run.state, images.astype(np.float32) / 127.5 - 1.0)
  scores, maps = scorer.final(scored, run.stats)
  got = scorer_fn(images)
  assert _relative(scores, got['score']) <= 1e-5 and _relative(maps, got['map']) <= 1e-5
  for name, values in scored.image.items():
    assert _relative(values, got[name]) <= 1e-5, name


def test_an_nll_score_can_skip_the_decoder(run):
  config = run.config.copy_and_resolve_references()
  config.score.update(dict(image='nll_max', pixel='nll'))
  images = preprocess.batch(texture_images(), config.dataset.image_size, config.dataset.channels)
  full = score_function.build(config, run.state, None)(images)
  lean = score_function.build(config, run.state, None, all_components=False)
  assert lean.output_names == ('score', 'map', 'nll_max', 'nll_mean')
  for name, values in lean(images).items():
    assert _relative(full[name], values) <= 1e-5, name


def test_test_time_views_score_and_export_as_their_numpy_average(run, tmp_path):
  # score.tta='augment' with quarter turns only: the model's maps on the 4 turned images (numpy
  # here), turned back and averaged, then the run's scoring; the same through the exported function
  # and ONNX (turns are transposes and reversals there; the mirrored views are one reversal).
  config = run.config.copy_and_resolve_references()
  config.score.tta = 'augment'
  config.dataset.augment.update(dict(hflip=False, vflip=False, rot90=True))
  images = preprocess.batch(texture_images(), config.dataset.image_size, config.dataset.channels)
  as_float = images.astype(np.float32) / 127.5 - 1.0
  variables = {'params': run.state.params, 'batch_stats': run.state.batch_stats}
  apply = jax.jit(lambda x: run.state.apply_fn(variables, x, train=False))
  total = {}
  for turns in range(4):
    out = apply(np.ascontiguousarray(np.rot90(as_float, turns, axes=(1, 2))))
    for key in ('recon', 'nll', 'seg_logits'):
      total[key] = total.get(key, 0.0) + np.rot90(np.asarray(out[key]), -turns, axes=(1, 2)) / 4
  want = scoring.final_scores(*scoring.score_components(
      total, as_float, config.score.smoothing_sigma), config.score, run.stats)
  fn = score_function.build(config, run.state, run.stats)
  got = fn(images)
  assert _relative(np.asarray(want[0]), got['score']) <= 1e-5
  assert _relative(np.asarray(want[1]), got['map']) <= 1e-5
  plain = score_function.build(run.config, run.state, run.stats)(images)['map']
  assert _relative(plain, got['map']) > 1e-3  # The views changed the map.
  import onnxruntime  # pylint: disable=g-import-not-at-top
  from vivano_jax.serving import converters  # pylint: disable=g-import-not-at-top
  path = converters.convert(fn, 'onnx', tmp_path, ('cpu',))
  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  score, maps = session.run(['score', 'map'], {'images': images})
  assert _relative(got['score'], score) <= TOLERANCE and _relative(got['map'], maps) <= TOLERANCE


def test_standardised_scores_carry_their_statistics(run, tmp_path):
  # A combined, per-pixel standardised score (the 128 px recipe's) with test-time shifts when the
  # scorer has them: the statistics become constants of the exported function.
  config = run.config.copy_and_resolve_references()
  config.score.update(dict(image='map_max', pixel='combined', normalize='pixel',
                           combine=('recon', 'nll')))
  if 'shifts' in config.score:
    config.score.shifts = 2
  images = preprocess.batch(texture_images(), config.dataset.image_size, config.dataset.channels)
  scorer = scorer_lib.Scorer(config, sharding.make_mesh())
  as_float = images.astype(np.float32) / 127.5 - 1.0
  stats = scorer.arrays(run.state, as_float).stats()
  assert stats['map_recon'][0].shape == (32, 32)
  want_scores, want_maps = scorer.final(scorer.arrays(run.state, as_float), stats)
  fn = score_function.build(config, run.state, stats)
  jax_out = fn(images)
  assert _relative(want_scores, jax_out['score']) <= 1e-5
  assert _relative(want_maps, jax_out['map']) <= 1e-5
  with pytest.raises(ValueError, match='statistics'):
    score_function.build(config, run.state, None)
  import onnxruntime  # pylint: disable=g-import-not-at-top
  from vivano_jax.serving import converters  # pylint: disable=g-import-not-at-top
  path = converters.convert(fn, 'onnx', tmp_path, ('cpu',))
  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  score, maps = session.run(['score', 'map'], {'images': images})
  assert _relative(want_scores, score) <= TOLERANCE and _relative(want_maps, maps) <= TOLERANCE


def test_resize_is_the_training_pipelines(tiny_config):
  # Photos of other sizes, gray and RGB, through input_pipeline (TensorFlow) and through
  # preprocess (numpy), at 1 and 3 model channels.
  rng = np.random.default_rng(0)
  photo = textures.load_photo
  photos = [photo('brick')[:300, :200, None], photo('grass')[:20, :50, None],
            rng.integers(0, 256, (23, 37, 3), dtype=np.uint8), photo('gravel')[:32, :32, None]]
  for channels in (1, 3):
    tiny_config.dataset.channels = channels
    for photo in photos:
      data = input_pipeline.SplitData(
          images=np.array([image_files.encode_png(photo)], dtype=object),
          masks=np.array([image_files.encode_png(np.zeros((1, 1, 1), np.uint8))], dtype=object),
          labels=np.zeros(1, np.int32), defect_types=np.array(['good'], dtype=object),
          filenames=np.array(['x.png'], dtype=object), has_mask=np.zeros(1, bool),
          channels=photo.shape[-1])
      want = next(input_pipeline.eval_batches(data, tiny_config.dataset, 1))['image'][0]
      resized = preprocess.resize(preprocess.to_channels(photo, channels), 32)
      np.testing.assert_allclose(np.clip(resized / 127.5 - 1, -1, 1), want, atol=2e-6)
      exact = preprocess.model_input(photo, 32, channels, 'float32') / 127.5 - 1
      np.testing.assert_allclose(exact, want, atol=2e-6)
      rounded = preprocess.model_input(photo, 32, channels).astype(np.float32) / 127.5 - 1
      assert np.abs(rounded - want).max() <= 0.5 / 127.5 + 1e-6
      if photo.shape[:2] == (32, 32) and photo.shape[-1] == channels:
        np.testing.assert_array_equal(preprocess.model_input(photo, 32, channels), photo)


def test_a_float32_model_scores_as_predict_with_the_run(workdir, run, tmp_path):
  # Images of other sizes and channels, resized but not rounded: vivano predict --model then gives
  # the scores, maps, components and decisions of vivano predict --workdir.
  folder = tmp_path / 'in'
  folder.mkdir()
  images = texture_images()[:3] + [np.random.default_rng(0).integers(0, 256, (23, 37, 3), np.uint8)]
  if MAGNETIC_TILE.is_dir():
    images += magnetic_tile_images()[:3]
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f'{i}.png')
  paths = sorted(folder.iterdir())
  sf = score_function.build(run.config, run.state, run.stats, input_dtype='float32')
  export_model.write_model(run, sf, 'jax', str(tmp_path / 'model'), str(workdir), ('cpu',))
  got = predict.predict_with_model(model_dir.load(tmp_path / 'model'), paths)
  want = predict.predict(str(workdir), paths)
  assert _relative(want['scores'], got['scores']) <= TOLERANCE
  for name, values in want['components'].items():
    assert _relative(values, got['components'][name]) <= TOLERANCE, name
  for w, g in zip(want['maps'], got['maps']):
    assert w.shape == g.shape and _relative(w, g) <= TOLERANCE
  np.testing.assert_array_equal(want['anomalous'], got['anomalous'])


# --------------------------------------------------------------------------------------------------
# The commands.


def test_predict_with_an_onnx_model_needs_only_onnxruntime_numpy_pillow_and_absl(exported, workdir, tmp_path):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  for i, image in enumerate(texture_images()[:4]):
    Image.fromarray(image[..., 0]).save(inputs / f'tile{i}.png')
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (23, 37, 3), np.uint8)).save(
      inputs / 'rgb.jpg')
  out = tmp_path / 'out'
  code = ('import sys\nfrom vivano_jax import cli\n'
          f'code = cli.run_command("predict", ["vivano predict", "--model={exported["onnx"]}", '
          f'"--input={inputs}", "--output={out}", "--batch_size=2"])\n'
          'print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & '
          '{"jax", "jaxlib", "flax", "tensorflow", "orbax", "tensorflow_datasets", "sklearn", '
          '"scipy", "matplotlib", "ml_collections"}))\nsys.exit(code)')
  proc = subprocess.run([sys.executable, '-c', code], env=subprocess_env(), cwd=str(REPO),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'HEAVY []' in proc.stdout and 'onnx model' in proc.stdout
  with open(out / 'predictions.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  model = model_dir.load(exported['onnx'])
  paths = sorted(inputs.iterdir())
  decoded = [image_files.read_image(p) for p in paths]
  want = model(preprocess.batch(decoded, model.image_size, model.channels))
  assert [pathlib.Path(r['path']).name for r in rows] == [p.name for p in paths]
  assert list(rows[0])[7:11] == ['nll_max', 'nll_mean', 'recon', 'seg_max']  # No score reads ssim.
  for i, r in enumerate(rows):
    assert float(r['score']) == pytest.approx(want['score'][i], rel=1e-6)
    assert r['decision'] == ('anomalous' if want['score'][i] >= model.threshold else 'normal')
    amap = np.load(out / r['map'])
    assert amap.shape == decoded[i].shape[:2] and (out / r['overlay']).is_file()


def test_export_model_command(workdir, tmp_path, capsys):
  out = tmp_path / 'model'
  argv = ['vivano', 'export-model', f'--workdir={workdir}', '--format=jax', f'--output={out}',
          '--platforms=cpu']
  # thresholds.json was chosen at step 10: step 5's model was shipped with it, after a warning.
  assert cli.main([*argv, '--step=5']) == errors.EXIT_USAGE
  assert capsys.readouterr().err == (
      f'error: --step=5: {workdir / "thresholds.json"} was chosen at checkpoint step 10 and '
      'decides the scores of that checkpoint only; export step 5 first (vivano export '
      f'--workdir={workdir} --step=5) or drop --step\n')
  assert not out.exists()
  code = cli.main([*argv, '--step=10'])
  stdout, err = capsys.readouterr()
  assert code == 0, err
  assert 'checkpoint step 10' in stdout and f'vivano predict --model={out}' in stdout
  card = json.loads((out / 'model_card.json').read_text())
  metrics = json.loads((workdir / 'metrics.json').read_text())['metrics']
  assert card['format'] == 'jax' and card['checkpoint_step'] == 10 and card['platforms'] == ['cpu']
  assert (card['image_size'], card['channels']) == (32, 1) and card['test_metrics'] == metrics
  assert card['outputs'] == ['score', 'map', 'nll_max', 'nll_mean', 'recon', 'seg_max']
  assert card['versions']['jax'] == jax.__version__ and card['score']['image'] == 'recon'
  assert card['verification']['decisions_equal']
  assert json.loads((out / 'thresholds.json').read_text()) == json.loads(
      (workdir / 'thresholds.json').read_text())
  assert sorted(p.name for p in out.parent.iterdir()) == ['model']  # Nothing left beside it.


def _error(capsys, *args):
  code = cli.main(['vivano', *args])
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return code, lines[0]


def test_command_errors_are_one_line(workdir, tmp_path, capsys):
  code, line = _error(capsys, 'export-model', f'--workdir={workdir}', '--format=tflite',
                      f'--output={tmp_path / "m"}')
  assert code == errors.EXIT_USAGE and 'tflite' in line and 'onnx' in line
  bare = tmp_path / 'bare'  # A run folder whose checkpoints are gone.
  shutil.copytree(workdir, bare, ignore=shutil.ignore_patterns('checkpoints'))
  code, line = _error(capsys, 'export-model', f'--workdir={bare}', '--format=jax',
                      f'--output={tmp_path / "m"}')
  assert code == errors.EXIT_DATA and f'{bare / "checkpoints"}: no checkpoints' in line
  assert not (tmp_path / 'm').exists()
  precious = tmp_path / 'precious'
  precious.mkdir()
  (precious / 'notes.txt').write_text('keep me')
  code, line = _error(capsys, 'export-model', f'--workdir={workdir}', '--format=jax',
                      f'--output={precious}')
  assert code == errors.EXIT_USAGE and 'not an exported model' in line
  assert (precious / 'notes.txt').read_text() == 'keep me'
  code, line = _error(capsys, 'predict', f'--workdir={workdir}', f'--model={precious}',
                      f'--input={tmp_path}', f'--output={tmp_path / "o"}')
  assert code == errors.EXIT_USAGE and '--workdir' in line and '--model' in line
  code, line = _error(capsys, 'predict', f'--model={precious}', f'--input={tmp_path}',
                      f'--output={tmp_path / "o"}')
  assert code == errors.EXIT_DATA and str(precious / 'model_card.json') in line


@pytest.mark.parametrize('fmt', FORMATS)
def test_a_damaged_model_folder_names_the_file(exported, tmp_path, fmt):
  folder = tmp_path / fmt
  shutil.copytree(exported[fmt], folder)
  path = folder / model_dir.FILES[fmt]
  target = path / 'saved_model.pb' if path.is_dir() else path
  target.write_bytes(target.read_bytes()[:200])
  with pytest.raises(errors.DataError, match=f'{path}: not the model .* sha256 differs'):
    model_dir.load(folder)
  card = json.loads((folder / model_dir.MODEL_CARD).read_text())
  del card['model_sha256']  # A card without the fingerprint: the damage shows when it loads.
  (folder / model_dir.MODEL_CARD).write_text(json.dumps(card))
  with pytest.raises(errors.DataError, match=f'{path}: corrupt or unreadable {fmt} model'):
    model_dir.load(folder)
  shutil.rmtree(path) if path.is_dir() else path.unlink()
  with pytest.raises(errors.DataError, match=f'{path}: missing'):
    model_dir.load(folder)


def test_mismatched_or_missing_files_are_named(exported, tmp_path):
  folder = tmp_path / 'onnx'
  shutil.copytree(exported['onnx'], folder)
  model = model_dir.load(folder)
  with pytest.raises(errors.DataError, match=r'exported for uint8 images \[N, 32, 32, 1\]'):
    model(np.zeros((2, 64, 64, 1), np.uint8))
  with pytest.raises(errors.DataError, match=r'1 channel'):
    model(np.zeros((2, 32, 32, 3), np.uint8))
  card_path = folder / 'model_card.json'
  card = json.loads(card_path.read_text())
  card['channels'] = 3  # As if model.onnx came from another export.
  card_path.write_text(json.dumps(card))
  with pytest.raises(errors.DataError, match=f'{folder / "model.onnx"}: takes images'):
    model_dir.load(folder)
  card_path.write_text('{"format": "onnx", ')
  with pytest.raises(errors.DataError, match=f'{card_path}: unreadable or corrupt'):
    model_dir.load(folder)
  card_path.unlink()
  with pytest.raises(errors.DataError, match=f'{card_path}: missing'):
    model_dir.load(folder)
  shutil.copy(exported['onnx'] / 'model_card.json', card_path)
  (folder / 'thresholds.json').unlink()
  with pytest.raises(errors.DataError, match=f'{folder / "thresholds.json"}: missing'):
    model_dir.load(folder)
  with pytest.raises(errors.DataError, match='no such folder'):
    model_dir.load(tmp_path / 'nothing')
  # A threshold that is not a finite number would decide every image normal.
  shutil.copy(exported['onnx'] / 'thresholds.json', folder / 'thresholds.json')
  record = json.loads((folder / 'thresholds.json').read_text())
  for bad in (float('nan'), None, 'abc'):
    (folder / 'thresholds.json').write_text(json.dumps(record | {'threshold': bad}))
    with pytest.raises(errors.DataError, match=r'thresholds.json: corrupt \(threshold'):
      model_dir.load(folder)
  # The jax model names its outputs: a card listing them in another order scores by name, one
  # listing other names is refused.
  folder = tmp_path / 'jax'
  shutil.copytree(exported['jax'], folder)
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
  want = model_dir.load(folder)(images)
  card = json.loads((folder / 'model_card.json').read_text())
  swapped = [card['outputs'][-1]] + card['outputs'][1:-1] + [card['outputs'][0]]
  (folder / 'model_card.json').write_text(json.dumps(card | {'outputs': swapped}))
  got = model_dir.load(folder)(images)
  for name in card['outputs']:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  renamed = [o if o != 'recon' else 'x' for o in swapped]
  (folder / 'model_card.json').write_text(json.dumps(card | {'outputs': renamed}))
  with pytest.raises(errors.DataError, match=r'model.jax: its outputs are .* lists'):
    model_dir.load(folder)
  # Hand-edited cards and thresholds: one error naming the file and the field.
  record = json.loads((folder / 'thresholds.json').read_text())
  for file, field, value in (('model_card.json', 'card_version', '1'),
                             ('model_card.json', 'image_size', '32'),
                             ('model_card.json', 'batch_size', -4),
                             ('model_card.json', 'outputs', card['outputs'] + ['map']),
                             ('model_card.json', 'input', 'uint8'),
                             ('model_card.json', 'input', {'dtype': 'int7'}),
                             ('thresholds.json', 'pixel_display_range', 'x'),
                             ('thresholds.json', 'chosen', None)):
    original = card if file == 'model_card.json' else record
    (folder / file).write_text(json.dumps(original | {field: value}))
    with pytest.raises(errors.DataError, match=re.escape(f'{folder / file}: corrupt ({field} ')):
      model_dir.load(folder)
    (folder / file).write_text(json.dumps(original))


@pytest.mark.parametrize('fmt', FORMATS)
def test_a_card_naming_another_output_is_refused_by_every_format(exported, tmp_path, fmt):
  """A SavedModel whose card lists an output it lacks scored into None.numpy(): an
  AttributeError traceback (ONNX and JAX models named the mismatch already)."""
  folder = tmp_path / fmt
  shutil.copytree(exported[fmt], folder)
  card = json.loads((folder / model_dir.MODEL_CARD).read_text())
  card['outputs'] = [o if o != 'recon' else 'recon_error' for o in card['outputs']]
  (folder / model_dir.MODEL_CARD).write_text(json.dumps(card))
  with pytest.raises(errors.DataError, match=re.escape(str(folder / model_dir.FILES[fmt]))
                     + r": (its )?outputs .*'recon'.* lists \[.*'recon_error'"):
    model_dir.load(folder)


def test_a_folder_mixing_two_exports_is_refused(exported, workdir, tmp_path, capsys, monkeypatch):
  """A model file, card and thresholds.json of different exports would score with one run and
  decide with another's threshold: each mix is named, as is an output that would swallow the
  run, and a missing converter before anything is loaded."""
  folder = tmp_path / 'mixed'
  shutil.copytree(exported['onnx'], folder)
  record = json.loads((folder / 'thresholds.json').read_text())
  (folder / 'thresholds.json').write_text(json.dumps(record | {'score': 'nll_max'}))
  with pytest.raises(errors.DataError, match=r"thresholds.json: chosen for the image score "
                     r"'nll_max', but .*model_card.json scores with 'recon'"):
    model_dir.load(folder)
  (folder / 'thresholds.json').write_text(json.dumps(record | {'threshold': 0.5}))
  model_dir.load(folder)  # A moved threshold is the user's to set.
  model = folder / 'model.onnx'
  model.write_bytes(model.read_bytes() + b'\0')  # Another export's file, in effect.
  with pytest.raises(errors.DataError, match=r'model.onnx: not the model .* sha256 differs'):
    model_dir.load(folder)
  shutil.copy(exported['onnx'] / 'model.onnx', model)
  card = json.loads((folder / 'model_card.json').read_text())
  (folder / 'model_card.json').write_text(json.dumps(card | {'input': {'dtype': 'float32'}}))
  with pytest.raises(errors.DataError, match=r'model.onnx: takes uint8 images, but '
                     r'model_card.json says float32'):
    model_dir.load(folder)
  # An --output holding the run would be replaced with it.
  outer = tmp_path / 'outer'
  shutil.copytree(workdir, outer / 'run')
  code, line = _error(capsys, 'export-model', f'--workdir={outer / "run"}', '--format=jax',
                      f'--output={outer}')
  assert code == errors.EXIT_USAGE and 'holds the run folder' in line
  assert (outer / 'run' / 'checkpoints').is_dir()
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # As if not installed.
  code, line = _error(capsys, 'export-model', f'--workdir={workdir}', '--format=onnx',
                      f'--output={tmp_path / "m"}')
  assert code == errors.EXIT_USAGE and 'needs jax2onnx' in line and 'vivano_jax[export]' in line


def test_a_file_browsers_droppings_do_not_keep_a_model_folder_from_being_replaced(tmp_path):
  """A .DS_Store beside an earlier export (the folder opened in Finder) refused the next export
  to it; a hidden folder of someone's (.git) still does."""
  from vivano_jax import export_model  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'model'
  out.mkdir()
  for name in ('model.onnx', 'model_card.json', 'thresholds.json', '.DS_Store', '._model.onnx',
               'Thumbs.db'):
    (out / name).write_bytes(b'x')
  assert export_model.check_output(str(out), str(tmp_path / 'run')) == out
  for kind in ('folder', 'file'):  # A git worktree's .git is a file: as much someone's.
    (out / '.git').mkdir() if kind == 'folder' else (out / '.git').write_text('gitdir: /x\n')
    with pytest.raises(errors.UsageError, match=r'not an exported model alone \(it holds \.git\)'):
      export_model.check_output(str(out), str(tmp_path / 'run'))
    (out / '.git').rmdir() if kind == 'folder' else (out / '.git').unlink()
