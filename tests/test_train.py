"""Training: loss decreases, data parallelism is exact, NaN stops, checkpoints resume after SIGKILL."""

import functools
import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import data_parallel_run
from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.conftest import load_config
from vivano_jax import cli
from vivano_jax import input_pipeline
from vivano_jax import model as model_lib
from vivano_jax import checkpoints
from vivano_jax import config_checks
from vivano_jax import config_files
from vivano_jax import errors
from vivano_jax import scorer
from vivano_jax import sharding
from vivano_jax import train
from vivano_jax import train_step


def test_loss_decreases_on_tiny_problem(tiny_config):
  config = tiny_config
  mesh = sharding.make_mesh()
  data = input_pipeline.load(config, ('train',))['train']
  batches = input_pipeline.train_batches(data, config.dataset, config.train.batch_size, config.seed)
  state = train_step.create_train_state(config, model_lib.create_model(config), 80, mesh)
  step = train_step.make_train_step(config, mesh)
  recon = []
  for _ in range(80):
    state, m = step(state, sharding.global_batch(next(batches), mesh))
    recon.append(float(m.compute()['recon']))
    assert np.isfinite(float(m.loss.compute()))
  assert np.mean(recon[-10:]) < 0.5 * np.mean(recon[:5])


def test_initial_state_compiled_for_speed_has_the_default_compilers_bits():
  """create_train_state compiles on a CPU at a lower LLVM level: the same parameters and optimizer
  state, bit for bit, as XLA's default level (3)."""
  config = load_config('tiny')
  mesh = sharding.make_mesh()
  model = model_lib.create_model(config)
  fast = train_step.create_train_state(config, model, 10, mesh)
  default_options = dict(train_step.INIT_CPU_COMPILER_OPTIONS, xla_backend_optimization_level=3)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train_step, 'INIT_CPU_COMPILER_OPTIONS', default_options)
    reference = train_step.create_train_state(config, model, 10, mesh)
  leaves = jax.tree.leaves((fast.params, fast.batch_stats, fast.opt_state, fast.rng))
  ref_leaves = jax.tree.leaves((reference.params, reference.batch_stats, reference.opt_state,
                                reference.rng))
  assert len(leaves) == len(ref_leaves) > 20
  for a, b in zip(leaves, ref_leaves):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_eight_devices_equal_one_device(tiny_config, tmp_path):
  # Prepare the data once, here, so the subprocess only reads it.
  input_pipeline.load(tiny_config, ('train',))
  # 8 devices in a subprocess (the device count is fixed when JAX starts); 1 here, in this one.
  subprocess.run([sys.executable, str(REPO / 'tests' / 'data_parallel_run.py'),
                  str(tmp_path / 'dp8.npz'), tiny_config.dataset.data_dir],
                 env=subprocess_env(8), check=True, timeout=300)
  data_parallel_run.main(tmp_path / 'dp1.npz', tiny_config.dataset.data_dir)
  one, eight = dict(np.load(tmp_path / 'dp1.npz')), dict(np.load(tmp_path / 'dp8.npz'))
  assert int(one['num_devices']) == 1 and int(eight['num_devices']) == 8
  # The global batch of 8 cannot be split over 8 devices when it is 12: a clear error.
  assert 'train.batch_size=12' in str(eight['errors'][0]) and '(8)' in str(eight['errors'][0])
  np.testing.assert_allclose(one['losses'], eight['losses'], rtol=1e-5)
  keys = [k for k in one if k not in ('losses', 'num_devices', 'errors')]
  assert any(k.startswith('batch_stats') for k in keys)
  # atol: 1 % of one Adam step (lr 1e-3 after warmup). The attention key bias has an exactly zero
  # gradient (softmax is shift-invariant), so Adam turns its rounding noise into ~1e-6 updates.
  for k in keys:
    np.testing.assert_allclose(one[k], eight[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(tiny_config, tmp_path,
                                                                   monkeypatch):
  config = tiny_config
  # 10 steps, as most tiny runs of the suite: the schedule is part of the compiled train step, so
  # runs of one length share one program (XLA's persistent cache, tests/conftest.py).
  config.train.num_steps, config.train.checkpoint_every_steps = 10, 5
  real = train_step.make_train_step

  def poisoned(cfg, mesh):
    step_fn = real(cfg, mesh)

    def wrapped(state, batch):
      bad = int(state.step) + 1 == 7
      state, m = step_fn(state, batch)
      if bad:
        m = m.replace(loss=type(m.loss)(total=m.loss.total * np.nan, count=m.loss.count))
      return state, m
    return wrapped

  monkeypatch.setattr(train_step, 'make_train_step', poisoned)
  real_batches, closed = input_pipeline.train_batches, []

  def tracked(*args, **kwargs):  # The input pipeline, noting when it is stopped.
    try:
      yield from real_batches(*args, **kwargs)
    finally:
      closed.append(True)

  monkeypatch.setattr(input_pipeline, 'train_batches', tracked)
  with pytest.raises(FloatingPointError, match=r'at step 7; .* checkpoint \(step 5\) in '):
    try:
      train.train_and_evaluate(config, str(tmp_path))
    finally:  # Stopped when training stopped, while the error's frames still hold the pipeline
      assert closed == [True]  # (not left to garbage collection or the interpreter's exit).
  mngr = checkpoints.manager(str(tmp_path), config)
  assert mngr.all_steps() == [5]
  restored, meta = checkpoints.restore(mngr, config, sharding.make_mesh())
  assert meta['step'] == 5 and int(restored.step) == 5
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.params))


def _train_flags(workdir, tfds_dir, *overrides):
  return [f'--config={REPO / "configs" / "tiny.py"}', f'--workdir={workdir}',
          f'--config.dataset.data_dir={tfds_dir}', *overrides]


def _main(workdir, tfds_dir, *overrides, **kwargs):
  cmd = [sys.executable, '-m', 'vivano_jax.main', *_train_flags(workdir, tfds_dir, *overrides)]
  return subprocess.Popen(cmd, env=subprocess_env(), cwd=str(REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def _final_params(workdir, config):
  mngr = checkpoints.manager(str(workdir), config)
  restored, meta = checkpoints.restore(mngr, config, sharding.make_mesh())
  return restored, meta


def test_cli_run_and_resume_after_sigkill(tiny_config, tmp_path, capsys):
  """A run killed (SIGKILL) after a checkpoint resumes to the same final state as an uninterrupted run.

  The uninterrupted run doubles as the CLI smoke test: summary printed, outputs written, overrides
  used. (The export and report after training are run and checked by test_export.py's folder run.)
  """
  input_pipeline.load(tiny_config, ('train', 'test'))  # Prepare data once for the subprocesses.
  data_dir = tiny_config.dataset.data_dir
  steps = ['--config.train.num_steps=150', '--config.train.checkpoint_every_steps=50',
           '--config.train.log_every_steps=10', '--config.export.at_end=False',
           '--config.model.depth=2']
  full = tmp_path / 'full'  # Uninterrupted, in this process (as the console script calls main).
  code = cli.main(['vivano', 'train', *_train_flags(full, data_dir, *steps)])
  out, err = capsys.readouterr()
  assert code == 0, err[-3000:]
  assert 'image AUROC' in out and 'images/s' in out and str(full) in out
  saved = json.loads((full / 'config.json').read_text())
  assert saved['model']['depth'] == 2 and saved['train']['num_steps'] == 150
  metrics = json.loads((full / 'metrics.json').read_text())
  assert 0.0 <= metrics['metrics']['overall']['image_auroc'] <= 1.0
  assert metrics['metrics']['overall']['pixel_auroc'] is None  # digits have no pixel ground truth
  assert list(full.glob('events.out.tfevents.*'))
  assert not (full / 'export').exists()

  killed = tmp_path / 'killed'
  proc = _main(killed, data_dir, *steps)
  ckpt_dir = killed / 'checkpoints'
  deadline = time.time() + 300
  while time.time() < deadline:
    done = [p for p in ckpt_dir.glob('*') if p.name.isdigit()] if ckpt_dir.exists() else []
    if done:
      break
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  config = tiny_config
  config.model.depth = 2
  config.train.num_steps = 150
  _, meta = _final_params(killed, config)
  assert 0 < meta['step'] < 150, f'the run was not interrupted mid-way (step {meta["step"]})'
  assert not (killed / 'metrics.json').exists()

  # The resumed run in this process, as the uninterrupted one.
  code = cli.main(['vivano', 'train', *_train_flags(killed, data_dir, *steps)])
  assert code == 0, capsys.readouterr().err[-3000:]
  assert f'Resumed from checkpoint step {meta["step"]}' in (killed / 'vivano.log').read_text()
  a, meta_a = _final_params(full, config)
  b, meta_b = _final_params(killed, config)
  assert meta_a['step'] == meta_b['step'] == 150
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.opt_state)),
                  jax.tree.leaves((b.params, b.batch_stats, b.opt_state))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('field, value, match', [
    ('model.depth', -1, r'^model.depth must be a positive int, got -1$'),
    ('model.width', 0, r'^model.width must be a positive int, got 0$'),
    ('density.num_components', 0, r'^density.num_components must be a positive int, got 0$'),
    ('density.num_layers', -1, r'^density.num_layers must be an int >= 0, got -1$'),
    ('train.optimizer', 'sgd', r'^train.optimizer must be one of'),
    ('train.lr_scaling', 'cubic', r'^train.lr_scaling must be one of'),
    ('train.grad_accum_steps', 3, r'^train.batch_size=8 must be a positive multiple of 3'),
    ('train.num_steps', -5, r'^train.num_steps must be an int >= 0, got -5$'),
    ('train.num_steps', 0, r'^set train.num_steps or train.num_epochs to a positive number$'),
    ('dataset.image_size', 30, r'^dataset.image_size=30 must be a multiple of model.patch_size=8$'),
    ('dataset.image_size', 0, r'^dataset.image_size must be an int >= 1, got 0$'),
    ('dataset.channels', 2, r'^dataset.channels must be 1 \(gray\) or 3 \(RGB\), got 2$'),
    ('dataset.validation_fraction', 1.0,
     r'^dataset.validation_fraction must be a finite number >= 0 and < 1, got 1.0$'),
    ('train.learning_rate', -1.0, r'^train.learning_rate must be a finite number > 0, got -1.0$'),
    ('train.learning_rate', float('nan'), r'^train.learning_rate must be .*, got nan$'),
    ('train.weight_decay', float('inf'), r'^train.weight_decay must be .* >= 0, got inf$'),
    ('train.warmup_steps', -1, r'^train.warmup_steps must be an int >= 0, got -1$'),
    ('train.grad_clip_norm', -1.0, r'^train.grad_clip_norm must be a finite number >= 0'),
    ('train.log_every_steps', 0, r'^train.log_every_steps must be an int >= 1, got 0$'),
    ('train.checkpoint_every_steps', 0, r'^train.checkpoint_every_steps must be an int >= 1'),
    ('train.keep_checkpoints', 0, r'^train.keep_checkpoints must be an int >= 1, got 0$'),
    ('export.threshold_quantile', 1.5,
     r'^export.threshold_quantile must be a finite number >= 0 and <= 1, got 1.5$'),
    ('export.max_overlays', -5, r'^export.max_overlays must be an int >= -1, got -5$'),
    ('score.smoothing_sigma', -1.0, r'^score.smoothing_sigma must be a finite number >= 0'),
    ('loss.kl_weight', -0.25, r'^loss.kl_weight must be a finite number >= 0, got -0.25$'),
    ('loss.recon_weight', float('nan'), r'^loss.recon_weight must be .* >= 0, got nan$'),
    ('train.batch_size', 0, r'^train.batch_size must be an int >= 1, got 0$'),
    ('train.eval_batch_size', -8, r'^train.eval_batch_size must be an int >= 1, got -8$'),
    ('train.grad_accum_steps', 0, r'^train.grad_accum_steps must be an int >= 1, got 0$'),
    ('seed', -1, r'^seed must be an int >= 0, got -1$'),
    ('dataset.validation_seed', -2, r'^dataset.validation_seed must be an int >= 0, got -2$'),
    ('dataset.num_threads', -1, r'^dataset.num_threads must be an int >= 0, got -1$'),
    ('dataset.cache_max_mib', -1, r'^dataset.cache_max_mib must be a finite number >= 0'),
    ('train.schedule', 'linear', r"^train.schedule must be one of .*, got 'linear'$"),
    ('export.threshold', 'best', r"^export.threshold must be one of \('quantile', 'f1'\)"),
    ('export.splits', ('test', 'tests'), r'^export.splits must name distinct splits of'),
    ('export.splits', ('test', 'test'), r'^export.splits must name distinct splits of'),
    ('model.encoder', 'resnet', r"^model.encoder must be one of vit, cnn; got 'resnet'$"),
    ('model.decoder_norm', 'layer', r'^model.decoder_norm must be one of batch, none'),
    ('model.decoder_upsample', 'bilinear', r'^model.decoder_upsample must be one of subpixel'),
    ('density.condition', 'pos', r'^density.condition must be one of position, none'),
    ('density.target', 'pixels', r'^density.target must be one of latent, token'),
    ('density.min_scale', 0.0, r'^density.min_scale must be a finite number > 0, got 0.0$'),
    ('train.synthetic_area', ('a', 'b'), r"^train.synthetic_area must be .*got \('a', 'b'\)$"),
])
def test_bad_fields_are_refused_before_data_preparation(tmp_path, field, value, match):
  """Refused before any dataset is prepared or anything is written to the workdir."""
  config = load_config('tiny')
  config.dataset.data_dir = str(tmp_path / 'tfds')
  config_files.apply_overrides(config, {field: value})
  workdir = tmp_path / 'w'
  with pytest.raises(errors.UsageError, match=match):
    train.train_and_evaluate(config, str(workdir))
  assert not (tmp_path / 'tfds').exists() and not workdir.exists()


def test_gradient_accumulation_equals_one_big_batch(tiny_config):
  """Deterministic bottleneck, no BatchNorm: k microbatches give the same step as one batch."""
  config = tiny_config
  config.model.variational = False
  config.model.decoder_norm = 'none'
  mesh = sharding.make_mesh()
  x = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 1)).astype(np.float32)
  # One initial state for the three (the accumulation is the step's, not the state's).
  initial = train_step.create_train_state(config, model_lib.create_model(config), 10, mesh)
  finals = {}
  # k = 4 both as the rolled loop (accelerators) and unrolled (CPUs): see train_step.train_step.
  for k, unroll in ((1, None), (4, False), (4, True)):
    state = initial
    step = jax.jit(functools.partial(train_step.train_step, accum_steps=k, mesh=mesh,
                                     unroll=unroll,
                                     loss_weights=train_step.loss_weights(config)))
    for _ in range(2):
      state, m = step(state, sharding.global_batch({'image': x}, mesh))
    finals[k, unroll] = (state, m.compute())
  for key in ((4, False), (4, True)):
    for a, b in zip(jax.tree.leaves(finals[1, None][0].params),
                    jax.tree.leaves(finals[key][0].params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6, err_msg=key)
    np.testing.assert_allclose(finals[1, None][1]['loss'], finals[key][1]['loss'], rtol=1e-5)
  config.train.grad_accum_steps = 3
  with pytest.raises(ValueError, match='grad_accum_steps=3'):
    train_step.make_train_step(config, mesh)


def test_gradient_accumulation_with_batchnorm_and_sampling_runs(tiny_config):
  config = tiny_config
  config.train.grad_accum_steps = 2
  mesh = sharding.make_mesh()
  state = train_step.create_train_state(config, model_lib.create_model(config), 10, mesh)
  x = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 1)).astype(np.float32)
  before = jax.tree.map(np.asarray, state.batch_stats)
  state, m = train_step.make_train_step(config, mesh)(state, sharding.global_batch({'image': x}, mesh))
  assert np.isfinite(float(m.loss.compute()))
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before),
                                                   jax.tree.leaves(state.batch_stats))]
  assert all(changed)


def test_bfloat16_compute_keeps_float32_parameters(tiny_config):
  config = tiny_config
  config.train.compute_dtype = 'bfloat16'
  mesh = sharding.make_mesh()
  state = train_step.create_train_state(config, model_lib.create_model(config), 10, mesh)
  x = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 1)).astype(np.float32)
  state, m = train_step.make_train_step(config, mesh)(state, sharding.global_batch({'image': x}, mesh))
  assert np.isfinite(float(m.loss.compute()))
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(state.params))


def test_remat_gives_the_same_step(tiny_config):
  config = tiny_config
  mesh = sharding.make_mesh()
  x = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 1)).astype(np.float32)
  finals = []
  for remat in (False, True):
    config.model.remat = remat
    state = train_step.create_train_state(config, model_lib.create_model(config), 10, mesh)
    state, _ = train_step.make_train_step(config, mesh)(state, sharding.global_batch({'image': x}, mesh))
    finals.append(state.params)
  for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_tensorboard_most_anomalous_follow_the_configured_image_score():
  # The first component ranks image 0 highest; the final (configured) score ranks image 2 highest.
  masks = np.stack([np.full((4, 4), i, np.float32) for i in range(3)])
  scored = scorer.ScoredSplit(
      image={'nll_max': np.array([9.0, 1.0, 0.0]), 'recon': np.array([0.1, 0.2, 0.3])}, pixel={},
      moments={}, mask=masks)
  maps = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
  images = train.tensorboard_images(scored, np.array([0.1, 0.2, 0.3]), maps, n=2)
  top = images['mask_top'][..., 0]
  np.testing.assert_array_equal(top[:, 0, 0], [2.0, 1.0])


def test_synthetic_anomalies_and_score_selection_end_to_end(tiny_config, tmp_path):
  from vivano_jax import export  # pylint: disable=g-import-not-at-top
  from vivano_jax import score_selection  # pylint: disable=g-import-not-at-top
  config = tiny_config
  config.train.num_steps = 6
  config.train.synthetic_anomalies = 0.5
  config.train.grad_accum_steps = 2
  config.dataset.validation_fraction = 0.3
  config.score.select = 'synthetic'
  summary = train.train_and_evaluate(config, str(tmp_path))
  record = json.loads((tmp_path / score_selection.FILENAME).read_text())
  assert list(record['image_auroc']) == list(config.score.image_candidates)
  assert list(record['au_pro']) == list(config.score.pixel_candidates)
  assert record['image'] == score_selection.choose(record['image_auroc'])
  assert record['pixel'] == score_selection.choose(record['au_pro'])
  image = config_checks.parse_image_candidate(record['image'])
  pixel = config_checks.parse_pixel_candidate(record['pixel'])
  assert {k: summary['score'][k] for k in ('image', 'pixel', 'normalize')} == {
      'image': image['image'], 'pixel': pixel['pixel'], 'normalize': pixel['normalize']}
  exported = export.export_run(config, str(tmp_path))
  assert exported['thresholds']['score'] == image['image']
  assert json.loads((tmp_path / score_selection.FILENAME).read_text()) == record  # Reused.
  # A hand-edited choice outside the candidates it lists is named, not used or a KeyError.
  for damaged in ({k: v for k, v in record.items() if k != 'pixel'}, record | {'image': 'x'}):
    (tmp_path / score_selection.FILENAME).write_text(json.dumps(damaged))
    with pytest.raises(errors.DataError, match='score_selection.json: corrupt'):
      score_selection.resolve(config, str(tmp_path))


@pytest.mark.parametrize('fields,error,match', [
    ({'export.splits': ('test', 'validation')}, errors.UsageError,
     r"names 'validation', but dataset 'digits/0' has no validation split"),
    ({'score.select': 'synthetic', 'dataset.validation_fraction': 0.02}, errors.DataError,
     r'score.select: 3 held-out normal images; at least 4 are needed'),
])
def test_what_would_fail_after_training_is_refused_before_it(tiny_config, tmp_path, fields, error,
                                                             match):
  """An export split the dataset lacks, or too few held-out normals to choose the score on, was
  found only after the whole run had trained."""
  for name, value in fields.items():
    section, field = name.split('.')
    tiny_config[section][field] = value
  run = tmp_path / 'run'
  with pytest.raises(error, match=match):
    train.train_and_evaluate(tiny_config, str(run))
  assert not run.exists()  # Nothing trained, nothing written.


def test_images_smaller_than_a_patch_are_warned_of_once_when_training(tiny_config, tmp_path,
                                                                      capsys):
  """A folder of tiny photos (5 x 6 px at patch 8, upscaled to 32 px) was trained on without a
  word, while predict warns of each such image: one line naming how many, the smallest and the
  folders; again on a rerun that reads the prepared dataset."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sizes = {'train/good': [(5, 6), (7, 30), (40, 40), (36, 44), (40, 38), (38, 40)],
           'test/good': [(40, 40), (34, 36)], 'test/crack': [(6, 9), (40, 40)]}
  for folder, shapes in sizes.items():
    (tmp_path / 'parts' / folder).mkdir(parents=True)
    for i, shape in enumerate(shapes):
      Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(
          tmp_path / 'parts' / folder / f'{i:03d}.png')
  tiny_config.dataset.update(dict(name='folder', manual_dir=str(tmp_path / 'parts')))
  # Refused after the data is prepared (no validation split to export), before any training.
  tiny_config.export.splits = ('test', 'validation')
  for _ in range(2):
    with pytest.raises(errors.UsageError, match='no validation split'):
      train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
    warnings = [l for l in capsys.readouterr().err.splitlines() if 'patch' in l]
    assert warnings == [
        f'warning: 3 of 10 images of dataset folder are smaller than one 8 px patch at the model '
        f'size images are upscaled to (32 px), the smallest 5 x 6 px '
        f'({tmp_path / "parts" / "train" / "good" / "000.png"}), in '
        f'{tmp_path / "parts" / "test" / "crack"}, {tmp_path / "parts" / "train" / "good"}: '
        'the model learns little from them, and their scores say little'], warnings
