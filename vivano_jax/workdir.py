"""The files of a run's workdir that describe the run, and reading them back.

  config.json          the config the run was trained with (train.py writes it first)
  metrics.json         the test metrics at the end of training
  checkpoints/         Orbax checkpoints (checkpoints.py)
  thresholds.json      the decision threshold of the exported score (export.py, thresholds.py)
  score_stats.npz      held-out statistics of a standardised score (scoring.py)
  score_selection.json the chosen score under score.select (score_selection.py)
  export/<split>/      exported scores and maps (export_format.py); report/ (report.py)
"""

import json
import os

import jax
import ml_collections

from vivano_jax import atomic_files
from vivano_jax import config_defaults
from vivano_jax import errors

CONFIG_JSON = 'config.json'
METRICS_JSON = 'metrics.json'


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json (process 0 writes)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic_files.write_json(os.path.join(workdir, CONFIG_JSON),
                            json.loads(config.to_json_best_effort()))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json over the current defaults (a field added since the run has its
  default)."""
  path = os.path.join(workdir, CONFIG_JSON)
  if not os.path.isfile(path):
    raise errors.DataError(f'{path} does not exist: {workdir} is not a run folder (--workdir of '
                           'a training run)')
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.DataError(f'{path}: unreadable ({e})') from e

  def merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
      base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base

  return ml_collections.ConfigDict(merge(config_defaults.base_config().to_dict(), saved))
