"""Export of a trained run for offline evaluation: scores, anomaly maps, masks, thresholds, report.

One code path for the end of training (`main --mode=train` with `export.at_end`) and for
`main --mode=export` (a checkpoint, no training):

1. restore the checkpoint (latest or a given step);
2. score the training normals when the score needs their statistics ('combined'), as training's
   evaluation does, and the held-out normals (thresholds.py says which) to choose the thresholds;
3. score each split of `export.splits` exactly as training's evaluation does (`train.score_split`,
   `train.evaluate_scores`) and write WORKDIR/export/<split>/ in the format of evaluate.py,
   atomically: maps float32 at the masks' native size, so that the offline evaluation reproduces
   the in-training metrics exactly (float16 would save half the space but change the metrics);
4. write WORKDIR/thresholds.json (last, so a failed export leaves the previous one) and the HTML
   report (report.py) from the exported test split.

With several processes every process scores its shard, rows are gathered in split order, and
process 0 writes.
"""

import csv
import io
import json
import os
import pathlib
import re
import time
from typing import Any, Optional

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
from PIL import Image

from vivano_jax import atomic_files
from vivano_jax import evaluate
from vivano_jax import input_pipeline
from vivano_jax import model as model_lib
from vivano_jax import report
from vivano_jax import score_selection
from vivano_jax import scoring
from vivano_jax import thresholds as thresholds_lib
from vivano_jax import train

EXPORT_DIR = 'export'
FORMAT_VERSION = 1

# train's atomic, numpy-aware JSON writer and its multi-process row gathering, reused as they are.


def restore_state(config: ml_collections.ConfigDict, workdir: str, step: Optional[int], mesh: Mesh
                  ) -> tuple[train.TrainState, int]:
  """The run's checkpoint at `step` (default the latest) and its step; a clear error if absent."""
  ckpt_dir = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(ckpt_dir):
    raise ValueError(f'{ckpt_dir}: no checkpoints; is {workdir} a trained run?')
  mngr = train.checkpoint_manager(workdir, config)
  steps = mngr.all_steps()
  if not steps:
    raise ValueError(f'{ckpt_dir}: no finished checkpoint')
  if step is not None and step not in steps:
    raise ValueError(f'{ckpt_dir}: no checkpoint for step {step}; there are {sorted(steps)}')
  # Shapes only (no init compiled); the schedule length changes no shape, only restored values.
  abstract = jax.eval_shape(
      lambda: train.create_train_state(config, model_lib.create_model(config), 1, mesh))
  replicated = NamedSharding(mesh, P())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          abstract)
  state, meta = train.restore_checkpoint(mngr, abstract, step)
  mngr.close()
  return state, int(meta['step'])


def safe_stem(filename: str) -> str:
  """A file-name-safe form of a dataset file name without its extension ('test/a b.png' ->
  'test_a_b')."""
  stem = os.path.splitext(str(filename))[0]
  return re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('._')[:80] or 'image'


def _whole_split(config, split: str, local: input_pipeline.SplitData) -> input_pipeline.SplitData:
  """The whole split (rows gathered from all processes are in this order)."""
  if jax.process_count() == 1:
    return local
  return input_pipeline.load(config, (split,), process_index=0, process_count=1)[split]


def _gather_image(scored: dict[str, Any]) -> dict[str, np.ndarray]:
  if jax.process_count() == 1:
    return scored['image']
  return {k: train.gather_rows(v) for k, v in scored['image'].items()}


def choose_thresholds(state, data: dict[str, input_pipeline.SplitData], heldout: str,
                      config: ml_collections.ConfigDict, mesh: Mesh,
                      stats: Optional[scoring.ScoreStats]) -> dict[str, Any]:
  """thresholds.choose on the held-out split, plus the heatmaps' display range (pixel scores).

  The display range is the (1 %, 99.9 %) quantiles of the pixel scores of the first
  `export.display_images` held-out normals.
  """
  note = None
  if heldout == 'validation' and not (
      _whole_split(config, heldout, data[heldout]).labels == 0).any():
    note = 'the validation split has no normal image; thresholds from the training normals'
    logging.warning('%s', note)
    heldout = 'train'
  from_maps = config.score.image in scoring.MAP_SCORES
  scored = train.score_split(state, data[heldout], config, mesh, decode=True, keep_maps=from_maps)
  whole = _whole_split(config, heldout, data[heldout])
  if from_maps:
    if jax.process_count() > 1:
      scored = train.gather_scored(scored)
    scores = np.asarray(scoring.final_scores(scored['image'], scored['pixel'], config.score,
                                             stats)[0])
  else:
    scores = np.asarray(scoring.image_scores(_gather_image(scored), config.score, stats))
  normal = whole.labels == 0
  if not normal.any():
    raise ValueError(f'the {heldout} split has no normal image to choose a threshold on')
  # Only validation labels may pick an F1 threshold: training images are all normal.
  labelled = heldout == 'validation'
  record = thresholds_lib.choose(
      scores[normal], heldout, config.export.threshold_quantile, config.export.threshold,
      val_scores=scores if labelled else None, val_labels=whole.labels if labelled else None)
  record['score'] = config.score.image
  if note:
    record['source_note'] = note

  # The first normals of the whole split, whichever processes hold them.
  shown_names = whole.filenames[np.flatnonzero(normal)[:max(config.export.display_images, 1)]]
  local = data[heldout]
  keep = np.flatnonzero(np.isin(local.filenames, shown_names))
  shown = train.score_split(state, local.subset(keep), config, mesh, decode=True)
  if jax.process_count() > 1:
    shown = train.gather_scored(shown)
  _, pix = scoring.final_scores(shown['image'], shown['pixel'], config.score, stats)
  lo, hi = np.quantile(np.asarray(pix, np.float64), [0.01, 0.999])
  record['pixel_display_range'] = [float(lo), float(max(hi, lo + 1e-6))]
  return record


def write_split(directory: pathlib.Path, data: input_pipeline.SplitData, scores: np.ndarray,
                components: dict[str, np.ndarray], maps: list[np.ndarray], masks: list[np.ndarray],
                metrics: Optional[dict[str, Any]], run: dict[str, Any],
                display_range: tuple[float, float], max_overlays: int) -> None:
  """Writes one exported split (format: evaluate.py) atomically.

  Args:
    directory: WORKDIR/export/<split>.
    data: the whole split (file names, labels, images for the overlays).
    scores: [n] final image scores; components: {name: [n]} image score components.
    maps, masks: n float32 / bool [H_i, W_i].
    metrics: per defect type (train.evaluate_scores), or None for a split without both classes.
    run: the run.json record.
    display_range: map values drawn blue / red in the overlays.
    max_overlays: -1 every image, else the n most and n least anomalous.
  """
  n = len(data)
  order = np.argsort(-scores, kind='stable')
  drawn = set(range(n)) if max_overlays < 0 else set(order[:max_overlays]) | set(
      order[::-1][:max_overlays])
  keys = [evaluate.array_key(i) for i in range(n)]
  overlay_names = [f'{evaluate.OVERLAYS}/{keys[i]}_{safe_stem(data.filenames[i])}.png'
                   if i in drawn else '' for i in range(n)]
  with evaluate.atomic_directory(directory) as tmp:
    names = list(components)
    with open(tmp / evaluate.SCORES_CSV, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(evaluate.SCORE_COLUMNS + tuple(names) + (evaluate.OVERLAY_COLUMN,))
      for i in range(n):
        writer.writerow([i, data.filenames[i], int(data.labels[i]), data.defect_types[i],
                         int(data.has_mask[i]), evaluate.format_float(scores[i])]
                        + [evaluate.format_float(components[c][i]) for c in names]
                        + [overlay_names[i]])
    np.savez_compressed(tmp / evaluate.MAPS_NPZ,
                        **{k: np.asarray(m, np.float32) for k, m in zip(keys, maps)})
    np.savez_compressed(tmp / evaluate.MASKS_NPZ, **{k: np.asarray(m, bool) for k, m in
                                                     zip(keys, masks)},
                        **{evaluate.HAS_MASK_KEY: np.asarray(data.has_mask, bool)})
    (tmp / evaluate.OVERLAYS).mkdir()
    for i in sorted(drawn):
      with Image.open(io.BytesIO(data.images[i])) as im:
        image = np.asarray(im)
      report.save_overlay(tmp / overlay_names[i], image, maps[i], masks[i], display_range,
                          has_mask=bool(data.has_mask[i]))
    if metrics is not None:
      atomic_files.write_json(str(tmp / evaluate.METRICS_JSON), metrics)
    atomic_files.write_json(str(tmp / evaluate.RUN_JSON), run)


def export_run(config: ml_collections.ConfigDict, workdir: str, step: Optional[int] = None
               ) -> dict[str, Any]:
  """Exports checkpoint `step` (default the latest) of the run in `workdir` (see the module doc).

  Returns a summary: {'workdir', 'checkpoint_step', 'thresholds' (the thresholds.json record),
  'splits': {split: {'directory', 'num_images', 'metrics' (None without both classes)}},
  'report' (index.html path, or None), 'seconds'}.
  """
  start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  mesh = train.make_mesh()
  train.check_batch_size(config.train.eval_batch_size, 'train.eval_batch_size', mesh)
  state, step = restore_state(config, workdir, step, mesh)
  heldout = input_pipeline.heldout_split(config)
  data = input_pipeline.load(config, tuple(dict.fromkeys(('train', heldout,
                                                          *config.export.splits))))
  is_chief = jax.process_index() == 0
  config, _ = score_selection.resolve(config, workdir, state, train.heldout_normals(data, config),
                                     mesh)
  stats = None
  if scoring.needs_stats(config.score):  # As train.evaluate_run.
    stats = train.score_stats(train.score_split(state, train.heldout_normals(data, config), config,
                                                mesh, decode=True, keep_maps=False))
  record = choose_thresholds(state, data, heldout, config, mesh, stats)
  record['checkpoint_step'] = step
  record['score_stats'] = scoring.scalar_stats(stats)
  logging.info('Thresholds (%s normals, step %d): %s %.6g', heldout, step, record['chosen'],
               record['threshold'])

  summary = {'workdir': workdir, 'checkpoint_step': step, 'thresholds': record, 'splits': {},
             'report': None}
  for split in config.export.splits:
    scored = train.score_split(state, data[split], config, mesh, decode=True)
    if jax.process_count() > 1:
      scored = train.gather_scored(scored)
    whole = _whole_split(config, split, data[split])
    if np.unique(whole.labels).size == 2:
      scores, _, maps, masks, metrics = train.evaluate_scores(scored, whole, config, stats)
    else:  # e.g. the training normals: scores and maps, but no metrics.
      scores, pix = map(np.asarray, scoring.final_scores(
          scored['image'], scored['pixel'], config.score, stats))
      maps, masks = train.evaluation_maps(pix, scored['mask'], whole, config)
      metrics = None
    directory = pathlib.Path(workdir) / EXPORT_DIR / split
    run = {
        'format_version': FORMAT_VERSION,
        'workdir': workdir,
        'split': split,
        'checkpoint_step': step,
        'num_images': len(whole),
        'score': {'image': config.score.image, 'pixel': config.score.pixel,
                  'components': sorted(scored['image'])},
        'maps': {'resolution': 'native' if config.score.native_resolution else 'model',
                 'dtype': 'float32'},
        'score_stats': scoring.scalar_stats(stats),
        'thresholds': record,
        'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'config': json.loads(config.to_json_best_effort()),
    }
    if is_chief:
      write_split(directory, whole, scores, scored['image'], maps, masks, metrics, run,
                  record['pixel_display_range'], config.export.max_overlays)
      logging.info('Exported %d %s images to %s', len(whole), split, directory)
    summary['splits'][split] = {'directory': str(directory), 'num_images': len(whole),
                                'metrics': metrics}
  if is_chief:
    # Last: a failed export leaves the previous thresholds with the previous export. The per-pixel
    # statistics go first, so thresholds.json never points at statistics of another export.
    stats_path = os.path.join(workdir, scoring.STATS_FILENAME)
    if stats:
      scoring.save_stats(stats_path, stats)
    elif os.path.exists(stats_path):
      os.remove(stats_path)
    atomic_files.write_json(os.path.join(workdir, thresholds_lib.FILENAME), record)
    reported = [s for s, v in summary['splits'].items() if v['metrics'] is not None]
    if reported:
      split = 'test' if 'test' in reported else reported[0]
      summary['report'] = str(report.write_report(workdir, summary['splits'][split]['directory'],
                                                  config.export.report_images))
  summary['seconds'] = time.perf_counter() - start
  return summary


def format_export(summary: dict[str, Any]) -> str:
  """The lines a person reads after an export."""
  t = summary['thresholds']
  lines = ['']
  for split, s in summary['splits'].items():
    lines.append(f"export/{split}: {s['num_images']} images -> {s['directory']}")
    if s['metrics'] is not None:
      lines += [evaluate.format_table(s['metrics']), '']
  lines += [
      f"threshold: {t['chosen']} {t['threshold']:.6g} ({t['rule']}; {t['num_normal']} "
      f"{t['source']} normals, checkpoint step {summary['checkpoint_step']}) -> "
      f"{os.path.join(summary['workdir'], thresholds_lib.FILENAME)}",
  ]
  if summary['report']:
    lines.append(f"report: {summary['report']}")
  return '\n'.join(lines)
