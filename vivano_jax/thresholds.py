"""Decision thresholds on image anomaly scores, chosen on held-out data when a run is exported.

Both kinds are recorded in WORKDIR/thresholds.json; `config.export.threshold` picks the one used:

  quantile  the `export.threshold_quantile` quantile (numpy's default, linear interpolation) of the
            image scores of held-out normal images: the validation split's normals when the dataset
            has a validation split or `dataset.validation_fraction` > 0 carves one, else the
            training normals (source 'train': the model has seen those, so expect more than 1 - q
            of new normal images above it).
  f1        the threshold maximising F1 on labelled validation data that contains anomalies
            (`sklearn.metrics.precision_recall_curve`; among equal F1, the lowest threshold). None
            when there is no such data; asking for 'f1' then falls back to 'quantile' (recorded).

An image is anomalous when score >= threshold (sklearn's convention for the F1 thresholds). Only
numpy, scikit-learn and ml_collections (the score defaults) are imported.
"""

import json
import math
import os
from typing import Any, Optional

import numpy as np

from vivano_jax import atomic_files
from vivano_jax import errors

# sklearn and config_defaults (ml_collections) are imported where they are used: scoring with an
# exported ONNX model reads thresholds.json through this module with numpy alone.

KINDS = ('quantile', 'f1')
FILENAME = 'thresholds.json'
RULE = 'anomalous if score >= threshold'
FEW_NORMALS = 10  # Below this many held-out normals a quantile threshold gets a warning.


def quantile_threshold(normal_scores: np.ndarray, q: float) -> float:
  """The q-quantile of normal image scores [n] (linear interpolation between order statistics)."""
  scores = np.asarray(normal_scores, np.float64).reshape(-1)
  if not 0.0 <= q <= 1.0:
    raise ValueError(f'export.threshold_quantile must be in [0, 1], got {q}')
  if scores.size == 0:
    raise ValueError('no held-out normal image scores to take a quantile of')
  return float(np.quantile(scores, q))


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> Optional[dict[str, float]]:
  """The F1-optimal threshold on labelled scores [n] (labels 1 = anomalous), or None without both
  classes. Returns {'threshold', 'f1', 'precision', 'recall'} at that threshold."""
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1).astype(int)
  if scores.shape != labels.shape:
    raise ValueError(f'{scores.size} scores but {labels.size} labels')
  if np.unique(labels).size != 2:
    return None
  import sklearn.metrics  # pylint: disable=g-import-not-at-top
  precision, recall, thresholds = sklearn.metrics.precision_recall_curve(labels, scores)
  # The last point (precision 1, recall 0) has no threshold.
  p, r = precision[:-1], recall[:-1]
  f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
  i = int(np.argmax(f1))  # Thresholds increase: the first maximum is the lowest threshold.
  return {'threshold': float(thresholds[i]), 'f1': float(f1[i]), 'precision': float(p[i]),
          'recall': float(r[i])}


def choose(normal_scores: np.ndarray, source: str, q: float, kind: str,
           val_scores: Optional[np.ndarray] = None, val_labels: Optional[np.ndarray] = None
           ) -> dict[str, Any]:
  """Both thresholds and the one of `kind` ('quantile' | 'f1'), as saved in thresholds.json.

  Args:
    normal_scores: [n] image scores of held-out normal images.
    source: where they come from ('validation' or 'train').
    q: the quantile.
    kind: the threshold to use; 'f1' without labelled anomalies falls back to 'quantile'.
    val_scores, val_labels: [m] labelled validation scores for the F1 threshold, if any.
  """
  if kind not in KINDS:
    raise ValueError(f'export.threshold must be one of {KINDS}, got {kind!r}')
  normal = np.asarray(normal_scores, np.float64).reshape(-1)
  f1 = None if val_scores is None else f1_threshold(val_scores, val_labels)
  chosen = kind if kind == 'quantile' or f1 is not None else 'quantile'
  record = {
      'rule': RULE,
      'source': source,
      'num_normal': int(normal.size),
      'quantile': {'q': float(q), 'threshold': quantile_threshold(normal, q)},
      'f1': f1,
      'requested': kind,
      'chosen': chosen,
  }
  if chosen != kind:
    record['note'] = 'no labelled validation anomalies for an F1 threshold; using the quantile'
  if chosen == 'quantile' and normal.size < FEW_NORMALS:
    record['warning'] = few_normals_warning(normal.size, q, source)
  record['threshold'] = record[chosen]['threshold']
  return record


def few_normals_warning(n: int, q: float, source: str) -> str:
  """Why a quantile of n < FEW_NORMALS normal scores is a weak threshold: it is at most their
  maximum, and a new normal image (exchangeable with them) scores above the highest of n with
  probability 1 / (n + 1)."""
  return (f'the threshold rests on {n} {source} normal image{"s" * (n != 1)}: a new normal image '
          f'scores above the highest of {n} with probability 1/{n + 1} ({100 / (n + 1):.0f} %), '
          f'so expect at least that many false alarms, not {100 * (1 - q):.2g} %; hold out more '
          'normals (dataset.validation_fraction) or set the threshold in thresholds.json')


def is_anomalous(scores: np.ndarray, threshold: float) -> np.ndarray:
  """[n] bool decisions for image scores [n]."""
  return np.asarray(scores) >= threshold


def path_of(workdir: str) -> str:
  """Where a run's thresholds are read from: WORKDIR/thresholds.json (the export's copy, which a
  user may edit to move the decision threshold), else WORKDIR/export/thresholds.json."""
  own = os.path.join(workdir, FILENAME)
  return own if os.path.isfile(own) else os.path.join(workdir, 'export', FILENAME)


def load(workdir: str) -> dict[str, Any]:
  """The thresholds saved with a run, from `path_of(workdir)`."""
  path = path_of(workdir)
  if not os.path.isfile(path):
    raise errors.DataError(f'{path} does not exist: the run has no thresholds yet; export it '
                           f'first (vivano export --workdir={workdir})')
  record = atomic_files.read_json_object(path)
  check_record(record, path)
  return record


def check_record(record: dict[str, Any], path: Any) -> None:
  """A thresholds.json record (`path`, for the message): the decision threshold and what predict
  prints and draws with it, each of its type; one DataError naming the file and the field."""
  value = record.get('threshold')
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise errors.DataError(f'{path}: corrupt (threshold {value!r}, not a finite number); export '
                           'the model again')
  low_high = record.get('pixel_display_range')
  if (not isinstance(low_high, list) or len(low_high) != 2 or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
      for v in low_high)):
    raise errors.DataError(f'{path}: corrupt (pixel_display_range {low_high!r}, not two finite '
                           'numbers); export the model again')
  if low_high[0] > low_high[1]:  # Every map would be drawn in the colour of its lowest value.
    raise errors.DataError(f'{path}: corrupt (pixel_display_range {low_high!r}: the low end is '
                           'above the high end); export the model again')
  if not isinstance(record.get('chosen'), str):
    raise errors.DataError(f'{path}: corrupt (chosen {record.get("chosen")!r}, not a string); '
                           'export the model again')
  if record.get('rule') != RULE:  # Printed beside every decision: it must be the one applied.
    raise errors.DataError(f'{path}: rule {record.get("rule")!r}, but images are decided by the '
                           f'rule {RULE!r} alone; restore it (edit threshold to move the decision)')


def check_score(record: dict[str, Any], score: Any, workdir: str) -> None:
  """The thresholds in `record` must have been chosen for `score` (the config's score section,
  as resolved): else one DataError saying to export again."""
  saved = record.get('score_config')
  current = json.loads(json.dumps(score.to_dict()))
  if saved is None:
    differ = [] if record.get('score') == current['image'] else ['image']
  else:
    # A field added to config.score after the export counts as config.json's does (at its
    # former default where that changed since, else today's): what the export computed.
    from vivano_jax import config_defaults  # pylint: disable=g-import-not-at-top
    saved = json.loads(json.dumps(config_defaults.completed({'score': saved})['score']))
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
  if differ:
    fields = ', '.join(f'score.{k}={saved.get(k) if saved else record.get("score")!r} there, '
                       f'{current.get(k)!r} in config.json' for k in differ)
    raise errors.DataError(
        f'{os.path.join(workdir, FILENAME)} was chosen for other score settings than the run\'s '
        f'config.json ({fields}); export again: vivano export --workdir={workdir}')
