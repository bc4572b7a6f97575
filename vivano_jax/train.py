"""The training loop of ViV-Ano and its evaluation on the test split.

`train_and_evaluate` trains data-parallel over every device (train_step.py), resuming from the
latest checkpoint in the workdir (checkpoints.py), then scores the test split (scorer.py) and
writes metrics.json, TensorBoard scalars and images. A run is reproducible from its config alone:
it is saved as WORKDIR/config.json.
"""

import os
import sys
import time
from typing import Any, Iterator

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from vivano_jax import atomic_files
from vivano_jax import checkpoints
from vivano_jax import config_checks
from vivano_jax import console
from vivano_jax import datasets
from vivano_jax import errors
from vivano_jax import image_io
from vivano_jax import input_pipeline
from vivano_jax import model as model_lib
from vivano_jax import score_selection
from vivano_jax import scorer as scorer_lib
from vivano_jax import score_stats
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import synthetic
from vivano_jax import train_step
from vivano_jax import workdir as workdir_lib

def total_train_steps(config: ml_collections.ConfigDict, num_train_global: int) -> int:
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  if config.train.num_epochs <= 0:
    raise errors.UsageError('set train.num_steps or train.num_epochs to a positive number')
  return int(config.train.num_epochs * -(-num_train_global // config.train.batch_size))


def _close(batches: Iterator[Any]) -> None:
  """Stops an input pipeline now: a batch tf.data is still making when training stops (an error,
  Ctrl-C) would otherwise call back into Python at interpreter exit, and hang it."""
  close = getattr(batches, 'close', None)
  if close is not None:
    close()


def synthetic_batches(batches: Iterator[dict[str, np.ndarray]], config: ml_collections.ConfigDict,
                      start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """Local batches with synthetic anomalies drawn on a `train.synthetic_anomalies` fraction of the
  inputs ({'image', 'target', 'patch_weights', 'mask'}; synthetic.py). Seeded by (seed, step,
  process), so a resumed run draws the same anomalies."""
  p, (kinds, area, shapes) = config_checks.synthetic_fields(config)
  try:
    for step, batch in enumerate(batches, start=start_step):
      rng = np.random.default_rng([config.seed, step, jax.process_index(), 1])
      inputs, masks = synthetic.corrupt_batch(batch['image'], p, rng, kinds, area, shapes)
      yield {'image': inputs, 'target': batch['image'],
             'patch_weights': synthetic.patch_weights(masks, config.model.patch_size),
             'mask': masks.astype(np.float32)}
  finally:
    _close(batches)  # Closing these batches stops the input pipeline too.


def _write_hparams(writer, config: ml_collections.ConfigDict) -> None:
  d = config.to_dict()
  writer.write_hparams({k: v for k, v in d.items() if not isinstance(v, dict)} | {
      f'{sec}.{k}': v for sec, section in d.items() if isinstance(section, dict)
      for k, v in section.items() if isinstance(v, (int, float, str, bool))})


def _check_finite(step: int, metrics, workdir: str, mngr) -> float:
  """The step's loss; an error if it is not finite, saying what is kept."""
  loss = float(metrics.loss.compute())
  if not np.isfinite(loss):
    mngr.wait_until_finished()
    kept = mngr.latest_step()
    kept = (f'The last good checkpoint (step {kept}) in {workdir}/checkpoints is intact.'
            if kept is not None else 'No checkpoint was saved before it.')
    raise FloatingPointError(f'non-finite training loss ({loss}) at step {step}; training stopped '
                             f'(lower train.learning_rate?). {kept}')
  return loss


def _train(config, workdir, state, mngr, batches, start_step, total_steps, mesh, writer):
  """Steps start_step + 1 .. total_steps; returns the final state and the train images/s."""
  step_fn = train_step.make_train_step(config, mesh)
  hooks = ([periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)]
           if jax.process_index() == 0 else [])
  meta = lambda step: {'step': step, 'data_position': step * config.train.batch_size}
  train_metrics, pending, timing_start, timed_steps = None, None, None, 0
  progress = console.Progress(total_steps, start_step, config.train.batch_size)
  try:
    for step in range(start_step + 1, total_steps + 1):
      state, m = step_fn(state, sharding.global_batch(next(batches), mesh))
      # Check the previous step's loss while this one runs, so the host does not stall the device.
      if pending is not None:
        progress.update(step - 1, _check_finite(*pending, workdir, mngr))
      pending = (step, m)
      train_metrics = m if train_metrics is None else train_metrics.merge(m)
      for h in hooks:
        h(step)
      if step == start_step + 1:
        jax.block_until_ready(state)
        timing_start = time.perf_counter()
      else:
        timed_steps += 1
      if step % config.train.log_every_steps == 0 or step == total_steps:
        progress.update(step, _check_finite(*pending, workdir, mngr))
        writer.write_scalars(step, {f'train/{k}': float(v)
                                    for k, v in train_metrics.compute().items()})
        train_metrics = None
      if step % config.train.checkpoint_every_steps == 0 or step == total_steps:
        _check_finite(*pending, workdir, mngr)
        checkpoints.save(mngr, state, meta(step))
  finally:
    progress.close()
    _close(batches)
    mngr.wait_until_finished()  # Commit the last good checkpoint even when training stops.
  jax.block_until_ready(state)
  train_ips = (timed_steps * config.train.batch_size / (time.perf_counter() - timing_start)
               if timed_steps else None)
  if total_steps > start_step and mngr.latest_step() != total_steps:
    checkpoints.save(mngr, state, meta(total_steps))
  mngr.wait_until_finished()
  return state, train_ips


def _checked_model(config: ml_collections.ConfigDict, mesh: Mesh):
  """The model, once every field a run would otherwise trip over late (after preparing its data)
  is checked (config_checks.check_all) and the batch sizes against the devices."""
  config_checks.check_all(config)
  sharding.check_batch_size(config.train.batch_size, 'train.batch_size', mesh,
                            config.train.grad_accum_steps)
  sharding.check_batch_size(config.train.eval_batch_size, 'train.eval_batch_size', mesh)
  return model_lib.create_model(config)


def _start(config, workdir, model, mngr, latest, total_steps, mesh):
  """(train state, its step, the metric writer): the latest checkpoint restored, or a new state.
  The checkpoint is restored before config.json is written: a run whose config.json is gone is
  not given this config's unless its checkpoints restore with it."""
  start_step = 0
  if latest is not None:
    state, meta = checkpoints.restore(mngr, config, mesh, total_steps=total_steps, fall_back=True)
    start_step = int(meta['step'])
  workdir_lib.save_config(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  if latest is not None:
    logging.info('Resumed from checkpoint step %d in %s', start_step, workdir)
  else:
    state = train_step.create_train_state(config, model, total_steps, mesh)
    _write_hparams(writer, config)
  return state, start_step, writer


def _warn_small_images(config: ml_collections.ConfigDict,
                       data: dict[str, input_pipeline.SplitData]) -> None:
  """One warning line for the dataset's images smaller than one patch, as predict warns of each
  it is given (image_io.smaller_than_patch): how many, the smallest, and their folders. Only for
  a user's images (datasets.USER_IMAGES): the catalog's small digits are upscaled by design."""
  if config.dataset.name.split('/')[0] not in datasets.USER_IMAGES:
    return
  splits = list(data.values())
  names = np.concatenate([d.filenames for d in splits])
  sizes = sharding.gather_rows(np.concatenate([d.sizes() for d in splits]))  # Ours come first.
  patch = config.model.patch_size
  small = [i for i, size in enumerate(sizes) if image_io.smaller_than_patch(tuple(size), patch)]
  if not small or jax.process_index() != 0:
    return
  root = str(config.dataset.get('manual_dir') or '')
  path = lambda name: (os.path.join(root, name) if root and os.path.exists(
      os.path.join(root, name)) else name)
  first = min(small, key=lambda i: (min(sizes[i]), int(sizes[i].prod())))
  folders = sorted({os.path.dirname(path(names[i])) for i in small if i < len(names)} - {''})
  example = f' ({path(names[first])})' if first < len(names) else ''
  where = f', in {", ".join(folders[:3])}{" ..." * (len(folders) > 3)}' if folders else ''
  print(f'warning: {len(small)} of {len(sizes)} images of dataset {config.dataset.name} are '
        f'{image_io.too_small(patch, config.dataset.image_size)}, the smallest {sizes[first][0]} '
        f'x {sizes[first][1]} px{example}{where}: the model learns little from them, and their '
        'scores say little', file=sys.stderr)


def _check_before_training(config: ml_collections.ConfigDict,
                           data: dict[str, input_pipeline.SplitData]) -> None:
  """Refuses, before anything is trained or written, what would otherwise fail after training: an
  export of a split the dataset lacks, too few held-out normals to choose the score on."""
  if (config.export.at_end and 'validation' in config.export.splits
      and input_pipeline.heldout_split(config) != 'validation'):
    raise errors.UsageError(
        f"export.splits={tuple(config.export.splits)!r} names 'validation', but dataset "
        f'{config.dataset.name!r} has no validation split: set dataset.validation_fraction to '
        "carve one, or leave 'validation' out of export.splits")
  if config.score.select != 'none':
    score_selection.check_enough_normals(
        int(sharding.sum_over_processes(len(scorer_lib.heldout_normals(data, config)))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       return_evaluation: bool = False):
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates on the test split.

  Returns a summary dict: metrics per defect type, throughput, paths; with `return_evaluation`,
  (summary, the test split's `scorer.Evaluation`), which an export of the same checkpoint reuses.
  """
  datasets.resolve_config(config)  # E.g. the MVTec AD category in dataset.manual_dir.
  mesh = sharding.make_mesh()
  model = _checked_model(config, mesh)
  workdir_lib.check_compatible(config, workdir)  # Before anything is written.
  with console.stage(f'prepare data ({config.dataset.name})'):
    data = input_pipeline.load(config, tuple(dict.fromkeys(
        ('train', input_pipeline.heldout_split(config), 'test'))))
  _warn_small_images(config, data)
  _check_before_training(config, data)
  total_steps = total_train_steps(config, int(sharding.sum_over_processes(len(data['train']))))
  mngr = checkpoints.manager(workdir, config)
  latest = mngr.latest_step()
  if latest is not None and latest > total_steps:
    raise errors.UsageError(
        f'{workdir} holds a checkpoint at step {latest}, beyond train.num_steps={total_steps}: '
        f'rerun with train.num_steps={latest} (or more) to evaluate it, or use a new --workdir')
  state, start_step, writer = _start(config, workdir, model, mngr, latest, total_steps, mesh)
  batches = input_pipeline.train_batches(data['train'], config.dataset,
                                         config.train.batch_size // jax.process_count(),
                                         config.seed, start_step)
  if config.train.synthetic_anomalies > 0:
    batches = synthetic_batches(batches, config, start_step)
  logging.info('Training %d steps (from %d), global batch %d on %d devices', total_steps, start_step,
               config.train.batch_size, mesh.devices.size)
  devices = f'{mesh.devices.size} device' + 's' * (mesh.devices.size > 1)
  with console.stage(f'train ({total_steps - start_step} steps of batch '
                     f'{config.train.batch_size} on {devices})'):
    state, train_ips = _train(config, workdir, state, mngr, batches, start_step, total_steps,
                              mesh, writer)

  with console.stage('evaluate (test split)'):
    # With `score.select`, the score is chosen on held-out normals and synthetic anomalies first.
    config, selection = score_selection.resolve(
        config, workdir, state, scorer_lib.heldout_normals(data, config), mesh)
    summary, evaluation = evaluate_run(state, data, config, mesh, writer, total_steps)
  summary['score'] = _score_record(config)
  if train_ips is None:  # Nothing trained now: keep the figure of the run that trained.
    train_ips = workdir_lib.previous_metric(workdir, 'train_images_per_sec')
  summary.update(score_selection=selection, train_images_per_sec=train_ips,
                 checkpoint_step=total_steps, workdir=os.path.abspath(workdir))
  if jax.process_index() == 0:
    atomic_files.write_json(os.path.join(workdir, workdir_lib.METRICS_JSON), summary)
  writer.flush()
  mngr.close()
  return (summary, evaluation) if return_evaluation else summary


def _score_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The score a run's metrics were measured with, as metrics.json records it."""
  record = {k: config.score[k] for k in ('image', 'pixel', 'normalize')}
  if config.score.image in scoring.MAP_SCORES:
    record['image_map'] = scoring.image_map_kind(config.score)
  if config.score.image == scoring.ENSEMBLE:
    record['ensemble'] = list(config.score.ensemble)
  return record


def evaluate_run(state: train_step.TrainState, data: dict[str, input_pipeline.SplitData],
                 config: ml_collections.ConfigDict, mesh: Mesh, writer, step: int
                 ) -> tuple[dict[str, Any], scorer_lib.Evaluation]:
  """Scores the test split (and the held-out normals first when the scores need their
  statistics): (the summary's entries, the split's evaluation)."""
  scorer = scorer_lib.Scorer(config, mesh)
  stats = scorer.statistics(state, scorer_lib.heldout_normals(data, config))
  n_tb = config.train.num_tensorboard_images
  # Reconstructions are always shown in TensorBoard, so decode the test split.
  scored = scorer.split(state, data['test'], decode=True, keep_recon=n_tb).gathered()
  whole = input_pipeline.whole_split(config, 'test', data['test'])
  result = scorer.evaluate(scored, whole, stats)
  if result.metrics is None:
    kind = 'normal' if (whole.labels == 0).all() else 'anomalous'
    print(f'warning: the test split of {config.dataset.name} holds only {kind} images: no '
          'metrics (they need both); scores and maps are still evaluated and exported',
          file=sys.stderr)
  else:
    writer.write_scalars(step, {f'test/{k}': v for k, v in result.metrics['overall'].items()
                                if v is not None})
  writer.write_images(step, tensorboard_images(scored, result.scores, result.maps, n_tb))
  return {'metrics': result.metrics, 'score_images_per_sec': scored.images_per_sec,
          'score_stats': score_stats.scalar_stats(stats), 'num_test_images': int(len(whole))}, result


def _normalise(x: np.ndarray) -> np.ndarray:
  lo, hi = np.percentile(x, 1), np.percentile(x, 99)
  return np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def tensorboard_images(scored: scorer_lib.ScoredSplit, image_scores: np.ndarray,
                       pixel_maps: np.ndarray, n: int) -> dict[str, np.ndarray]:
  """Inputs, reconstructions, anomaly maps and masks as [n, S, S, 1 or 3] images in [0, 1]; the maps
  and masks of the n images with the highest final image scores [N] (`score.image`)."""
  order = np.argsort(-np.asarray(image_scores), kind='stable')  # Most anomalous first.
  images = {}
  if scored.inputs is not None:
    k = min(n, len(scored.inputs))
    images['input'] = (scored.inputs[:k] + 1.0) / 2.0
    images['reconstruction'] = (scored.recons[:k] + 1.0) / 2.0
  top = order[:n]
  images['anomaly_map_top'] = _normalise(pixel_maps)[top][..., None]
  images['mask_top'] = scored.mask[top][..., None].astype(np.float32)
  return images
