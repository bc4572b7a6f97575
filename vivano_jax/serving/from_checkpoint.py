"""Scoring with a trained run's checkpoint itself: what `vivano predict --workdir` and
`vivano export-model` start from.

`load_run` reads what a run needs to score: its config (score resolved, score_selection.py), the
thresholds chosen at export (checked against that score), the checkpoint and the statistics of
held-out normals a standardised score needs. `predict` scores image files through the training
input pipeline and the scorer (scorer.py), batched and sharded over all devices; predict.py
writes what it returns.
"""

import dataclasses
import io
import os
import pathlib
from typing import Any, Optional

import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np
from PIL import Image

from vivano_jax import checkpoints
from vivano_jax import errors
from vivano_jax import export
from vivano_jax import image_io
from vivano_jax import input_pipeline
from vivano_jax import score_selection
from vivano_jax import scorer as scorer_lib
from vivano_jax import score_stats
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import thresholds as thresholds_lib
from vivano_jax import workdir as workdir_lib
from vivano_jax.datasets import image_files


@dataclasses.dataclass
class Run:
  """A trained run ready to score: config (score resolved), thresholds.json's record, the restored
  train state and its step, and the score statistics (None when the score needs none)."""
  config: ml_collections.ConfigDict
  record: dict[str, Any]
  state: Any
  step: int
  stats: Optional[scoring.ScoreStats]


def load_stats(workdir: str) -> scoring.ScoreStats:
  """The statistics the export wrote beside thresholds.json (or its copy in the workdir)."""
  path = os.path.join(workdir, export.EXPORT_DIR, score_stats.STATS_FILENAME)
  if not os.path.exists(path):  # An export from before the statistics moved beside it.
    path = os.path.join(workdir, score_stats.STATS_FILENAME)
  if not os.path.exists(path):
    raise errors.DataError(f'{path}: missing; the configured score needs the statistics the '
                           'export writes (run vivano export)')
  try:
    stats = score_stats.load_stats(path)
  except Exception as e:  # pylint: disable=broad-except  (BadZipFile, EOFError, KeyError, ...)
    raise errors.DataError(f'{path}: unreadable ({type(e).__name__}: {e}); run vivano export '
                           'again') from e
  for key, (mean, std) in stats.items():  # A NaN scored every image NaN, and decided it normal.
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (np.asarray(std) >= 0).all()):
      raise errors.DataError(f'{path}: corrupt ({key}: a mean or std that is not a finite number, '
                             'or a negative std); run vivano export again')
  return stats


def run_config(workdir: str, step: Optional[int]
               ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """The run's config, score resolved, and its thresholds.json record, checked to be for that
  score and for checkpoint `step` (`check_step`): the files `load_run` needs, checked before any
  input is read or anything restored."""
  config, _ = score_selection.resolve(workdir_lib.load_config(workdir), workdir)
  record = thresholds_lib.load(workdir)
  thresholds_lib.check_score(record, config.score, workdir)
  check_step(workdir, record, step)
  return config, record


def check_step(workdir: str, record: dict[str, Any], step: Optional[int]) -> None:
  """The checkpoint to score with (`step`, default the latest) must be the one thresholds.json's
  `record` was chosen at: its threshold decides the scores of that checkpoint only (another one
  scores on another scale). A UsageError (--step given) or DataError naming the file, both steps
  and the export to run. A step that is no checkpoint is left to the restore to name."""
  steps = workdir_lib.checkpoint_steps(workdir)
  used = steps[-1] if step is None and steps else step
  chosen = record.get('checkpoint_step')
  if used not in steps or chosen is None or chosen == used:
    return
  path = thresholds_lib.path_of(workdir)
  if step is not None:
    raise errors.UsageError(f'--step={step}: {path} was chosen at checkpoint step {chosen} and '
                            'decides the scores of that checkpoint only; export step '
                            f'{step} first (vivano export --workdir={workdir} --step={step}) or '
                            'drop --step')
  raise errors.DataError(f'{path} was chosen at checkpoint step {chosen}, but the latest '
                         f'checkpoint is step {used}, whose scores it does not decide; export step '
                         f'{used} (vivano export --workdir={workdir}) or give --step={chosen}')


def restore(workdir: str, config: ml_collections.ConfigDict, record: dict[str, Any],
            step: Optional[int], mesh: Mesh) -> Run:
  """The run of `run_config(workdir, step)` at checkpoint `step` (default the latest), restored
  onto `mesh`."""
  state, step = checkpoints.restore_run(config, workdir, step, mesh)
  stats = load_stats(workdir) if scoring.needs_stats(config.score) else None
  return Run(config=config, record=record, state=state, step=step, stats=stats)


def load_run(workdir: str, step: Optional[int], mesh: Mesh) -> Run:
  """The run in `workdir` at checkpoint `step` (default the latest), restored onto `mesh`."""
  return restore(workdir, *run_config(workdir, step), step, mesh)


def read_images(paths: list[pathlib.Path]) -> list[tuple[bytes, int, tuple[int, int]]]:
  """Each file as (PNG bytes of uint8 [H, W, C], C, (H, W)), C = 1 for grayscale files else 3.

  Every file is fully decoded first; unreadable ones raise one error listing them all.
  """
  info, problems = image_files.check_files((p, False) for p in paths)
  image_files.raise_problems(problems, 'the --input images')
  out = []
  for p in paths:
    channels = info[p][1]
    png, shape = image_files.image_png(p, channels)
    out.append((png, channels, shape))
  return out


_EMPTY_MASK = image_files.encode_png(np.zeros((1, 1, 1), np.uint8))  # Resized, never evaluated.


def _split(images, rows, paths) -> input_pipeline.SplitData:
  return input_pipeline.SplitData(
      images=np.array([images[i][0] for i in rows], dtype=object),
      masks=np.array([_EMPTY_MASK] * len(rows), dtype=object),
      labels=np.zeros(len(rows), np.int32),
      defect_types=np.array(['unknown'] * len(rows), dtype=object),
      filenames=np.array([str(paths[i]) for i in rows], dtype=object),
      has_mask=np.zeros(len(rows), bool), channels=images[rows[0]][1])


def predict(workdir: str, paths: list[pathlib.Path], step: Optional[int] = None,
            batch_size: Optional[int] = None, warn_tiny=None) -> dict[str, Any]:
  """Scores image files with the run in `workdir` (see predict.predict for what it returns);
  warn_tiny(sizes, patch_size, image_size) is called once the files are read."""
  input_pipeline.keep_tensorflow_off_accelerators()  # tf.data only: JAX has the accelerators.
  config, record = run_config(workdir, step)
  images = read_images(paths)
  if warn_tiny is not None:
    warn_tiny(paths, [shape for _, _, shape in images], config.model.patch_size,
              config.dataset.image_size)
  mesh = sharding.make_mesh()
  batch = batch_size or config.train.eval_batch_size
  if batch <= 0:
    raise errors.UsageError(f'--batch_size must be positive, got {batch}')
  n_dev = mesh.devices.size
  batch = min(batch, len(paths))  # No batch padded beyond the images there are.
  config.train.eval_batch_size = -(-batch // n_dev) * n_dev
  run = restore(workdir, config, record, step, mesh)
  scorer = scorer_lib.Scorer(run.config, mesh)
  n = len(paths)
  scores, maps, components = np.zeros(n, np.float64), [None] * n, {}
  # The input pipeline decodes a split with one stored channel count: one split per count.
  for channels in sorted({c for _, c, _ in images}):
    rows = np.array([i for i, (_, c, _) in enumerate(images) if c == channels])
    scored = scorer.split(run.state, _split(images, rows, paths), decode=True)
    img, pix = scorer.final(scored, run.stats)
    scores[rows] = img
    for name, v in scored.image.items():
      components.setdefault(name, np.zeros(n, np.float64))[rows] = v
    for j, i in enumerate(rows):
      maps[i] = image_io.resize(pix[j], images[i][2]).astype(np.float32)
  decoded = [np.asarray(Image.open(io.BytesIO(png))) for png, _, _ in images]
  return {'scores': scores, 'components': components, 'maps': maps, 'images': decoded,
          'anomalous': thresholds_lib.is_anomalous(scores, run.record['threshold']),
          'thresholds': run.record, 'checkpoint_step': run.step,
          'scored_by': f'checkpoint step {run.step}, {len(jax.devices())} device(s)'}
