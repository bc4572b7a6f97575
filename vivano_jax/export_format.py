"""The export format: what `export` writes for each split and every reader reads back. No JAX.

One folder per split (WORKDIR/export/<split>/):

  scores.csv    one row per image, in split order: SCORE_COLUMNS, then the score components
                (nll_max, nll_mean, recon, ...), then 'overlay'; floats written exactly
                (`format_float`)
  maps.npz      float32 [H_i, W_i] anomaly map of image i under key `array_key(i)`, at the ground
                truth's native size (the model's S x S when score.native_resolution is off;
                run.json 'maps' says which); np.savez, no pickle (uncompressed: zlib
                saved a tenth of a float32 map's bytes for an eighth of the export's time)
  masks.npz     bool [H_i, W_i] ground truth under the same keys, and 'has_mask' bool [n]
  overlays/     PNG image | map | mask side by side (report.py)
  metrics.json  the metrics computed at export time with training's code (scorer.Scorer.evaluate)
  run.json      config, checkpoint step, thresholds

A folder is written in a hidden sibling and renamed when complete (`atomic_files.atomic_directory`),
so an interrupted export never leaves a table or map that looks complete.

`read_export` can take the masks from an MVTec AD layout folder instead of masks.npz
(`ground_truth`), read as the folder builder reads them: 'good' images and defect types without a
ground-truth folder get all-zero masks (the latter with has_mask False, so pixel metrics skip them,
unless the export scored them against masks: then the missing folder is an error).
"""

import csv
import dataclasses
import os
import pathlib
import re
from typing import Any, Callable, Optional

import numpy as np

from vivano_jax import atomic_files
from vivano_jax import errors
from vivano_jax import ground_truth as ground_truth_lib
from vivano_jax import image_io
from vivano_jax import thresholds
from vivano_jax.tables import METRIC_NAMES

FORMAT_VERSION = 1  # run.json's format_version: what this code writes and reads.
SCORES_CSV = 'scores.csv'
MAPS_NPZ = 'maps.npz'
MASKS_NPZ = 'masks.npz'
METRICS_JSON = 'metrics.json'
RUN_JSON = 'run.json'
OVERLAYS = 'overlays'
HAS_MASK_KEY = 'has_mask'
SCORE_COLUMNS = ('index', 'filename', 'label', 'defect_type', 'has_mask', 'score')
OVERLAY_COLUMN = 'overlay'


class ExportError(errors.DataError):
  """An export folder (or ground-truth folder) that cannot be evaluated; lists every problem."""


def safe_stem(filename: str) -> str:
  """A file-name-safe form of a dataset file name without its extension ('test/a b.png' ->
  'test_a_b'): the stem of overlay and map files, in exports and in predict's outputs alike."""
  stem = os.path.splitext(str(filename))[0]
  return re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('._')[:80] or 'image'


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
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:  # A spreadsheet's BOM is no column.
      return _read_score_rows(path, csv.DictReader(f), problems)
  except UnicodeDecodeError as e:
    problems.append(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})')
    return {}


def _cell(row: dict[str, str], column: str, kind: type) -> Any:
  """row[column] as `kind` (int or float); a ValueError naming the column and its text (what
  int() and float() raise names neither)."""
  text = row[column]
  try:
    return kind(text)
  except ValueError:
    what = 'an integer' if kind is int else 'a number'
    raise ValueError(f'{column} {text!r} is not {what}') from None


def _read_score_rows(path: pathlib.Path, reader: csv.DictReader, problems: list[str]
                     ) -> dict[str, list]:
  header = reader.fieldnames or []
  missing = [c for c in SCORE_COLUMNS if c not in header]
  if missing:
    problems.append(f'{path}: missing columns {missing} (has {header})')
    return {}
  components = [c for c in header if c not in SCORE_COLUMNS and c != OVERLAY_COLUMN]
  cols = {c: [] for c in (*SCORE_COLUMNS, *components, OVERLAY_COLUMN)}
  seen = {}  # (defect type, filename) -> line: one image, one row (masks are found by them).
  for row_number, row in enumerate(reader, start=2):
    try:
      # csv.DictReader fills a short line with None and keys a long line's extra fields None.
      if None in row or None in row.values():
        fields = sum(v is not None for v in row.values() if not isinstance(v, list)) + len(
            row.get(None, ()))
        raise ValueError(f'{fields} fields, the header {len(header)} (an unquoted comma, or a '
                         'line cut short?)')
      key = (row['defect_type'], row['filename'])
      if row['defect_type'] == 'overall':  # metrics.per_defect_type's row of all images.
        raise ValueError("defect type 'overall' is the name of the metrics' row of all images, "
                         'which would replace this type\'s row; rename it')
      if key in seen:
        raise ValueError(f'{row["filename"]} ({row["defect_type"]}) is listed twice (line '
                         f'{seen[key]} too)')
      seen[key] = row_number
      index = _cell(row, 'index', int)
      if index != len(cols['index']):
        raise ValueError(f'index {index}, expected {len(cols["index"])} (rows in split order)')
      cols['index'].append(index)
      cols['filename'].append(row['filename'])
      label = _cell(row, 'label', int)
      if label not in (0, 1):
        raise ValueError(f'label {label}; labels are 0 (normal) or 1 (anomalous)')
      cols['label'].append(label)
      cols['defect_type'].append(row['defect_type'])
      has_mask = _cell(row, 'has_mask', int)
      if has_mask not in (0, 1):
        raise ValueError(f'has_mask {has_mask}; it is 0 (no mask) or 1')
      cols['has_mask'].append(bool(has_mask))
      score = _cell(row, 'score', float)
      if not np.isfinite(score):
        raise ValueError(f'score {row["score"]!r} of {row["filename"]} is not a finite number')
      cols['score'].append(score)
      for c in components:
        cols[c].append(_cell(row, c, float) if row[c] else np.nan)
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


def _open_npz(path: pathlib.Path, problems: list[str], where: Any):
  """np.load of an npz archive of plain arrays (never pickle); one ExportError when the file is
  truncated, not an npz archive, or holds pickled objects."""
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise ValueError('a single array, not an archive of one array per image')
    return npz
  except Exception as e:  # pylint: disable=broad-except  (BadZipFile, ValueError, OSError, ...)
    problems.append(f'{path}: not a readable npz archive of arrays ({type(e).__name__}: '
                    f'{str(e).splitlines()[0] if str(e) else ""}); export the run again')
    _raise_problems(problems, where)


def _arrays(npz, n: int, path: pathlib.Path, problems: list[str], where: Any) -> list[np.ndarray]:
  try:
    return [npz[array_key(i)] for i in range(n)]
  except Exception as e:  # pylint: disable=broad-except  (pickled objects, a damaged member)
    problems.append(f'{path}: an unreadable array ({type(e).__name__}: {e}); export the run again')
    _raise_problems(problems, where)


def _read_arrays(directory: pathlib.Path, names: np.ndarray, defect_types: np.ndarray,
                 has_mask: np.ndarray, ground_truth: Optional[str], problems: list[str]
                 ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
  """maps.npz, and the masks from masks.npz or the ground-truth folder: (maps, masks, has_mask)."""
  n = len(names)
  with _open_npz(directory / MAPS_NPZ, problems, directory) as npz:
    _check_keys(npz, f'{directory / MAPS_NPZ}', n, problems)
    _raise_problems(problems, directory)
    maps = _arrays(npz, n, directory / MAPS_NPZ, problems, directory)
  for i, m in enumerate(maps):
    if m.ndim != 2 or m.dtype != np.float32:
      problems.append(f'{directory / MAPS_NPZ}[{array_key(i)}] ({names[i]}): {m.dtype} '
                      f'{m.shape}, expected float32 [H, W]')
    elif not np.isfinite(m).all():
      problems.append(f'{directory / MAPS_NPZ}[{array_key(i)}] ({names[i]}): '
                      f'{int((~np.isfinite(m)).sum())} values are not finite (NaN or infinite)')
  shapes = [m.shape for m in maps]
  if ground_truth is not None:
    masks, has_mask = ground_truth_lib.masks_from_folder(ground_truth, names, defect_types,
                                                         shapes, problems, expected=has_mask)
    _raise_problems(problems, f'{directory} with --ground_truth={ground_truth}')
    return maps, masks, has_mask
  with _open_npz(directory / MASKS_NPZ, problems, directory) as npz:
    _check_keys(npz, f'{directory / MASKS_NPZ}', n, problems, extra_ok=(HAS_MASK_KEY,))
    if HAS_MASK_KEY not in npz.files:
      problems.append(f'{directory / MASKS_NPZ}: no {HAS_MASK_KEY!r} array')
    _raise_problems(problems, directory)
    masks = _arrays(npz, n, directory / MASKS_NPZ, problems, directory)
    try:
      stored = npz[HAS_MASK_KEY] if HAS_MASK_KEY in npz.files else has_mask
    except ValueError as e:  # An object (pickled) array: never loaded.
      problems.append(f'{directory / MASKS_NPZ}[{HAS_MASK_KEY!r}]: unreadable ({e})')
      _raise_problems(problems, directory)
    if not np.array_equal(stored, has_mask):
      problems.append(f'{MASKS_NPZ}[{HAS_MASK_KEY!r}] disagrees with the has_mask column of '
                      f'{SCORES_CSV}')
  for i, (m, s) in enumerate(zip(masks, shapes)):
    if m.shape != s:
      problems.append(f'{MASKS_NPZ}[{array_key(i)}] ({names[i]}): mask {m.shape} but map {s}')
  _raise_problems(problems, directory)
  return maps, masks, has_mask


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_run(run: dict[str, Any], path: pathlib.Path) -> None:
  """run.json's fields that reports read: the format's version, the score section, the
  thresholds record."""
  version = run.get('format_version', FORMAT_VERSION)
  if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
    raise errors.DataError(f'{path}: corrupt or newer (format_version {version!r}): this '
                           f'vivano_jax reads exports up to version {FORMAT_VERSION} (update it, '
                           'or export the run again)')
  if not isinstance(run.get('score', {}), dict):
    raise errors.DataError(f'{path}: corrupt (score {run["score"]!r}, not an object)')
  record = run.get('thresholds')
  if record is None:
    return
  if not isinstance(record, dict):
    raise errors.DataError(f'{path}: corrupt (thresholds {record!r}, not an object)')
  thresholds.check_record(record, path)
  quantile, f1 = record.get('quantile'), record.get('f1')
  if (not isinstance(record.get('num_normal'), int) or not isinstance(record.get('source'), str)
      or not isinstance(quantile, dict) or not _is_number(quantile.get('q'))
      or not (f1 is None or isinstance(f1, dict) and all(_is_number(f1.get(k))
                                                         for k in ('threshold', 'f1')))):
    raise errors.DataError(f'{path}: corrupt (thresholds: num_normal, source, quantile.q or f1 '
                           'missing or of another type); export the run again')


def _check_metrics(metrics: dict[str, Any], path: pathlib.Path) -> None:
  """metrics.json: {defect type: {image_auroc, pixel_auroc, au_pro: a number or null, ...}}."""
  for name, values in metrics.items():
    if not isinstance(values, dict) or not all(
        k in values and (values[k] is None or _is_number(values[k])) for k in METRIC_NAMES):
      raise errors.DataError(f'{path}: corrupt ({name!r} does not hold {", ".join(METRIC_NAMES)} '
                             'as numbers or null); export the run again')


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
  names = np.array(cols['filename'], dtype=object)
  defect_types = np.array(cols['defect_type'], dtype=object)
  has_mask = np.array(cols['has_mask'], dtype=bool)
  maps = masks = None
  if load_maps:
    maps, masks, has_mask = _read_arrays(directory, names, defect_types, has_mask, ground_truth,
                                         problems)
  run = atomic_files.read_json_object(directory / RUN_JSON)
  _check_run(run, directory / RUN_JSON)
  metrics = None
  if (directory / METRICS_JSON).is_file():
    metrics = atomic_files.read_json_object(directory / METRICS_JSON)
    _check_metrics(metrics, directory / METRICS_JSON)
  components = {k: np.array(v, np.float64) for k, v in cols.items()
                if k not in SCORE_COLUMNS and k != OVERLAY_COLUMN}
  return Export(directory=directory, filenames=names, labels=np.array(cols['label'], np.int32),
                defect_types=defect_types, has_mask=has_mask,
                scores=np.array(cols['score'], np.float64), components=components,
                overlays=np.array(cols[OVERLAY_COLUMN], dtype=object), maps=maps, masks=masks,
                run=run, metrics=metrics)


# --------------------------------------------------------------------------------------------------
# Writing an export.


def write_split(directory: pathlib.Path, table: dict[str, np.ndarray],
                components: dict[str, np.ndarray], maps: list[np.ndarray], masks: list[np.ndarray], overlays: dict[int, str],
                draw_overlay: Callable[[int, pathlib.Path], None],
                metrics: Optional[dict[str, Any]], run: dict[str, Any]) -> None:
  """Writes one exported split atomically.

  Args:
    directory: WORKDIR/export/<split>.
    table: the SCORE_COLUMNS other than 'index' ({'filename', 'label', 'defect_type', 'has_mask',
      'score'}), each [n] in split order.
    components: {name: [n]} image score components.
    maps, masks: n float32 / bool [H_i, W_i].
    overlays: {image index: file name under OVERLAYS} of the images that get an overlay;
    draw_overlay: (image index, path) -> writes that overlay.
    metrics: per defect type, or None for a split without both classes.
    run: the run.json record.
  """
  n = len(maps)
  keys = [array_key(i) for i in range(n)]
  paths = {i: f'{OVERLAYS}/{name}' for i, name in overlays.items()}
  with atomic_files.atomic_directory(directory) as tmp:
    names = list(components)
    with open(tmp / SCORES_CSV, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(SCORE_COLUMNS + tuple(names) + (OVERLAY_COLUMN,))
      for i in range(n):
        writer.writerow([i, table['filename'][i], int(table['label'][i]), table['defect_type'][i],
                         int(table['has_mask'][i]), format_float(table['score'][i])]
                        + [format_float(components[c][i]) for c in names] + [paths.get(i, '')])
    np.savez(tmp / MAPS_NPZ, **{k: np.asarray(m, np.float32) for k, m in zip(keys, maps)})
    np.savez_compressed(tmp / MASKS_NPZ, **{k: np.asarray(m, bool) for k, m in zip(keys, masks)},
                        **{HAS_MASK_KEY: np.asarray(table['has_mask'], bool)})
    (tmp / OVERLAYS).mkdir()
    for i in sorted(paths):
      draw_overlay(i, tmp / paths[i])
    if metrics is not None:
      atomic_files.write_json(tmp / METRICS_JSON, metrics)
    atomic_files.write_json(tmp / RUN_JSON, run)
