"""Export of a trained run for offline evaluation: scores, anomaly maps, masks, thresholds, report.

  vivano export --workdir=RUN [--step=N] [--config=configs/x.py]   (default config: RUN/config.json)
  vivano export --workdir=RUN --config.score.image=recon   (RUN/config.json with these fields)

An export whose score or export settings differ from RUN/config.json records them there (as a rerun
of main with them does): `vivano predict` and `vivano export-model` use the thresholds it chose.

One code path for the end of training (`main` with `export.at_end`) and for exporting a checkpoint
without training:

1. restore the checkpoint (latest or a given step; checkpoints.py);
2. score the held-out normals when the score needs their statistics, as training's evaluation does,
   and to choose the thresholds (thresholds.py says which images);
3. score each split of `export.splits` exactly as training's evaluation does (scorer.py) and write
   WORKDIR/export/<split>/ (export_format.py), atomically: maps float32 at the masks' native size,
   so that the offline evaluation reproduces the in-training metrics exactly (float16 would save
   half the space but change the metrics);
4. write thresholds.json (and score_stats.npz) beside the splits, all in one hidden folder that
   replaces WORKDIR/export only when complete, so a failed export leaves the previous one whole;
   then copy both to the workdir and write the HTML report (report.py) from the test split.

With several processes every process scores its shard, rows are gathered in split order, and
process 0 writes.
"""

if __name__ == '__main__':
  # Before this file's own imports: `python -m vivano_jax.export` then runs the
  # command exactly as `vivano export` does, with the libraries imported after the entry point has
  # routed their logs (cli.py), and exits; the imports below serve the imported module.
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('export')

import contextlib
import io
import json
import os
import pathlib
import time
from typing import Any, Optional

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image

from vivano_jax import atomic_files
from vivano_jax import checkpoints
from vivano_jax import config_checks
from vivano_jax import config_files
from vivano_jax import datasets
from vivano_jax import errors
from vivano_jax import export_format
from vivano_jax import input_pipeline
from vivano_jax import overlays
from vivano_jax import report
from vivano_jax import score_selection
from vivano_jax import scorer as scorer_lib
from vivano_jax import score_stats
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import tables
from vivano_jax import thresholds as thresholds_lib
from vivano_jax import workdir as workdir_lib
from vivano_jax import workdir_lock

EXPORT_DIR = 'export'
EDITED_THRESHOLDS = 'thresholds.edited.json'  # An edited WORKDIR/thresholds.json, kept by an export.


def _display_range(state, scorer: scorer_lib.Scorer, local: input_pipeline.SplitData,
                   whole: input_pipeline.SplitData, stats) -> list[float]:
  """The heatmaps' colour scale: the (1 %, 99.9 %) quantiles of the pixel scores of the first
  `export.display_images` normals of the whole split, whichever processes hold them."""
  normal = np.flatnonzero(whole.labels == 0)
  shown_names = whole.filenames[normal[:max(scorer.config.export.display_images, 1)]]
  keep = np.flatnonzero(np.isin(local.filenames, shown_names))
  shown = scorer.split(state, local.subset(keep), decode=True).gathered()
  _, pix = scorer.final(shown, stats)
  lo, hi = np.quantile(np.asarray(pix, np.float64), [0.01, 0.999])
  return [float(lo), float(max(hi, lo + 1e-6))]


def choose_thresholds(state, scorer: scorer_lib.Scorer,
                      data: dict[str, input_pipeline.SplitData], heldout: str,
                      stats: Optional[scoring.ScoreStats]) -> dict[str, Any]:
  """thresholds.choose on the held-out split, plus the heatmaps' display range (pixel scores)."""
  config = scorer.config
  note = None
  whole = input_pipeline.whole_split(config, heldout, data[heldout])
  if heldout == 'validation' and not (whole.labels == 0).any():
    note = 'the validation split has no normal image; thresholds from the training normals'
    logging.warning('%s', note)
    heldout = 'train'
    whole = input_pipeline.whole_split(config, heldout, data[heldout])
  from_maps = scoring.image_needs_maps(config.score)
  scored = scorer.split(state, data[heldout], decode=True, keep_maps=from_maps).gathered()
  scores = scorer.image_scores(scored, stats)
  normal = whole.labels == 0
  if not normal.any():
    raise export_format.ExportError(
        f'the {heldout} split has no normal image to choose a threshold on')
  # Only validation labels may pick an F1 threshold: training images are all normal.
  labelled = heldout == 'validation'
  record = thresholds_lib.choose(
      scores[normal], heldout, config.export.threshold_quantile, config.export.threshold,
      val_scores=scores if labelled else None, val_labels=whole.labels if labelled else None)
  record['score'] = config.score.image
  if note:
    record['source_note'] = note
  record['pixel_display_range'] = _display_range(state, scorer, data[heldout], whole, stats)
  return record


def write_split(directory: pathlib.Path, data: input_pipeline.SplitData,
                result: scorer_lib.Evaluation, components: dict[str, np.ndarray],
                run: dict[str, Any], display_range: tuple[float, float], max_overlays: int) -> None:
  """Writes one exported split (export_format.py), with the overlays of the `max_overlays` most
  and least anomalous images (-1: every image)."""
  n = len(data)
  order = np.argsort(-result.scores, kind='stable')
  drawn = set(range(n)) if max_overlays < 0 else set(order[:max_overlays]) | set(
      order[::-1][:max_overlays])
  names = {i: f'{export_format.array_key(i)}_{export_format.safe_stem(data.filenames[i])}.png'
           for i in sorted(drawn)}

  def draw(i: int, path: pathlib.Path) -> None:
    with Image.open(io.BytesIO(data.images[i])) as im:
      image = np.asarray(im)
    overlays.save_overlay(path, image, result.native_maps[i], result.native_masks[i],
                          display_range, has_mask=bool(data.has_mask[i]))

  table = {'filename': data.filenames, 'label': data.labels, 'defect_type': data.defect_types,
           'has_mask': data.has_mask, 'score': result.scores}
  export_format.write_split(directory, table, components, result.native_maps,
                            result.native_masks, names, draw, result.metrics, run)


def _run_record(config, workdir, split, step, n, scored, stats, record) -> dict[str, Any]:
  return {
      'format_version': export_format.FORMAT_VERSION, 'workdir': workdir, 'split': split,
      'checkpoint_step': step, 'num_images': n,
      'score': {'image': config.score.image, 'pixel': config.score.pixel,
                'components': sorted(scored.image)},
      'maps': {'resolution': 'native' if config.score.native_resolution else 'model',
               'dtype': 'float32'},
      'score_stats': score_stats.scalar_stats(stats), 'thresholds': record,
      'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'config': json.loads(config.to_json_best_effort()),
  }


def _write_thresholds(directory: pathlib.Path, record: dict[str, Any], stats) -> None:
  """thresholds.json and score_stats.npz (when the score standardises) into `directory`."""
  if stats:
    score_stats.save_stats(str(directory / score_stats.STATS_FILENAME), stats)
  atomic_files.write_json(directory / thresholds_lib.FILENAME, record)


def edited_thresholds(workdir: str) -> Optional[dict[str, Any]]:
  """WORKDIR/thresholds.json when a person has edited it (to move the decision threshold): it
  then differs from the export's own copy, and the next export would replace it."""
  try:
    with open(os.path.join(workdir, thresholds_lib.FILENAME)) as f:
      mine = json.load(f)
    with open(os.path.join(workdir, EXPORT_DIR, thresholds_lib.FILENAME)) as f:
      exported = json.load(f)
  except (OSError, ValueError):
    return None
  return mine if isinstance(mine, dict) and mine != exported else None


def _copy_to_workdir(workdir: str, summary: dict[str, Any], stats, report_images: int,
                     edited: Optional[dict[str, Any]]) -> None:
  """After the export is committed: copies of its thresholds.json and score_stats.npz in the
  workdir (where users look for them), and the report. An edited WORKDIR/thresholds.json is kept
  as EDITED_THRESHOLDS, and the summary says so."""
  stats_path = os.path.join(workdir, score_stats.STATS_FILENAME)
  if stats:
    score_stats.save_stats(stats_path, stats)
  elif os.path.exists(stats_path):
    os.remove(stats_path)
  path = os.path.join(workdir, thresholds_lib.FILENAME)
  if edited is not None:
    kept = os.path.join(workdir, EDITED_THRESHOLDS)
    atomic_files.write_json(kept, edited)
    summary['thresholds_note'] = (
        f'{path} had been edited (threshold {edited.get("threshold")!r}); the export replaced it '
        f'with its own and kept the edited one as {kept}: copy it back to use it')
  atomic_files.write_json(path, summary['thresholds'])
  reported = [s for s, v in summary['splits'].items() if v['metrics'] is not None]
  if reported:
    split = 'test' if 'test' in reported else reported[0]
    summary['report'] = str(report.write_report(workdir, summary['splits'][split]['directory'],
                                                report_images))


def _prepare(config, workdir, step, mesh):
  """The restored state and step, the data, the resolved config, its scorer and statistics."""
  workdir_lib.check_compatible(config, workdir)
  state, step = checkpoints.restore_run(config, workdir, step, mesh)
  heldout = input_pipeline.heldout_split(config)
  data = input_pipeline.load(config, tuple(dict.fromkeys(('train', heldout,
                                                          *config.export.splits))))
  normals = scorer_lib.heldout_normals(data, config)
  config, _ = score_selection.resolve(config, workdir, state, normals, mesh)
  scorer = scorer_lib.Scorer(config, mesh)
  stats = scorer.statistics(state, normals)
  return state, step, data, config, scorer, stats


def export_run(config: ml_collections.ConfigDict, workdir: str, step: Optional[int] = None,
               reuse: Optional[dict[str, scorer_lib.Evaluation]] = None) -> dict[str, Any]:
  """Exports checkpoint `step` (default the latest) of the run in `workdir` (see the module doc).
  `reuse`: {split: an evaluation of it at this checkpoint} (training's test split), whose native
  maps and metrics are taken where the scores equal it to the bit (`Scorer.evaluate`).

  Every split, thresholds.json and score_stats.npz are written into one hidden folder that
  replaces WORKDIR/export only when all are complete: a failed export leaves the previous one
  whole. Returns a summary: {'workdir', 'checkpoint_step', 'thresholds' (the thresholds.json
  record), 'splits': {split: {'directory', 'num_images', 'metrics' (None without both classes)}},
  'report' (index.html path, or None), 'seconds'}.
  """
  start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  datasets.resolve_config(config)  # A config file that leaves the MVTec AD category to the data.
  config_checks.check_export(config)
  config_checks.check_score(config)  # E.g. a score given for this export that the model lacks.
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.train.eval_batch_size, 'train.eval_batch_size', mesh)
  state, step, data, config, scorer, stats = _prepare(config, workdir, step, mesh)
  heldout = input_pipeline.heldout_split(config)
  record = choose_thresholds(state, scorer, data, heldout, stats)
  record.update(checkpoint_step=step, score_stats=score_stats.scalar_stats(stats),
                score_config=json.loads(json.dumps(config.score.to_dict())))
  logging.info('Thresholds (%s normals, step %d): %s %.6g', heldout, step, record['chosen'],
               record['threshold'])
  if 'warning' in record:
    logging.warning('%s', record['warning'])
  summary = {'workdir': workdir, 'checkpoint_step': step, 'thresholds': record, 'splits': {},
             'report': None}
  chief = jax.process_index() == 0
  edited = edited_thresholds(workdir) if chief else None  # Before export/ is replaced.
  export_dir = pathlib.Path(workdir) / EXPORT_DIR
  with (atomic_files.atomic_directory(export_dir) if chief else contextlib.nullcontext()) as tmp:
    for split in config.export.splits:
      scored = scorer.split(state, data[split], decode=True).gathered()
      whole = input_pipeline.whole_split(config, split, data[split])
      # No metrics without both classes.
      result = scorer.evaluate(scored, whole, stats, reuse=(reuse or {}).get(split))
      if chief:
        run = _run_record(config, workdir, split, step, len(whole), scored, stats, record)
        write_split(tmp / split, whole, result, scored.image, run, record['pixel_display_range'],
                    config.export.max_overlays)
        logging.info('Exported %d %s images', len(whole), split)
      summary['splits'][split] = {'directory': str(export_dir / split), 'num_images': len(whole),
                                  'metrics': result.metrics}
    if chief:
      _write_thresholds(tmp, record, stats)
  if chief:
    _copy_to_workdir(workdir, summary, stats, config.export.report_images, edited)
  summary['seconds'] = time.perf_counter() - start
  return summary


def thresholds_outdated(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """True when the run has thresholds chosen for another score than `config`'s."""
  try:
    record = thresholds_lib.load(workdir)
    resolved, _ = score_selection.resolve(config, workdir)
    thresholds_lib.check_score(record, resolved.score, workdir)
  except ValueError:
    return os.path.exists(os.path.join(workdir, thresholds_lib.FILENAME))
  return False


def format_export(summary: dict[str, Any]) -> str:
  """The lines a person reads after an export."""
  t = summary['thresholds']
  lines = ['']
  for split, s in summary['splits'].items():
    lines.append(f"export/{split}: {s['num_images']} images -> {s['directory']}")
    if s['metrics'] is not None:
      lines += [tables.metrics_table(s['metrics']), '']
  lines += [
      f"threshold: {t['chosen']} {t['threshold']:.6g} ({t['rule']}; {t['num_normal']} "
      f"{t['source']} normals, checkpoint step {summary['checkpoint_step']}) -> "
      f"{os.path.join(summary['workdir'], thresholds_lib.FILENAME)}",
  ]
  if 'warning' in t:
    lines.append(f"warning: {t['warning']}")
  if 'thresholds_note' in summary:
    lines.append(f"note: {summary['thresholds_note']}")
  if summary['report']:
    lines.append(f"report: {summary['report']}")
  return '\n'.join(lines)


OVERRIDES_RUN_CONFIG = True  # --config.<field>=<value> without --config: RUN/config.json's fields.


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'The trained run.', flag_values=fv)
  flags.DEFINE_integer('step', None, 'The checkpoint step (default: the latest).', flag_values=fv)
  config_flags.DEFINE_config_file(
      'config', None, 'A config file to export with (default: the run\'s config.json), e.g. with '
      'another score.*; fields can be overridden (--config.score.image=recon).', flag_values=fv,
      lock_config=True)
  flags.mark_flag_as_required('workdir', flag_values=fv)


def run(fv: flags.FlagValues, overrides: Optional[dict[str, str]] = None) -> None:
  """`vivano export`; `overrides`: --config.<field>=<value> flags given without --config, applied
  to the run's config.json."""
  if not os.path.isdir(fv.workdir):
    raise errors.DataError(f'--workdir={fv.workdir}: no such run folder')
  config = fv.config if fv.config is not None else workdir_lib.load_config(fv.workdir)
  for field, text in (overrides or {}).items():
    try:
      config_files.apply_overrides(config, {field: text})
    except config_files.UnknownFieldError as e:
      raise errors.UsageError(f'--config.{field}: no such config field{e.hint}') from None
  with workdir_lock.lock(fv.workdir):
    exported = export_run(config, fv.workdir, step=fv.step)
    if jax.process_index() == 0 and workdir_lib.config_differs(config, fv.workdir):
      # The score and export settings of this export become the run's, as a rerun of main with
      # them would make them: predict and export-model then use the thresholds chosen here.
      workdir_lib.save_config(config, fv.workdir)
  if jax.process_index() == 0:
    print(format_export(exported), flush=True)
