"""Gathering a sweep's results: one row per run (its swept fields and metrics), runs that differ
only in one field (the seed) pooled into mean and sample standard deviation, as CSV and Markdown."""

from collections.abc import Mapping, Sequence
import csv
import io
import json
import math
import os
from typing import Any, Optional

from vivano_jax import atomic_files
from vivano_jax import config_defaults
from vivano_jax import errors
from vivano_jax.config_files import flatten
from vivano_jax.sweep.plan import SweepError, name_part

METRIC_COLUMNS = ('image_auroc', 'pixel_auroc', 'au_pro', 'train_images_per_sec',
                  'score_images_per_sec')
SPREAD_METRICS = ('image_auroc', 'pixel_auroc', 'au_pro')


def _read_json(path: str) -> Optional[dict[str, Any]]:
  if not os.path.isfile(path):
    return None
  return atomic_files.read_json_object(path)


def _corrupt(path: str, what: str) -> errors.DataError:
  return errors.DataError(f'{path}: corrupt ({what})')


def _read_plan(root: str) -> dict[str, Any]:
  """ROOT/sweep.json (or an empty plan), its fields and run names checked."""
  path = os.path.join(root, 'sweep.json')
  plan = _read_json(path) or {'fields': [], 'runs': []}
  fields, runs = plan.get('fields', []), plan.get('runs', [])
  if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
    raise _corrupt(path, "'fields' is not a list of field names")
  if not isinstance(runs, list):
    raise _corrupt(path, "'runs' is not a list")
  for i, r in enumerate(runs):
    if not isinstance(r, dict) or not isinstance(r.get('name'), str) or not r['name']:
      raise _corrupt(path, f'runs[{i}] has no name')
  return {'fields': fields, 'runs': runs}


def _read_record(root: str, name: str, planned: dict[str, Any]) -> dict[str, Any]:
  """Run NAME's sweep_run.json, else its entry in the plan; 'flags' and 'overrides' checked."""
  path = os.path.join(root, name, 'sweep_run.json')
  record = _read_json(path)
  if record is None:
    path, record = os.path.join(root, 'sweep.json'), planned
  for key in ('flags', 'overrides'):
    if not isinstance(record.get(key, {}), dict):
      raise _corrupt(path, f'{key!r} of run {name} is not an object')
  return record


def _read_metrics(path: str) -> Optional[dict[str, Any]]:
  """A run's metrics.json (None if absent), the values gather reads checked."""
  m = _read_json(path)
  if m is None:
    return None
  metrics = m.get('metrics', {})
  if not isinstance(metrics, dict) or not isinstance(metrics.get('overall', {}), dict):
    raise _corrupt(path, "'metrics' holds no 'overall' object")
  values = {c: metrics.get('overall', {}).get(c) for c in SPREAD_METRICS}
  values |= {c: m.get(c) for c in METRIC_COLUMNS if c not in SPREAD_METRICS}
  for c, v in values.items():
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
      raise _corrupt(path, f'{c} is {v!r}, not a number')
  return m


def _read_runs(root: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """ROOT's plan (or an empty one) and its runs: those in the plan (in sweep order), then any
  other subfolder holding a config.json, metrics.json or sweep_run.json."""
  plan = _read_plan(root)
  planned = {r['name']: r for r in plan['runs']}
  names = list(planned)
  markers = ('config.json', 'metrics.json', 'sweep_run.json')
  names += sorted(d for d in os.listdir(root) if d not in planned and os.path.isdir(
      os.path.join(root, d)) and any(os.path.isfile(os.path.join(root, d, m)) for m in markers))
  runs = []
  for name in names:
    workdir = os.path.join(root, name)
    config_path = os.path.join(workdir, 'config.json')
    config = _read_json(config_path)
    record = _read_record(root, name, planned.get(name, {}))
    # Fields a run's config.json lacks (added since) are compared at the value it ran with.
    config = config_defaults.completed(config, config_path) if config else None
    runs.append({'name': name, 'config': flatten(config) if config else None,
                 'flags': record.get('flags', {}), 'overrides': record.get('overrides', {}),
                 'metrics': _read_metrics(os.path.join(workdir, 'metrics.json'))})
  return plan, runs


def not_finite(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """'run: metric' for every metric a finished run recorded as NaN or infinite (the tables keep
  it: a mean over its group is then NaN too, and the plot leaves the group out)."""
  return [f"{r['run']}: {c}={r[c]}" for r in rows for c in METRIC_COLUMNS
          if isinstance(r.get(c), float) and not math.isfinite(r[c])]


def gather(root: str) -> tuple[list[str], list[dict[str, Any]]]:
  """Reads every run under ROOT: returns (columns, rows), one row per run.

  Runs are those in ROOT/sweep.json (in sweep order), then any other subfolder holding a
  config.json, metrics.json or sweep_run.json. Swept-field columns are the plan's fields plus any
  config field whose value differs between runs; values are what each run used (its config.json,
  else its planned flags).
  Status is 'done' (metrics.json present) or 'missing'.
  """
  root = os.path.abspath(root)
  if not os.path.isdir(root):
    raise SweepError(f'--root={root} is not a folder')
  plan, runs = _read_runs(root)
  fields = list(plan['fields'])
  for r in runs:
    fields += [f for f in r['overrides'] if f not in fields]
  configs = [r['config'] for r in runs if r['config']]
  if len(configs) > 1:
    every = sorted(set().union(*configs))
    fields += [f for f in every if f not in fields and
               len({json.dumps(c.get(f), sort_keys=True) for c in configs}) > 1]

  columns = ['run', 'status'] + fields + list(METRIC_COLUMNS)
  rows = []
  for r in runs:
    row = {'run': r['name'], 'status': 'done' if r['metrics'] else 'missing'}
    for f in fields:
      row[f] = r['config'].get(f) if r['config'] and f in r['config'] else r['flags'].get(f)
    m = r['metrics'] or {}
    overall = m.get('metrics', {}).get('overall', {})
    for c in METRIC_COLUMNS:
      row[c] = overall.get(c) if c in ('image_auroc', 'pixel_auroc', 'au_pro') else m.get(c)
    rows.append(row)
  return columns, rows


def _md_cell(column: str, value: Any) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    if column in ('image_auroc', 'pixel_auroc', 'au_pro'):
      return f'{value:.4f}'
    if column.endswith('images_per_sec'):
      return f'{value:.1f}'
    return f'{value:.4g}'
  return str(value).replace('|', '\\|')


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
  header = {'image_auroc': 'image AUROC', 'pixel_auroc': 'pixel AUROC', 'au_pro': 'AU-PRO',
            'train_images_per_sec': 'train img/s', 'score_images_per_sec': 'score img/s'}
  lines = ['| ' + ' | '.join(header.get(c, c) for c in columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  lines += ['| ' + ' | '.join(_md_cell(c, r[c]) for c in columns) + ' |' for r in rows]
  missing = [r['run'] for r in rows if r['status'] != 'done']
  if missing:
    lines += ['', f'missing ({len(missing)} of {len(rows)}, no metrics.json): '
              + ', '.join(missing)]
  return '\n'.join(lines) + '\n'


def _write_csv(path: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(columns))
  writer.writeheader()
  for r in rows:
    writer.writerow({c: '' if r[c] is None else r[c] for c in columns})
  atomic_files.write_text(path, buffer.getvalue(), newline='')


def write_results(root: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
  """Writes ROOT/results.csv and ROOT/results.md; returns the Markdown."""
  _write_csv(os.path.join(root, 'results.csv'), columns, rows)
  md = markdown_table(columns, rows)
  atomic_files.write_text(os.path.join(root, 'results.md'), md)
  return md



def summarize(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], over: str = 'seed',
              ignore: Sequence[str] = ()) -> tuple[list[str], list[dict[str, Any]]]:
  """Pools runs that differ only in the field `over` (e.g. 'seed'): one row per group.

  Takes `gather`'s (columns, rows). Runs are grouped by their name without the `<over>=` part
  ('base' if nothing is left); finished runs of one group must agree on every other field. A
  group's row has that name, the other swept fields, n (finished runs), `over`'s values of those
  runs, and for image AUROC, pixel AUROC and AU-PRO the mean and sample standard deviation
  (ddof = 1; None when n < 2), plus the mean train images/s. Groups keep the order of their first
  run; a group with no finished run is kept with n = 0. Fields in `ignore` are left out of that
  check and of the table: differences the user knows change nothing (one data folder reached by
  two paths).
  """
  metric_start = columns.index(METRIC_COLUMNS[0])
  fields = list(columns[2:metric_start])
  if over not in fields:
    raise SweepError(f'--over={over}: not a field that differs between the runs (fields: '
                     f'{", ".join(fields) or "none"})')
  unknown = sorted(set(ignore) - set(fields))
  if unknown:
    raise SweepError(f'--ignore={",".join(unknown)}: not a field that differs between the runs '
                     f'(fields: {", ".join(fields) or "none"})')
  others = [f for f in fields if f != over and f not in ignore]
  label = over.rsplit('.', 1)[-1]
  # Pooled by name: sweep run names are made from the swept values, so runs that differ only in
  # `over` share their name without it, whether or not they have run (an unstarted run has no
  # config.json to compare).
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for row in rows:
    parts = [p for p in row['run'].split(',')
             if not p.startswith(f'{label}=') and not p.startswith(f'{over}=')]
    groups.setdefault(','.join(parts) or 'base', []).append(row)
  out_columns = ['group'] + others + ['n', over]
  for m in SPREAD_METRICS:
    out_columns += [f'{m}_mean', f'{m}_std']
  out_columns += ['train_images_per_sec_mean']
  out_rows = []
  for group, members in groups.items():
    done = [r for r in members if r['status'] == 'done']
    settings = {json.dumps([r[f] for f in others], sort_keys=True, default=repr): r['run']
                for r in done}
    if len(settings) > 1:
      raise SweepError(f'--over={over}: runs {", ".join(settings.values())} share the group '
                       f'{group!r} but differ in other fields than {over} (--ignore=FIELD '
                       'leaves out a difference that changes nothing)')
    row = {'group': group, **{f: (done or members)[0][f] for f in others},
           'n': len(done), over: ','.join(str(r[over]) for r in done)}
    for m in SPREAD_METRICS + ('train_images_per_sec',):
      values = [float(r[m]) for r in done if r[m] is not None]
      mean = math.fsum(values) / len(values) if values else None
      row[f'{m}_mean'] = mean
      if m in SPREAD_METRICS:
        row[f'{m}_std'] = (math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
                           if len(values) > 1 else None)
    out_rows.append(row)
  return out_columns, out_rows


def spread_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
  """Markdown for `summarize`'s rows: mean +- std per metric."""
  fields = columns[1:columns.index('n') + 2]
  header = ['group'] + fields + ['image AUROC', 'pixel AUROC', 'AU-PRO', 'train img/s']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  for r in rows:
    cells = [r['group']] + [_md_cell(f, r[f]) for f in fields]
    for m in SPREAD_METRICS:
      mean, std = r[f'{m}_mean'], r[f'{m}_std']
      cells.append('-' if mean is None else f'{mean:.3f}' if std is None
                   else f'{mean:.3f} ± {std:.3f}')
    speed = r['train_images_per_sec_mean']
    cells.append('-' if speed is None else f'{speed:.1f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_summary(root: str, over: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
                  ) -> str:
  """Writes ROOT/results_over_<over>.csv and .md; returns the Markdown."""
  stem = os.path.join(root, f'results_over_{name_part(over)}')
  _write_csv(stem + '.csv', columns, rows)
  md = spread_table(columns, rows)
  atomic_files.write_text(stem + '.md', md)
  return md
