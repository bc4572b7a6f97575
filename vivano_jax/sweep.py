"""Hyper-parameter sweeps over `python -m vivano_jax.main`: expand a sweep file, run, gather.

A sweep file is Python with `get_sweep()` returning a dict or an `ml_collections.ConfigDict`:

  base_config      config file the runs start from (relative to the sweep file's folder)
  grid             {field: [values, ...]}: every combination (Cartesian product, fields in order),
  runs             or [{field: value, ...}, ...]: an explicit list of runs (exactly one of the two)
  fixed            {field: value} for every run (optional; not part of the run names)
  lr_scaling       None (default), 'linear' or 'sqrt': train.learning_rate is then the rate at
  base_batch_size  B0, and a run with global batch B trains with lr * B / B0 ('linear') or
                   lr * sqrt(B / B0) ('sqrt')

A field is a config path, e.g. 'train.batch_size'. Nested mappings are read as paths too, so a
ConfigDict sweep may write `sweep.grid = {'train': {'batch_size': [16, 32]}}` (ConfigDict keys
cannot hold dots).

Every run gets its own workdir `ROOT/<name>`, the name made from its swept values
(`batch_size=16,learning_rate=0.001`; `base_lr=` with a scaling rule), and is one
`python -m vivano_jax.main` subprocess with `--config.<field>=<value>` flags. A run whose workdir
holds `metrics.json` is finished and skipped, so a stopped sweep restarts where it stopped (an
unfinished run resumes from its last checkpoint).

  python -m vivano_jax.sweep run --sweep=sweeps/example.py --root=runs/example
      [--dry_run] [--only=K[,K...]] [--print_commands] [--launcher='CMD'] [--config.<field>=<value>]
  python -m vivano_jax.sweep gather --root=runs/example [--over=seed]

`run` also writes ROOT/sweep.json (the plan), and per run ROOT/<name>/sweep_run.json (its flags)
and ROOT/<name>/sweep_run.log (its output). Extra `--config.<field>=<value>` flags go to every run
(a data_dir that differs per machine, say). `--launcher` replaces `python -m vivano_jax.main`, e.g.
`--launcher='srun launch/multihost.sh'` inside a multi-node allocation. `gather` writes
ROOT/results.csv and ROOT/results.md: one row per run with the swept fields as the runs used them
(the scaled learning rate, not the base one), image AUROC, pixel AUROC, AU-PRO and train/score
images/s. `gather --over=seed` also pools the runs that differ only in the seed into one row each:
n, mean and sample standard deviation (ROOT/results_over_seed.{csv,md}).
"""

import argparse
import ast
from collections.abc import Iterable, Mapping, Sequence
import copy
import csv
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Optional, TextIO

import ml_collections

from vivano_jax import atomic_files

LR_FIELD = 'train.learning_rate'
BATCH_FIELD = 'train.batch_size'
LR_RULES = ('linear', 'sqrt')
SWEEP_KEYS = ('base_config', 'grid', 'runs', 'fixed', 'lr_scaling', 'base_batch_size')
METRIC_COLUMNS = ('image_auroc', 'pixel_auroc', 'au_pro', 'train_images_per_sec',
                  'score_images_per_sec')
MAX_NAME_LENGTH = 120  # Keeps workdir names well under filesystem limits (255 bytes).


class SweepError(ValueError):
  """Bad sweep input; the message names the sweep file (or root) and the field."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  index: position in the expanded sweep (what --only selects); name: its workdir under the root;
  overrides: the swept values as the sweep file gives them (the name is made from these);
  flags: every `--config.<field>` value passed to main: fixed, command line, swept, scaled learning
    rate.
  """
  index: int
  name: str
  overrides: dict[str, Any]
  flags: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """An expanded sweep: the file, its absolute base config path, the swept fields, the runs."""
  path: str
  base_config: str
  fields: list[str]
  runs: list[Run]


# --------------------------------------------------------------------------------------------------
# Expansion.


def flatten(mapping: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'train': {'batch_size': 8}} or {'train.batch_size': 8} -> {'train.batch_size': 8}."""
  if isinstance(mapping, ml_collections.ConfigDict):
    mapping = mapping.to_dict()
  out = {}
  for key, value in mapping.items():
    path = f'{prefix}{key}'
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out.update(flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The Cartesian product of a {field: [values]} grid, the last field varying fastest."""
  fields = list(grid)
  for f in fields:
    if isinstance(grid[f], (str, bytes)) or not isinstance(grid[f], Sequence) or not grid[f]:
      raise ValueError(f'grid field {f!r} must be a non-empty list of values, got {grid[f]!r}')
  return [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]


def scaled_learning_rate(base_lr: float, batch_size: int, base_batch_size: int,
                         rule: Optional[str]) -> float:
  """The learning rate for global batch `batch_size`, given `base_lr` at `base_batch_size`.

  'linear': base_lr * B / B0 (Goyal et al. 2017, SGD); 'sqrt': base_lr * sqrt(B / B0) (keeps the
  gradient noise scale of Adam-type optimizers); None: base_lr.
  """
  if rule is None:
    return float(base_lr)
  if rule not in LR_RULES:
    raise ValueError(f'lr_scaling must be one of {LR_RULES} or None, got {rule!r}')
  if batch_size <= 0 or base_batch_size <= 0:
    raise ValueError(f'batch sizes must be positive, got {batch_size} and {base_batch_size}')
  ratio = batch_size / base_batch_size
  return float(base_lr * (ratio if rule == 'linear' else math.sqrt(ratio)))


def _format_value(value: Any) -> str:
  """A value as a `--config.<field>=` flag reads it (and as run names show it)."""
  if isinstance(value, float):
    return repr(value)  # Shortest exact form: 0.001, 1e-05.
  if isinstance(value, (tuple, list)):
    return '(' + ', '.join(_format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def _name_part(value: Any) -> str:
  text = _format_value(value)
  return ''.join(c if c.isalnum() or c in '.-+' else '_' for c in text)


def run_names(overrides: Sequence[Mapping[str, Any]], labels: Optional[Mapping[str, str]] = None
              ) -> list[str]:
  """Readable, unique workdir names: 'batch_size=16,learning_rate=0.001' (no '/', no spaces).

  A field is named by `labels[field]` if given, else by its last part unless two swept fields share
  it (then by its full path). Names that still collide after cleaning (e.g. 'a/b' vs 'a_b'), or that
  are too long, get a hash suffix.
  """
  fields = list(dict.fromkeys(f for o in overrides for f in o))
  leaves = [f.rsplit('.', 1)[-1] for f in fields]
  label = {f: (leaf if leaves.count(leaf) == 1 else f) for f, leaf in zip(fields, leaves)}
  label.update(labels or {})
  digest = lambda o: hashlib.sha256(
      json.dumps(o, sort_keys=True, default=repr).encode()).hexdigest()[:8]
  names = []
  for o in overrides:
    name = ','.join(f'{label[f]}={_name_part(v)}' for f, v in o.items()) or 'base'
    if len(name) > MAX_NAME_LENGTH:
      name = name[:MAX_NAME_LENGTH - 9] + '-' + digest(o)
    names.append(name)
  for i, o in enumerate(overrides):
    if names.count(names[i]) > 1 and not names[i].endswith(digest(o)):
      clashing = [j for j, n in enumerate(names) if n == names[i]]
      for j in clashing:
        names[j] = f'{names[j]}-{digest(overrides[j])}'
  return names


def _load_function(path: str, function: str, what: str):
  if not os.path.isfile(path):
    raise SweepError(f'{what} {path} does not exist')
  spec = importlib.util.spec_from_file_location(
      f'_vivano_{what.replace(" ", "_")}_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'{what} {path} failed to load: {type(e).__name__}: {e}') from e
  if not callable(getattr(module, function, None)):
    raise SweepError(f'{what} {path} defines no {function}() function')
  return getattr(module, function)


def _get_field(config: ml_collections.ConfigDict, field: str) -> Any:
  node = config
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise KeyError(field)
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise KeyError(field)  # A section, not a field: main cannot override it with one flag.
  return node


def _set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  parent, _, leaf = field.rpartition('.')
  node = config
  for part in parent.split('.') if parent else []:
    node = node[part]
  node[leaf] = value  # ConfigDict is type-safe: a str for an int field raises TypeError.


def _parse_flag_value(text: str, current: Any) -> Any:
  """A command-line value, typed like the field's current value."""
  if isinstance(current, bool):
    if text.lower() in ('true', '1'):
      return True
    if text.lower() in ('false', '0'):
      return False
    raise ValueError(f'{text!r} is not a boolean')
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _closest(field: str, config: ml_collections.ConfigDict) -> str:
  match = difflib.get_close_matches(field, list(flatten(config)), n=1)
  return f' (did you mean {match[0]!r}?)' if match else ''


def load_sweep(path: str, extra_flags: Optional[Mapping[str, str]] = None) -> Sweep:
  """Reads and expands a sweep file; every field is checked against the base config.

  extra_flags: {field: text} from the command line, applied to every run after the sweep's `fixed`.
  Raises SweepError naming the sweep file and the offending field.
  """
  path = os.path.abspath(path)
  spec = _load_function(path, 'get_sweep', 'sweep file')()
  if isinstance(spec, ml_collections.ConfigDict):
    spec = {k: spec[k] for k in spec.keys()}
  if not isinstance(spec, Mapping):
    raise SweepError(f'{path}: get_sweep() must return a dict or ConfigDict, got '
                     f'{type(spec).__name__}')
  unknown = sorted(set(spec) - set(SWEEP_KEYS))
  if unknown:
    raise SweepError(f'{path}: unknown sweep key(s) {unknown}; known: {list(SWEEP_KEYS)}')
  if not spec.get('base_config'):
    raise SweepError(f'{path}: base_config is missing')
  base_path = os.path.normpath(os.path.join(os.path.dirname(path), spec['base_config']))
  try:
    base = _load_function(base_path, 'get_config', 'base config')()
  except SweepError as e:
    raise SweepError(f'{path}: {e}') from e

  has_grid, has_runs = spec.get('grid') is not None, spec.get('runs') is not None
  if has_grid == has_runs:
    raise SweepError(f'{path}: give exactly one of grid (field -> list of values) or runs (list of '
                     f'override dicts)')
  if has_grid:
    try:
      overrides = expand_grid(flatten(spec['grid']))
    except ValueError as e:
      raise SweepError(f'{path}: {e}') from e
  else:
    if isinstance(spec['runs'], (str, Mapping)) or not isinstance(spec['runs'], Sequence):
      raise SweepError(f'{path}: runs must be a list of override dicts')
    overrides = []
    for i, o in enumerate(spec['runs']):
      if not isinstance(o, (Mapping, ml_collections.ConfigDict)):
        raise SweepError(f'{path}: runs[{i}] must be a dict of field -> value, got {o!r}')
      overrides.append(flatten(o))
  fixed = flatten(spec.get('fixed') or {})
  rule = spec.get('lr_scaling')
  if rule is not None and rule not in LR_RULES:
    raise SweepError(f'{path}: lr_scaling must be one of {LR_RULES} or None, got {rule!r}')
  base_batch = spec.get('base_batch_size')
  if rule is not None and (not isinstance(base_batch, int) or base_batch <= 0):
    raise SweepError(f'{path}: lr_scaling={rule!r} needs base_batch_size, a positive int '
                     f'(the batch size at which the learning rates are given); got {base_batch!r}')

  def check_field(field, source):
    try:
      return _get_field(base, field)
    except KeyError:
      raise SweepError(f'{path}: unknown config field {field!r} in {source} (base config '
                       f'{base_path}){_closest(field, base)}') from None

  extra = {}
  for field, text in (extra_flags or {}).items():
    try:
      extra[field] = _parse_flag_value(text, check_field(field, 'the command line'))
    except ValueError as e:
      raise SweepError(f'{path}: --config.{field}={text}: {e}') from e
  swept = list(dict.fromkeys(f for o in overrides for f in o))
  for field in fixed:
    check_field(field, 'fixed')
  for field in swept:
    check_field(field, 'grid' if has_grid else 'runs')
    for source, values in (('fixed', fixed), ('the command line', extra)):
      if field in values:
        raise SweepError(f'{path}: field {field!r} is swept and also set in {source}')
  for i, o in enumerate(overrides):
    for j in range(i):
      if overrides[j] == o:
        raise SweepError(f'{path}: runs {j} and {i} have the same overrides {o}')

  # With a scaling rule the swept rate is the rate at base_batch_size, not the one the run uses.
  names = run_names(overrides, {LR_FIELD: 'base_lr'} if rule is not None else None)
  runs = []
  for i, (name, o) in enumerate(zip(names, overrides)):
    flags = {**fixed, **extra, **o}
    config = copy.deepcopy(base)
    for field, value in flags.items():
      try:
        _set_field(config, field, value)
      except (TypeError, ValueError) as e:
        raise SweepError(f'{path}: field {field!r} cannot take {value!r} (run {name}): {e}') from e
    if rule is not None:
      # The swept (or base) learning rate is the one at base_batch_size.
      lr = scaled_learning_rate(_get_field(config, LR_FIELD), _get_field(config, BATCH_FIELD),
                                base_batch, rule)
      flags[LR_FIELD] = lr
    runs.append(Run(index=i, name=name, overrides=dict(o), flags=flags))
  return Sweep(path=path, base_config=base_path, fields=swept, runs=runs)


# --------------------------------------------------------------------------------------------------
# Running.


def default_launcher() -> list[str]:
  return [sys.executable, '-m', 'vivano_jax.main']


def main_command(sweep: Sweep, run: Run, root: str, launcher: Optional[Sequence[str]] = None
                 ) -> list[str]:
  """The argv that trains and evaluates `run` in ROOT/<name>."""
  cmd = list(launcher or default_launcher())
  workdir = os.path.join(os.path.abspath(root), run.name)
  cmd += [f'--config={sweep.base_config}', f'--workdir={workdir}']
  cmd += [f'--config.{field}={_format_value(value)}' for field, value in run.flags.items()]
  return cmd


def is_finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, 'metrics.json'))


def _run_record(sweep: Sweep, run: Run) -> dict[str, Any]:
  return {'sweep': sweep.path, 'base_config': sweep.base_config, 'index': run.index,
          'name': run.name, 'overrides': run.overrides, 'flags': run.flags}


def write_plan(sweep: Sweep, root: str) -> None:
  """ROOT/sweep.json: every run of the sweep, so `gather` can list those that never ran."""
  os.makedirs(root, exist_ok=True)
  atomic_files.write_json(os.path.join(root, 'sweep.json'), {
      'sweep': sweep.path, 'base_config': sweep.base_config, 'fields': sweep.fields,
      'runs': [_run_record(sweep, r) for r in sweep.runs]})


def _check_same_run(sweep: Sweep, run: Run, workdir: str) -> None:
  """A workdir started with other flags must not be resumed or skipped as if it were this run."""
  record_path = os.path.join(workdir, 'sweep_run.json')
  if not os.path.isfile(record_path):
    return
  with open(record_path) as f:
    old = json.load(f)
  new = json.loads(json.dumps(_run_record(sweep, run), default=repr))
  if (old.get('flags'), old.get('base_config')) != (new['flags'], new['base_config']):
    diff = sorted(k for k in set(old.get('flags', {})) | set(new['flags'])
                  if old.get('flags', {}).get(k) != new['flags'].get(k))
    raise SweepError(f'{sweep.path}: {workdir} was started with other settings (fields differing: '
                     f'{diff or ["base_config"]}); use another --root, or delete that workdir')


def select(sweep: Sweep, only: Optional[Iterable[int]]) -> list[Run]:
  if only is None:
    return list(sweep.runs)
  chosen = []
  for k in only:
    if not 0 <= k < len(sweep.runs):
      raise SweepError(f'{sweep.path}: --only={k} is out of range: the sweep has {len(sweep.runs)} '
                       f'runs (0 to {len(sweep.runs) - 1})')
    chosen.append(sweep.runs[k])
  return chosen


def _overall(workdir: str) -> dict[str, Any]:
  with open(os.path.join(workdir, 'metrics.json')) as f:
    return json.load(f).get('metrics', {}).get('overall', {})


def run_sweep(sweep: Sweep, root: str, only: Optional[Iterable[int]] = None,
              launcher: Optional[Sequence[str]] = None, dry_run: bool = False,
              out: Optional[TextIO] = None) -> dict[str, str]:
  """Runs the selected runs one after another; returns {name: 'done'|'skipped'|'failed'|'planned'}.

  A failed run does not stop the sweep: its log tail is printed and the next run starts.
  """
  out = out or sys.stdout
  root = os.path.abspath(root)
  runs = select(sweep, only)
  if not dry_run:
    write_plan(sweep, root)
  status = {}
  for k, run in enumerate(runs):
    workdir = os.path.join(root, run.name)
    head = f'[{k + 1}/{len(runs)}] run {run.index} {run.name}'
    _check_same_run(sweep, run, workdir)
    if is_finished(workdir):
      status[run.name] = 'skipped'
      print(f'{head}: finished before (metrics.json), skipped', file=out, flush=True)
      continue
    cmd = main_command(sweep, run, root, launcher)
    if dry_run:
      status[run.name] = 'planned'
      print(f'{head}\n  {shlex.join(cmd)}', file=out, flush=True)
      continue
    os.makedirs(workdir, exist_ok=True)
    atomic_files.write_json(os.path.join(workdir, 'sweep_run.json'), _run_record(sweep, run) | {'command': cmd})
    log_path = os.path.join(workdir, 'sweep_run.log')
    print(f'{head}: running (log {log_path})', file=out, flush=True)
    start = time.perf_counter()
    with open(log_path, 'a') as log:
      log.write(f'$ {shlex.join(cmd)}\n')
      log.flush()
      rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if rc == 130:
      raise KeyboardInterrupt
    if rc == 0 and is_finished(workdir):
      status[run.name] = 'done'
      auroc = _overall(workdir).get('image_auroc')
      shown = 'n/a' if auroc is None else f'{auroc:.4f}'
      print(f'{head}: done in {seconds:.0f} s, image AUROC {shown}', file=out, flush=True)
    else:
      status[run.name] = 'failed'
      with open(log_path) as f:
        tail = ''.join(f.readlines()[-20:])
      print(f'{head}: FAILED (exit code {rc}) after {seconds:.0f} s; end of {log_path}:\n{tail}',
            file=out, flush=True)
  return status


def print_commands(sweep: Sweep, root: str, only: Optional[Iterable[int]] = None,
                   launcher: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> None:
  """One shell command per unfinished run (finished ones left out), to submit as separate jobs.

  Writes the plan (ROOT/sweep.json) too, so `gather` lists runs that never started.
  """
  out = out or sys.stdout
  write_plan(sweep, os.path.abspath(root))
  for run in select(sweep, only):
    if not is_finished(os.path.join(os.path.abspath(root), run.name)):
      print(shlex.join(main_command(sweep, run, root, launcher)), file=out)


# --------------------------------------------------------------------------------------------------
# Gathering.


def _read_json(path: str) -> Optional[dict[str, Any]]:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


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
  plan = _read_json(os.path.join(root, 'sweep.json')) or {'fields': [], 'runs': []}
  planned = {r['name']: r for r in plan['runs']}
  names = list(planned)
  markers = ('config.json', 'metrics.json', 'sweep_run.json')
  names += sorted(d for d in os.listdir(root) if d not in planned and os.path.isdir(
      os.path.join(root, d)) and any(os.path.isfile(os.path.join(root, d, m)) for m in markers))

  runs = []
  for name in names:
    workdir = os.path.join(root, name)
    config = _read_json(os.path.join(workdir, 'config.json'))
    record = _read_json(os.path.join(workdir, 'sweep_run.json')) or planned.get(name, {})
    runs.append({'name': name, 'config': flatten(config) if config else None,
                 'flags': record.get('flags', {}), 'overrides': record.get('overrides', {}),
                 'metrics': _read_json(os.path.join(workdir, 'metrics.json'))})
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
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(columns))
    writer.writeheader()
    for r in rows:
      writer.writerow({c: '' if r[c] is None else r[c] for c in columns})


def write_results(root: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
  """Writes ROOT/results.csv and ROOT/results.md; returns the Markdown."""
  _write_csv(os.path.join(root, 'results.csv'), columns, rows)
  md = markdown_table(columns, rows)
  with open(os.path.join(root, 'results.md'), 'w') as f:
    f.write(md)
  return md


SPREAD_METRICS = ('image_auroc', 'pixel_auroc', 'au_pro')


def summarize(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], over: str = 'seed'
              ) -> tuple[list[str], list[dict[str, Any]]]:
  """Pools runs that differ only in the field `over` (e.g. 'seed'): one row per group.

  Takes `gather`'s (columns, rows). Runs are grouped by their name without the `<over>=` part
  ('base' if nothing is left); finished runs of one group must agree on every other field. A
  group's row has that name, the other swept fields, n (finished runs), `over`'s values of those
  runs, and for image AUROC, pixel AUROC and AU-PRO the mean and sample standard deviation
  (ddof = 1; None when n < 2), plus the mean train images/s. Groups keep the order of their first
  run; a group with no finished run is kept with n = 0.
  """
  metric_start = columns.index(METRIC_COLUMNS[0])
  fields = list(columns[2:metric_start])
  if over not in fields:
    raise SweepError(f'--over={over}: not a field that differs between the runs (fields: '
                     f'{", ".join(fields) or "none"})')
  others = [f for f in fields if f != over]
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
                       f'{group!r} but differ in other fields than {over}')
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
  stem = os.path.join(root, f'results_over_{_name_part(over)}')
  _write_csv(stem + '.csv', columns, rows)
  md = spread_table(columns, rows)
  with open(stem + '.md', 'w') as f:
    f.write(md)
  return md


# --------------------------------------------------------------------------------------------------
# Command line.


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m vivano_jax.sweep',
                                   description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  run = sub.add_parser('run', help='run the sweep (one run after another)',
                       epilog='Extra --config.<field>=<value> flags are passed to every run.')
  run.add_argument('--sweep', required=True, help='sweep file (Python with get_sweep())')
  run.add_argument('--root', required=True, help='folder holding one workdir per run')
  run.add_argument('--dry_run', action='store_true',
                   help='print the runs and commands, run nothing')
  run.add_argument('--only', default=None,
                   help='comma-separated run indices (0-based) to run, e.g. $SLURM_ARRAY_TASK_ID')
  run.add_argument('--print_commands', action='store_true',
                   help='print one command per unfinished run (to submit as separate jobs)')
  run.add_argument('--launcher', default=None,
                   help="command replacing 'python -m vivano_jax.main', e.g. 'launch/multihost.sh'")
  gather_parser = sub.add_parser('gather', help='collect results into ROOT/results.{csv,md}')
  gather_parser.add_argument('--root', required=True)
  gather_parser.add_argument('--over', default=None,
                             help='also pool runs differing only in this field (e.g. seed) into '
                                  'mean +- std: ROOT/results_over_<field>.{csv,md}')
  args, unknown = parser.parse_known_args(argv)
  args.extra = {}
  for arg in unknown:
    if args.command != 'run' or not arg.startswith('--config.') or '=' not in arg:
      parser.error(f'unrecognised argument {arg!r} (run passes on only --config.<field>=<value>)')
    field, _, value = arg[len('--config.'):].partition('=')
    args.extra[field] = value
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  try:
    if args.command == 'gather':
      columns, rows = gather(args.root)
      print(write_results(os.path.abspath(args.root), columns, rows), end='')
      if args.over:
        summary_columns, summary_rows = summarize(columns, rows, args.over)
        print(f'\nover {args.over} (mean ± sample std):\n'
              + write_summary(os.path.abspath(args.root), args.over, summary_columns,
                              summary_rows), end='')
      return 0
    sweep = load_sweep(args.sweep, args.extra)
    only = None
    if args.only is not None:
      try:
        only = [int(k) for k in args.only.split(',') if k.strip()]
      except ValueError:
        raise SweepError(f'--only={args.only!r}: expected run indices like 3 or 0,2') from None
    launcher = shlex.split(args.launcher) if args.launcher else None
    if args.print_commands:
      print_commands(sweep, args.root, only, launcher)
      return 0
    status = run_sweep(sweep, args.root, only, launcher, dry_run=args.dry_run)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    return 130
  failed = [n for n, s in status.items() if s == 'failed']
  counts = {s: list(status.values()).count(s) for s in dict.fromkeys(status.values())}
  print(f'sweep {os.path.basename(sweep.path)}: '
        + ', '.join(f'{n} {s}' for s, n in counts.items()))
  if failed:
    print(f'failed: {", ".join(failed)}', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
