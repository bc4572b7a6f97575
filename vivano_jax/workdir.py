"""The files of a run's workdir that describe the run, and reading them back.

  config.json          the config the run was trained with (train.py writes it first), and under
                       'effective' the learning rate and warmup it trained with (`save_config`)
  metrics.json         the test metrics at the end of training
  checkpoints/         Orbax checkpoints (checkpoints.py)
  thresholds.json      the decision threshold of the exported score (export.py, thresholds.py)
  score_stats.npz      held-out statistics of a standardised score (scoring.py)
  score_selection.json the chosen score under score.select (score_selection.py)
  export/<split>/      exported scores and maps (export_format.py); report/ (report.py)
  .lock                the host and pid of the command writing the workdir (workdir_lock.py)
"""

import json
import os

import jax
import ml_collections

from vivano_jax import atomic_files
from vivano_jax import config_defaults
from vivano_jax import config_files
from vivano_jax import errors
from vivano_jax import optimizer
from vivano_jax.serving import model_dir

CONFIG_JSON = 'config.json'
EFFECTIVE = 'effective'  # config.json's record of the scaled learning rate.
METRICS_JSON = 'metrics.json'


def previous_metric(workdir: str, key: str):
  """`key` of WORKDIR/metrics.json from an earlier run, or None."""
  try:
    with open(os.path.join(workdir, METRICS_JSON)) as f:
      return json.load(f).get(key)
  except (OSError, ValueError):
    return None


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json (process 0 writes): the config, and beside its sections the key
  'effective': the peak learning rate, warmup steps and rate factor the run trains with
  (optimizer.scaled_hyperparameters; with train.lr_scaling the config holds the rates at
  train.base_batch_size). A bad optimizer field is refused here, before anything is written."""
  effective = optimizer.scaled_hyperparameters(config)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic_files.write_json(os.path.join(workdir, CONFIG_JSON),
                            json.loads(config.to_json_best_effort()) | {EFFECTIVE: effective})


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json over the current defaults (a field added since the run has its
  default, or its former default where the default has changed since: config_defaults.completed)."""
  path = os.path.join(workdir, CONFIG_JSON)
  if not os.path.isfile(path):
    model = os.path.isfile(os.path.join(workdir, model_dir.MODEL_CARD))
    raise errors.DataError(f'{path} does not exist: {workdir} is not a run folder (--workdir of '
                           'a training run)' + ('; it is a model written by vivano export-model '
                                               '(vivano predict --model takes it)') * model)
  saved = atomic_files.read_json_object(path)
  saved.pop(EFFECTIVE, None)  # Derived from the config, not a section of it.
  completed = config_defaults.completed(saved, path)
  config = ml_collections.ConfigDict(_tuples_as_defaults(completed, config_defaults.base_config()))
  _check_saved(config, path)
  _augmentation_as_trained(config)
  return config


def _augmentation_as_trained(config: ml_collections.ConfigDict) -> None:
  """A run trained with dataset.name='mvtec_ad/<category>' before that name took its category's
  augmentation (datasets.resolve_config fills the fields left None) holds None there: it trained
  with none. Those read as False, so that its exports and reruns, which resolve the config again,
  are not refused as another config, and score with the test-time views it trained with (none).
  Runs since hold the filled values; other datasets' None fields are left as they are."""
  augment = config.dataset.get('augment')
  if str(config.dataset.get('name', '')).startswith('mvtec_ad/') and augment is not None:
    for field, value in augment.items():
      if value is None:
        augment[field] = False


def _tuples_as_defaults(saved: dict, defaults: ml_collections.ConfigDict) -> dict:
  """`saved` with the JSON lists of tuple fields (export.splits, score.combine, ...) as tuples
  again: ml_collections cannot override a list field, so `vivano export
  --config.export.splits=...` on a run's config failed with a traceback."""
  out = {}
  for key, value in saved.items():
    default = defaults.get(key) if isinstance(defaults, ml_collections.ConfigDict) else None
    if isinstance(value, dict):
      out[key] = _tuples_as_defaults(value, default)
    elif isinstance(value, list) and isinstance(default, tuple):
      out[key] = tuple(value)
    else:
      out[key] = value
  return out


def _check_saved(config: ml_collections.ConfigDict, path: str) -> None:
  """A config.json no run could have been trained with (edited by hand: a string for a size, an
  image size the checkpoint was not trained at, a field the model does not take) is one DataError
  naming the file and the field. Restoring the checkpoint with it would fail as a 'damaged
  checkpoint', and that message says to delete a checkpoint that is intact."""
  from vivano_jax import config_checks  # pylint: disable=g-import-not-at-top  (imports the model)
  try:
    config_checks.check_all(config)  # What main checked before the run wrote this file.
  except errors.UsageError as e:
    raise errors.DataError(f'{path}: edited or damaged ({e}); restore the values the run was '
                           'trained with') from None


def config_differs(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `config` differs in any field from WORKDIR/config.json (as load_config reads it)."""
  saved = config_files.flatten(json.loads(load_config(workdir).to_json_best_effort()))
  return saved != config_files.flatten(json.loads(config.to_json_best_effort()))


# --------------------------------------------------------------------------------------------------
# A trained workdir accepts only its own model and data.

# Fields a rerun may change: where data lives, speed and logging, how many steps (a smaller total
# than the latest checkpoint is refused by train.py), and everything about scoring and export.
CHANGEABLE = ('dataset.data_dir', 'dataset.manual_dir', 'dataset.num_threads',
              'dataset.cache_max_mib', 'train.num_steps', 'train.num_epochs',
              'train.eval_batch_size', 'train.log_every_steps', 'train.checkpoint_every_steps',
              'train.keep_checkpoints', 'train.num_tensorboard_images')
CHANGEABLE_SECTIONS = ('score', 'export')


def differing_fields(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """'field: saved -> new' for every field that differs from WORKDIR/config.json and is not one
  a rerun may change."""
  saved = config_files.flatten(json.loads(load_config(workdir).to_json_best_effort()))
  new = config_files.flatten(json.loads(config.to_json_best_effort()))
  out = []
  for field in sorted(set(saved) | set(new)):
    if field in CHANGEABLE or field.split('.')[0] in CHANGEABLE_SECTIONS:
      continue
    if saved.get(field) != new.get(field):
      out.append(f'{field}: {saved.get(field)!r} -> {new.get(field)!r}')
  return out


def checkpoint_steps(workdir: str) -> list[int]:
  """The finished checkpoint steps in WORKDIR/checkpoints, ascending (Orbax's unfinished ones end
  in a suffix)."""
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def check_compatible(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A workdir with a finished checkpoint refuses a config whose model, data or training differ from
  the one it was trained with (score and export fields may change); one line naming the fields. A
  run that stopped before its first checkpoint (a mistake found late, Ctrl-C) trained nothing to
  keep: its workdir takes any config."""
  if not (checkpoint_steps(workdir) and os.path.isfile(os.path.join(workdir, CONFIG_JSON))):
    return
  diff = differing_fields(config, workdir)
  if diff:
    raise errors.UsageError(
        f'{workdir} was trained with another config ({"; ".join(diff)}); start a new --workdir '
        f'for it, or rerun with the values of {os.path.join(workdir, CONFIG_JSON)}')
