"""Offline evaluation of an export, and the export format: no model, no JAX, Flax or TensorFlow.

  python -m vivano_jax.evaluate --predictions=RUN/export/test [--ground_truth=FOLDER] [--output=DIR]

Recomputes image AUROC, pixel AUROC and AU-PRO per defect type and overall with `vivano_jax.metrics`
(numpy, scipy, scikit-learn) from the exported files alone, prints them, and writes `evaluation.csv`
and `evaluation.md` to --output (default: the predictions folder). The numbers equal those computed
at the end of training: the same float32 maps bit for bit, the same masks, the same metric code.

The export format is defined here, so that the writer (export.py) and every reader share it. One
folder per split:

  scores.csv    one row per image, in split order: SCORE_COLUMNS, then the score components
                (nll_max, nll_mean, recon), then 'overlay'; floats written exactly (`format_float`)
  maps.npz      float32 [H_i, W_i] anomaly map of image i under key `array_key(i)`, at the ground
                truth's native size (the model's S x S when score.native_resolution is off;
                run.json 'maps' says which); np.savez_compressed, no pickle
  masks.npz     bool [H_i, W_i] ground truth under the same keys, and 'has_mask' bool [n]
  overlays/     PNG image | map | mask side by side (report.py)
  metrics.json  the metrics computed at export time with training's code (train.evaluate_scores)
  run.json      config, checkpoint step, thresholds; written last

A folder is written in a hidden sibling and renamed when complete (`atomic_directory`), so an
interrupted export never leaves a table or map that looks complete.

With --ground_truth=FOLDER (MVTec AD layout) the masks come from
FOLDER/ground_truth/<defect type>/<stem>_mask.<ext> instead of masks.npz, read as the folder builder
reads them: 'good' images and defect types without a ground-truth folder get all-zero masks (the
latter with has_mask False, so pixel metrics skip them).
"""

import contextlib
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Iterator, Optional

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from vivano_jax import image_io
from vivano_jax import metrics as metrics_lib

SCORES_CSV = 'scores.csv'
MAPS_NPZ = 'maps.npz'
MASKS_NPZ = 'masks.npz'
METRICS_JSON = 'metrics.json'
RUN_JSON = 'run.json'
OVERLAYS = 'overlays'
HAS_MASK_KEY = 'has_mask'
SCORE_COLUMNS = ('index', 'filename', 'label', 'defect_type', 'has_mask', 'score')
OVERLAY_COLUMN = 'overlay'
EVALUATION_CSV = 'evaluation.csv'
EVALUATION_MD = 'evaluation.md'
METRIC_NAMES = ('image_auroc', 'pixel_auroc', 'au_pro')


class ExportError(ValueError):
  """An export folder (or ground-truth folder) that cannot be evaluated; lists every problem."""


def _raise_problems(problems: list[str], where: Any) -> None:
  if not problems:
    return
  raise ExportError(image_io.format_problems(problems, where))


def array_key(index: int) -> str:
  """The npz key of image `index` (digits only: a safe zip member name)."""
  return f'{index:06d}'


def format_float(x: float) -> str:
  """Shortest text that reads back to the same float64 (float32 values round-trip exactly)."""
  return repr(float(x))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields an empty hidden sibling of `path` to fill; when the block succeeds it replaces `path`.

  On an error the sibling is deleted and `path` is left as it was. A process killed mid-way leaves
  only a hidden '.<name>.tmp-*' folder, never a complete-looking `path`.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent))
  try:
    yield tmp
    tmp.chmod(0o755)  # mkdtemp makes it private.
    old = None
    if path.exists():
      # A directory cannot be renamed onto a non-empty one: move the old one aside first.
      old = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.old-', dir=path.parent))
      os.rename(path, old / path.name)
    try:
      os.rename(tmp, path)
    except BaseException:
      if old is not None:
        os.rename(old / path.name, path)
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reading an export.


@dataclasses.dataclass
class Export:
  """One exported split, as read back.

  filenames, defect_types: [n] str; labels [n] int; has_mask [n] bool; scores [n] float64 (final
  image score); components {name: [n] float64}; overlays [n] str (path relative to `directory`, ''
  for none); maps / masks: lists of n float32 / bool [H_i, W_i] (None if not loaded); run, metrics:
  the parsed run.json and metrics.json (None if absent).
  """
  directory: pathlib.Path
  filenames: np.ndarray
  labels: np.ndarray
  defect_types: np.ndarray
  has_mask: np.ndarray
  scores: np.ndarray
  components: dict[str, np.ndarray]
  overlays: np.ndarray
  maps: Optional[list[np.ndarray]]
  masks: Optional[list[np.ndarray]]
  run: dict[str, Any]
  metrics: Optional[dict[str, Any]]

  def __len__(self):
    return len(self.labels)


def _read_scores(path: pathlib.Path, problems: list[str]) -> dict[str, list]:
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in SCORE_COLUMNS if c not in header]
    if missing:
      problems.append(f'{path}: missing columns {missing} (has {header})')
      return {}
    components = [c for c in header if c not in SCORE_COLUMNS and c != OVERLAY_COLUMN]
    cols = {c: [] for c in (*SCORE_COLUMNS, *components, OVERLAY_COLUMN)}
    for row_number, row in enumerate(reader, start=2):
      try:
        index = int(row['index'])
        if index != len(cols['index']):
          raise ValueError(f'index {index}, expected {len(cols["index"])} (rows in split order)')
        cols['index'].append(index)
        cols['filename'].append(row['filename'])
        cols['label'].append(int(row['label']))
        cols['defect_type'].append(row['defect_type'])
        cols['has_mask'].append(bool(int(row['has_mask'])))
        cols['score'].append(float(row['score']))
        for c in components:
          cols[c].append(float(row[c]) if row[c] else np.nan)
        cols[OVERLAY_COLUMN].append(row.get(OVERLAY_COLUMN) or '')
      except (TypeError, ValueError) as e:
        problems.append(f'{path}, line {row_number}: {e}')
        return {}
  if not cols['index']:
    problems.append(f'{path}: no rows')
  return cols


def _check_keys(npz, what: str, n: int, problems: list[str], extra_ok=()) -> None:
  expected = {array_key(i) for i in range(n)}
  keys = set(npz.files) - set(extra_ok)
  missing, extra = sorted(expected - keys), sorted(keys - expected)
  if missing:
    problems.append(f'{what}: no array for {len(missing)} image(s) of scores.csv: keys '
                    f'{_few(missing)}')
  if extra:
    problems.append(f'{what}: {len(extra)} array(s) for no image of scores.csv: keys {_few(extra)}')


def _few(items: list[str], k: int = 10) -> str:
  return ', '.join(items[:k]) + (f', ... ({len(items)} in all)' if len(items) > k else '')


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """A mask file as bool [H, W]: True where any non-alpha channel is > 0 (the builders' rule)."""
  with Image.open(path) as image:
    image.load()
    return image_io.mask_values(image)


def masks_from_folder(root: str | os.PathLike, filenames: np.ndarray, defect_types: np.ndarray,
                      shapes: list[tuple[int, int]], problems: list[str]
                      ) -> tuple[list[np.ndarray], np.ndarray]:
  """Masks from an MVTec AD layout folder: (n bool [H_i, W_i], has_mask [n] bool).

  Args:
    root: the folder holding ground_truth/<defect type>/<stem>_mask.<ext>.
    filenames, defect_types: [n] as in scores.csv; a mask is found by (defect type, file stem).
    shapes: the maps' [H_i, W_i], which the masks must have.
    problems: appended with every missing, extra, unreadable or mis-sized mask.
  """
  gt = pathlib.Path(root) / 'ground_truth'
  if not gt.is_dir():
    problems.append(f'{gt}: no such folder (expected ground_truth/<defect type>/<stem>_mask.png)')
    return [], np.zeros(0, bool)
  available = {}  # (defect type, stem) -> mask path
  for d in sorted(p for p in gt.iterdir() if p.is_dir() and not p.name.startswith('.')):
    for f in sorted(d.iterdir()):
      if f.name.startswith('.') or not f.is_file():
        continue
      stem, ext = os.path.splitext(f.name)
      if ext.lower() not in image_io.IMAGE_EXTENSIONS or not stem.endswith('_mask'):
        problems.append(f'{f}: not a <stem>_mask.<image extension> file')
        continue
      available[(d.name, stem[:-len('_mask')])] = f
  folders = {d for d, _ in available} | {
      p.name for p in gt.iterdir() if p.is_dir() and not p.name.startswith('.')}
  masks, has_mask, used = [], np.zeros(len(filenames), bool), set()
  for i, (name, defect) in enumerate(zip(filenames, defect_types)):
    key = (defect, pathlib.PurePath(name).stem)
    if key in available:
      used.add(key)
      try:
        mask = read_mask(available[key])
      except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files.
        problems.append(f'{available[key]}: unreadable mask ({type(e).__name__}: {e})')
        mask = np.zeros(shapes[i], bool)
      if mask.shape != tuple(shapes[i]):
        problems.append(f'{available[key]}: mask size {mask.shape} (H, W) differs from the map '
                        f'{tuple(shapes[i])} of {name}')
      masks.append(mask)
      has_mask[i] = True
    elif defect in folders and defect != 'good':
      problems.append(f'{gt / defect}: no mask for {name} (expected {key[1]}_mask.png)')
      masks.append(np.zeros(shapes[i], bool))
    else:
      masks.append(np.zeros(shapes[i], bool))
      has_mask[i] = defect == 'good'
  for key in sorted(set(available) - used):
    problems.append(f'{available[key]}: a mask for no image of scores.csv')
  return masks, has_mask


def read_export(directory: str | os.PathLike, ground_truth: Optional[str] = None,
                load_maps: bool = True) -> Export:
  """Reads and checks one exported split; raises one ExportError listing every problem.

  Args:
    directory: WORKDIR/export/<split>.
    ground_truth: optional MVTec AD layout folder to take the masks from instead of masks.npz.
    load_maps: False reads the table only (maps and masks None).
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ExportError(f'{directory}: no such export folder (expected WORKDIR/export/<split>)')
  required = [SCORES_CSV, RUN_JSON] + ([MAPS_NPZ] if load_maps else [])
  if load_maps and ground_truth is None:
    required.append(MASKS_NPZ)
  problems = [f'{directory / name}: missing' for name in required
              if not (directory / name).is_file()]
  _raise_problems(problems, directory)

  cols = _read_scores(directory / SCORES_CSV, problems)
  _raise_problems(problems, directory)
  n = len(cols['index'])
  names = np.array(cols['filename'], dtype=object)
  defect_types = np.array(cols['defect_type'], dtype=object)
  has_mask = np.array(cols['has_mask'], dtype=bool)
  maps = masks = None
  if load_maps:
    with np.load(directory / MAPS_NPZ, allow_pickle=False) as npz:
      _check_keys(npz, f'{directory / MAPS_NPZ}', n, problems)
      _raise_problems(problems, directory)
      maps = [npz[array_key(i)] for i in range(n)]
    for i, m in enumerate(maps):
      if m.ndim != 2 or m.dtype != np.float32:
        problems.append(f'{MAPS_NPZ}[{array_key(i)}] ({names[i]}): {m.dtype} {m.shape}, '
                        'expected float32 [H, W]')
    shapes = [m.shape for m in maps]
    if ground_truth is None:
      with np.load(directory / MASKS_NPZ, allow_pickle=False) as npz:
        _check_keys(npz, f'{directory / MASKS_NPZ}', n, problems, extra_ok=(HAS_MASK_KEY,))
        if HAS_MASK_KEY not in npz.files:
          problems.append(f'{directory / MASKS_NPZ}: no {HAS_MASK_KEY!r} array')
        _raise_problems(problems, directory)
        masks = [npz[array_key(i)] for i in range(n)]
        if not np.array_equal(npz[HAS_MASK_KEY], has_mask):
          problems.append(f'{MASKS_NPZ}[{HAS_MASK_KEY!r}] disagrees with the has_mask column of '
                          f'{SCORES_CSV}')
    else:
      masks, has_mask = masks_from_folder(ground_truth, names, defect_types, shapes, problems)
    for i, (m, s) in enumerate(zip(masks, shapes)):
      if m.shape != s and ground_truth is None:
        problems.append(f'{MASKS_NPZ}[{array_key(i)}] ({names[i]}): mask {m.shape} but map {s}')
    _raise_problems(problems, directory if ground_truth is None else f'{directory} with '
                    f'--ground_truth={ground_truth}')
  with open(directory / RUN_JSON) as f:
    run = json.load(f)
  metrics = None
  if (directory / METRICS_JSON).is_file():
    with open(directory / METRICS_JSON) as f:
      metrics = json.load(f)
  components = {k: np.array(v, np.float64) for k, v in cols.items()
                if k not in SCORE_COLUMNS and k != OVERLAY_COLUMN}
  return Export(directory=directory, filenames=names, labels=np.array(cols['label'], np.int32),
                defect_types=defect_types, has_mask=has_mask,
                scores=np.array(cols['score'], np.float64), components=components,
                overlays=np.array(cols[OVERLAY_COLUMN], dtype=object), maps=maps, masks=masks,
                run=run, metrics=metrics)


# --------------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(export: Export) -> dict[str, dict[str, Any]]:
  """Metrics per defect type and 'overall' ({image_auroc, pixel_auroc, au_pro, num_images}), as
  `metrics.per_defect_type` computes them at the end of training."""
  if np.unique(export.labels).size != 2:
    raise ExportError(f'{export.directory}: metrics need normal and anomalous images; the labels '
                      f'are all {int(export.labels[0]) if len(export) else "absent"}')
  return metrics_lib.per_defect_type(export.scores, export.labels, export.defect_types,
                                     maps=export.maps, masks=export.masks,
                                     has_mask=export.has_mask)


def format_metric(v: Optional[float], digits: int = 4) -> str:
  return 'n/a' if v is None else f'{v:.{digits}f}'


def format_table(per_type: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: one line per defect type and 'overall'."""
  lines = [f"{'defect type':<16} {'n':>6} {'image AUROC':>12} {'pixel AUROC':>12} {'AU-PRO':>8}"]
  for name, m in per_type.items():
    lines.append(f"{name:<16} {m.get('num_images', ''):>6} {format_metric(m['image_auroc']):>12} "
                 f"{format_metric(m['pixel_auroc']):>12} {format_metric(m['au_pro']):>8}")
  return '\n'.join(lines)


def format_markdown(per_type: dict[str, dict[str, Any]]) -> str:
  lines = ['| defect type | images | image AUROC | pixel AUROC | AU-PRO |',
           '| --- | ---: | ---: | ---: | ---: |']
  for name, m in per_type.items():
    lines.append(f"| {name} | {m.get('num_images', '')} | {format_metric(m['image_auroc'])} | "
                 f"{format_metric(m['pixel_auroc'])} | {format_metric(m['au_pro'])} |")
  return '\n'.join(lines) + '\n'


def write_evaluation(per_type: dict[str, dict[str, Any]], output: str | os.PathLike) -> None:
  """evaluation.csv (exact floats, empty = not available) and evaluation.md in `output`."""
  output = pathlib.Path(output)
  output.mkdir(parents=True, exist_ok=True)
  with open(output / EVALUATION_CSV, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('defect_type', 'num_images') + METRIC_NAMES)
    for name, m in per_type.items():
      writer.writerow([name, m.get('num_images', '')] + [
          '' if m[k] is None else format_float(m[k]) for k in METRIC_NAMES])
  (output / EVALUATION_MD).write_text(format_markdown(per_type))


def read_evaluation_csv(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """evaluation.csv back into the per-type dict of `evaluate`."""
  with open(path, newline='') as f:
    return {row['defect_type']: {'num_images': int(row['num_images']), **{
        k: float(row[k]) if row[k] else None for k in METRIC_NAMES}} for row in csv.DictReader(f)}


# --------------------------------------------------------------------------------------------------
# Command line.

def define_flags() -> None:
  """Defined only when run as a program, so importing this module defines no flags."""
  flags.DEFINE_string('predictions', None, 'An exported split folder (WORKDIR/export/<split>).')
  flags.DEFINE_string('ground_truth', None, 'Optional MVTec AD layout folder to read masks from.')
  flags.DEFINE_string('output', None, 'Where evaluation.csv / .md go (default: --predictions).')
  flags.mark_flag_as_required('predictions')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  try:
    export = read_export(args.predictions, args.ground_truth)
    per_type = evaluate(export)
  except ValueError as e:  # ExportError, or metrics' own input checks: one message, no trace.
    sys.exit(f'error: {e}')
  output = args.output or args.predictions
  write_evaluation(per_type, output)
  print(format_table(per_type))
  print(f'\nwritten: {os.path.join(output, EVALUATION_CSV)}, {os.path.join(output, EVALUATION_MD)}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
