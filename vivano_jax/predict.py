"""Scores new images with a trained run and decides against its stored threshold.

  vivano predict --workdir=RUN --input=PATH_OR_GLOB --output=DIR [--step=N] [--batch_size=N]
  (or python -m vivano_jax.predict with the same flags)

--input is an image file, a folder (its image files, recursively) or a glob ('imgs/**/*.png').
Images may have any size and be grayscale or colour: each is read as the dataset builders read
files (datasets/image_files.py) and goes through the training input pipeline's decoding, channel
conversion, antialiased resize and normalisation (`input_pipeline.eval_batches`), then through
the scorer (scorer.py), batched and sharded over all devices (the batch rounded up to a multiple of the
device count, the last one padded). One process.

The run's config comes from RUN/config.json (fields added to the code since then take their
defaults), its checkpoint from RUN/checkpoints and the threshold, score statistics and heatmap
colour scale from RUN/thresholds.json (written by the export). DIR receives, per image i,
maps/<i>_<stem>.npy (float32 [H, W], the anomaly map at the image's native size) and
overlays/<i>_<stem>.png (image | map), and predictions.csv with one row per image; a decision per
image is printed.
"""

import csv
import glob
import io
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Optional

from absl import flags
import jax
import numpy as np
from PIL import Image

from vivano_jax import checkpoints
from vivano_jax import errors
from vivano_jax import export
from vivano_jax import export_format
from vivano_jax import image_io
from vivano_jax import input_pipeline
from vivano_jax import report
from vivano_jax import score_selection
from vivano_jax import scorer as scorer_lib
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import thresholds as thresholds_lib
from vivano_jax import workdir as workdir_lib
from vivano_jax.datasets import image_files

PREDICTIONS_CSV = 'predictions.csv'


def find_images(spec: str) -> list[pathlib.Path]:
  """The files named by --input: a file, a folder's image files (recursively) or a glob; sorted."""
  path = pathlib.Path(spec)
  if path.is_file():
    return [path]
  if path.is_dir():
    found = [p for p in path.rglob('*') if p.is_file() and image_files.is_image_name(p.name)
             and not any(image_files.is_ignored(part) for part in p.relative_to(path).parts)]
  else:
    found = [pathlib.Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
  if not found:
    raise errors.DataError(f'--input={spec!r} names no image file (a file, a folder of images or a glob)')
  return sorted(found)


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


def _warn_tiny(paths, images, config) -> None:
  for path, (_, _, (h, w)) in zip(paths, images):
    if min(h, w) < config.model.patch_size:
      print(f'warning: {path} is {h} x {w} px, smaller than one {config.model.patch_size} px '
            f'patch at the model size it is upscaled to ({config.dataset.image_size} px): its '
            'score says little', file=sys.stderr)


def predict(workdir: str, paths: list[pathlib.Path], step: Optional[int] = None,
            batch_size: Optional[int] = None) -> dict[str, Any]:
  """Scores image files with the run in `workdir`.

  Returns {'scores' [n] (final image scores), 'components' {name: [n]}, 'maps' (n float32
  [H_i, W_i] at native size), 'images' (n uint8 [H_i, W_i, C_i]), 'anomalous' [n] bool,
  'thresholds' (the thresholds.json record), 'checkpoint_step'}.
  """
  config, _ = score_selection.resolve(workdir_lib.load_config(workdir), workdir)
  record = thresholds_lib.load(workdir)
  thresholds_lib.check_score(record, config.score, workdir)
  images = read_images(paths)
  _warn_tiny(paths, images, config)
  mesh = sharding.make_mesh()
  n_dev = mesh.devices.size
  batch = batch_size or config.train.eval_batch_size
  if batch <= 0:
    raise errors.UsageError(f'--batch_size must be positive, got {batch}')
  config.train.eval_batch_size = -(-batch // n_dev) * n_dev
  state, step = checkpoints.restore_run(config, workdir, step, mesh)
  if step != record.get('checkpoint_step'):
    print(f'warning: thresholds.json was chosen at step {record.get("checkpoint_step")}, the '
          f'checkpoint used is step {step}', file=sys.stderr)
  stats = None
  if scoring.needs_stats(config.score):
    stats_path = os.path.join(workdir, export.EXPORT_DIR, scoring.STATS_FILENAME)
    if not os.path.exists(stats_path):  # An export from before the statistics moved beside it.
      stats_path = os.path.join(workdir, scoring.STATS_FILENAME)
    if not os.path.exists(stats_path):
      raise errors.DataError(f'{stats_path}: missing; the configured score needs the statistics '
                             'the export writes (run vivano export)')
    stats = scoring.load_stats(stats_path)
  scorer = scorer_lib.Scorer(config, mesh)
  n = len(paths)
  scores, maps = np.zeros(n, np.float64), [None] * n
  components = {}
  # The input pipeline decodes a split with one stored channel count: one split per count.
  for channels in sorted({c for _, c, _ in images}):
    rows = np.array([i for i, (_, c, _) in enumerate(images) if c == channels])
    data = input_pipeline.SplitData(
        images=np.array([images[i][0] for i in rows], dtype=object),
        masks=np.array([_EMPTY_MASK] * len(rows), dtype=object),
        labels=np.zeros(len(rows), np.int32),
        defect_types=np.array(['unknown'] * len(rows), dtype=object),
        filenames=np.array([str(paths[i]) for i in rows], dtype=object),
        has_mask=np.zeros(len(rows), bool), channels=channels)
    scored = scorer.split(state, data, decode=True)
    img, pix = scorer.final(scored, stats)
    scores[rows] = img
    for name, v in scored.image.items():
      components.setdefault(name, np.zeros(n, np.float64))[rows] = v
    for j, i in enumerate(rows):
      maps[i] = image_io.resize(pix[j], images[i][2]).astype(np.float32)
  decoded = [np.asarray(Image.open(io.BytesIO(png))) for png, _, _ in images]
  return {'scores': scores, 'components': components, 'maps': maps, 'images': decoded,
          'anomalous': thresholds_lib.is_anomalous(scores, record['threshold']),
          'thresholds': record, 'checkpoint_step': step}


def write_predictions(output: str, paths: list[pathlib.Path], result: dict[str, Any]) -> str:
  """maps/*.npy, overlays/*.png and predictions.csv in `output`; returns the csv's path."""
  out = pathlib.Path(output)
  for stale in ('maps', 'overlays'):  # A reused --output holds only this call's results.
    shutil.rmtree(out / stale, ignore_errors=True)
  (out / 'maps').mkdir(parents=True, exist_ok=True)
  (out / 'overlays').mkdir(parents=True, exist_ok=True)
  record = result['thresholds']
  names = list(result['components'])
  csv_path = out / PREDICTIONS_CSV
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['index', 'path', 'height', 'width', 'score', 'threshold', 'decision',
                     *names, 'map', 'overlay'])
    for i, path in enumerate(paths):
      base = f'{export_format.array_key(i)}_{export.safe_stem(path.name)}'
      amap = result['maps'][i]
      np.save(out / 'maps' / f'{base}.npy', amap)
      report.save_overlay(out / 'overlays' / f'{base}.png', result['images'][i], amap, None,
                          record['pixel_display_range'])
      writer.writerow([i, str(path), *amap.shape, export_format.format_float(result['scores'][i]),
                       export_format.format_float(record['threshold']),
                       'anomalous' if result['anomalous'][i] else 'normal',
                       *(export_format.format_float(result['components'][c][i]) for c in names),
                       f'maps/{base}.npy', f'overlays/{base}.png'])
  return str(csv_path)


def check_writable(output: str) -> None:
  """--output must be a folder this process can write, checked before anything is scored."""
  os.makedirs(output, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=output, prefix='.write-check-'):
    pass


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'The trained run (main --workdir).', flag_values=fv)
  flags.DEFINE_string('input', None, 'An image file, a folder of images, or a glob.',
                      flag_values=fv)
  flags.DEFINE_string('output', None, 'Folder for maps/, overlays/ and predictions.csv.',
                      flag_values=fv)
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).', flag_values=fv)
  flags.DEFINE_integer('batch_size', None, 'Images per batch, rounded up to a multiple of the '
                       'device count (default: the run\'s train.eval_batch_size).', flag_values=fv)
  flags.mark_flags_as_required(['workdir', 'input', 'output'], flag_values=fv)


def run(fv: flags.FlagValues) -> None:
  if not os.path.isdir(fv.workdir):
    raise errors.DataError(f'--workdir={fv.workdir}: no such run folder')
  paths = find_images(fv.input)
  check_writable(fv.output)
  result = predict(fv.workdir, paths, fv.step, fv.batch_size)
  csv_path = write_predictions(fv.output, paths, result)
  t = result['thresholds']
  print(f"threshold {t['threshold']:.6g} ({t['chosen']}, {t['rule']}), checkpoint step "
        f"{result['checkpoint_step']}, {len(jax.devices())} device(s)")
  for path, score, bad in zip(paths, result['scores'], result['anomalous']):
    print(f"{'ANOMALOUS' if bad else 'normal':<9}  {score:12.6g}  {path}")
  print(f'{int(result["anomalous"].sum())} of {len(paths)} anomalous; written: {csv_path}')


if __name__ == '__main__':
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('predict')
