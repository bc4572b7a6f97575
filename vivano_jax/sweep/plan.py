"""A sweep's plan: its file read and checked against the base config, expanded into runs, each
with its name, its flags for main and the learning rate and warmup it will train with."""

from collections.abc import Mapping, Sequence
import copy
import dataclasses
import hashlib
import itertools
import json
import os
from typing import Any, Optional

import ml_collections

from vivano_jax import config_checks
from vivano_jax import config_files
from vivano_jax import errors
from vivano_jax import optimizer
from vivano_jax.config_files import flatten

SWEEP_KEYS = ('base_config', 'grid', 'runs', 'fixed')
# Sweep keys of earlier versions, now config fields.
MOVED_KEYS = {'lr_scaling': 'train.lr_scaling', 'base_batch_size': 'train.base_batch_size'}
MAX_NAME_LENGTH = 120  # Keeps workdir names well under filesystem limits (255 bytes).


class SweepError(errors.UsageError):
  """Bad sweep input; the message names the sweep file (or root) and the field."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  index: position in the expanded sweep (what --only selects); name: its workdir under the root;
  overrides: the swept values as the sweep file gives them (the name is made from these);
  flags: every `--config.<field>` value passed to main: fixed, command line, swept;
  effective: the peak learning rate, warmup steps and rate factor the run will train with
    (optimizer.scaled_hyperparameters of its config, which main records in config.json).
  """
  index: int
  name: str
  overrides: dict[str, Any]
  flags: dict[str, Any]
  effective: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """An expanded sweep: the file, its absolute base config path, the swept fields, the runs."""
  path: str
  base_config: str
  fields: list[str]
  runs: list[Run]


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The Cartesian product of a {field: [values]} grid, the last field varying fastest."""
  fields = list(grid)
  for f in fields:
    if isinstance(grid[f], (str, bytes)) or not isinstance(grid[f], Sequence) or not grid[f]:
      raise ValueError(f'grid field {f!r} must be a non-empty list of values, got {grid[f]!r}')
  return [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]


def _format(value: Any, quote: bool, inner: bool = False) -> str:
  """A float in its shortest exact form (0.001, 1e-05), a tuple as a Python literal (its strings
  quoted when `quote`), anything else as str."""
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    items = ', '.join(_format(v, quote, inner=True) for v in value)
    return '(' + items + (',)' if len(value) == 1 else ')')
  return repr(value) if quote and inner and isinstance(value, str) else str(value)


def format_value(value: Any) -> str:
  """A value as a `--config.<field>=` flag reads it: a string as it is, a tuple's strings quoted
  (ml_collections reads an unquoted `(a, b)` as the one string '(a, b)')."""
  return _format(value, quote=True)


def name_part(value: Any) -> str:
  """A value as run names show it: what a folder name should not hold ('/', spaces, quotes, ...)
  replaced by '_'."""
  text = _format(value, quote=False)
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
    name = ','.join(f'{label[f]}={name_part(v)}' for f, v in o.items()) or 'base'
    if len(name) > MAX_NAME_LENGTH:
      name = name[:MAX_NAME_LENGTH - 9] + '-' + digest(o)
    names.append(name)
  for i, o in enumerate(overrides):
    if names.count(names[i]) > 1 and not names[i].endswith(digest(o)):
      clashing = [j for j, n in enumerate(names) if n == names[i]]
      for j in clashing:
        names[j] = f'{names[j]}-{digest(overrides[j])}'
  return names


# --------------------------------------------------------------------------------------------------
# Reading a sweep file.


def _read_spec(path: str) -> dict[str, Any]:
  """get_sweep()'s dict, its keys checked."""
  # A missing or broken file stays a DataError (exit code 1).
  get_sweep = config_files.load_function(path, 'get_sweep', 'sweep file')
  try:
    spec = get_sweep()
  except Exception as e:  # pylint: disable=broad-except  (The file's own code: one line.)
    raise errors.DataError(f'sweep file {path}: get_sweep() failed: {type(e).__name__}: '
                           f'{e}') from e
  if isinstance(spec, ml_collections.ConfigDict):
    spec = {k: spec[k] for k in spec.keys()}
  if not isinstance(spec, Mapping):
    raise SweepError(f'{path}: get_sweep() must return a dict or ConfigDict, got '
                     f'{type(spec).__name__}')
  unknown = sorted(set(spec) - set(SWEEP_KEYS))
  if unknown:
    moved = [f'{k} is the config field {MOVED_KEYS[k]!r} now (set it in fixed, grid or runs)'
             for k in unknown if k in MOVED_KEYS]
    raise SweepError(f'{path}: unknown sweep key(s) {unknown}; known: {list(SWEEP_KEYS)}'
                     + ''.join(f'; {m}' for m in moved))
  if not spec.get('base_config'):
    raise SweepError(f'{path}: base_config is missing')
  if not isinstance(spec['base_config'], (str, os.PathLike)):
    raise SweepError(f'{path}: base_config must be the path of a config file, got '
                     f'{spec["base_config"]!r}')
  for key in ('grid', 'fixed'):  # A list or a string here failed with a traceback.
    if spec.get(key) is not None and not isinstance(spec[key], (Mapping,
                                                                ml_collections.ConfigDict)):
      raise SweepError(f'{path}: {key} must be a dict of field -> '
                       f'{"list of values" if key == "grid" else "value"}, got {spec[key]!r}')
  return dict(spec)


def _expand(path: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The runs' overrides, from the grid or the explicit list."""
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
    if not overrides:
      raise SweepError(f'{path}: runs is empty: list at least one run (an empty dict runs the base '
                       'config as it is)')
  for i, o in enumerate(overrides):
    for j in range(i):
      if overrides[j] == o:
        raise SweepError(f'{path}: runs {j} and {i} have the same overrides {o}')
  return overrides


def _check_fields(path: str, base_path: str, base: ml_collections.ConfigDict,
                  fields: Sequence[str], source: str) -> None:
  for field in fields:
    try:
      config_files.get_field(base, field)
    except config_files.UnknownFieldError as e:
      raise SweepError(f'{path}: unknown config field {field!r} in {source} (base config '
                       f'{base_path}){e.hint}') from None


def _command_line_values(path: str, base_path: str, base: ml_collections.ConfigDict,
                         extra_flags: Mapping[str, str], overrides: Sequence[Mapping[str, Any]]
                         ) -> dict[str, Any]:
  """The command line's {field: text}, typed as main will read them.

  A field that some runs set themselves keeps their value there (textures runs set an empty
  dataset.manual_dir, so a Magnetic Tile folder given on the command line reaches only the runs
  that read it); one that every run sets would do nothing, which is an error.
  """
  _check_fields(path, base_path, base, list(extra_flags), 'the command line')
  values = {}
  for field, text in extra_flags.items():
    if overrides and all(field in o for o in overrides):
      raise SweepError(f'{path}: field {field!r} is swept and also set in the command line')
    try:
      values[field] = config_files.parse_override(base, field, text)
    except errors.UsageError as e:
      raise SweepError(f'{path}: {e}') from e
  return values


def load_sweep(path: str, extra_flags: Optional[Mapping[str, str]] = None) -> Sweep:
  """Reads and expands a sweep file; every field is checked against the base config.

  extra_flags: {field: text} from the command line, for every run that does not set the field
  itself; they override the sweep's `fixed`. Raises SweepError naming the sweep file and the
  offending field.
  """
  path = os.path.abspath(path)
  spec = _read_spec(path)
  base_path = os.path.normpath(os.path.join(os.path.dirname(path), spec['base_config']))
  try:
    base = config_files.load_config(base_path, what='base config')
  except errors.DataError as e:
    raise errors.DataError(f'{path}: {e}') from e
  except Exception as e:  # pylint: disable=broad-except  (get_config's own code: one line.)
    raise errors.DataError(f'{path}: base config {base_path}: get_config() failed: '
                           f'{type(e).__name__}: {e}') from e
  if not isinstance(base, ml_collections.ConfigDict):
    raise errors.DataError(f'{path}: base config {base_path}: get_config() returned a value of '
                           f'type {type(base).__name__}, not an ml_collections.ConfigDict')
  overrides = _expand(path, spec)
  fixed = flatten(spec.get('fixed') or {})
  swept = list(dict.fromkeys(f for o in overrides for f in o))
  _check_fields(path, base_path, base, list(fixed), 'fixed')
  _check_fields(path, base_path, base, swept, 'grid' if spec.get('grid') is not None else 'runs')
  for field in swept:
    if field in fixed:
      raise SweepError(f'{path}: field {field!r} is swept and also set in fixed')
  extra = _command_line_values(path, base_path, base, extra_flags or {}, overrides)

  runs = []
  for i, (name, o) in enumerate(zip(run_names(overrides), overrides)):
    flags = {**fixed, **extra, **o}
    try:
      config = config_files.apply_overrides(copy.deepcopy(base), flags)
      config_checks.check_all(config)  # What main would refuse, refused before any run starts.
      # Main scales the rate itself (train.lr_scaling); computed here to show it.
      effective = optimizer.scaled_hyperparameters(config)
    except errors.UsageError as e:
      raise SweepError(f'{path}: run {name}: {e}') from e
    runs.append(Run(index=i, name=name, overrides=dict(o), flags=flags, effective=effective))
  return Sweep(path=path, base_config=base_path, fields=swept, runs=runs)
