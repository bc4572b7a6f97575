"""Checks of the run's fields that would otherwise fail late (after data preparation, with files in
the workdir) or not at all (a negative learning rate trains by gradient ascent): each is one
`UsageError` naming the field, raised before anything is prepared or written.

`check_all` runs every check of a run's config: this module's (dataset, training, export and score
selection fields) and those kept beside what they check: the model's sizes (model/vivano.py), the
optimizer's choices (optimizer.py), the scores (scoring.py), the synthetic anomalies (synthetic.py).
Main runs it before training, the sweep on every run it plans.
"""

import difflib
import math
from typing import Any

import ml_collections

from vivano_jax import config_defaults
from vivano_jax import errors
from vivano_jax import model as model_lib
from vivano_jax import optimizer
from vivano_jax import scoring
from vivano_jax import synthetic
from vivano_jax import thresholds

SELECT = ('none', 'synthetic')  # score.select
SPLITS = ('train', 'validation', 'test')  # export.splits


def _number(field: str, value: Any, low: float, low_open: bool = False,
            high: float = math.inf, high_open: bool = False, integer: bool = False) -> None:
  """UsageError unless `value` is a finite number (an int when `integer`) in the interval."""
  kind = int if integer else (int, float)
  ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
  if ok:
    ok = (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
  if not ok:
    what = 'an int' if integer else 'a finite number'
    bounds = []
    if low > -math.inf:
      bounds.append(f'{">" if low_open else ">="} {low:g}')
    if high < math.inf:
      bounds.append(f'{"<" if high_open else "<="} {high:g}')
    raise errors.UsageError(f'{field} must be {what} {" and ".join(bounds)}, got {value!r}')


def check_dataset(config: ml_collections.ConfigDict) -> None:
  d, patch = config.dataset, config.model.patch_size
  _number('dataset.image_size', d.image_size, 1, integer=True)
  if isinstance(patch, int) and patch > 0 and d.image_size % patch:
    raise errors.UsageError(f'dataset.image_size={d.image_size} must be a multiple of '
                            f'model.patch_size={patch}')
  if d.channels not in (1, 3) or isinstance(d.channels, bool):
    raise errors.UsageError(f'dataset.channels must be 1 (gray) or 3 (RGB), got {d.channels!r}')
  _number('dataset.validation_fraction', d.validation_fraction, 0, high=1, high_open=True)
  _number('dataset.validation_seed', d.validation_seed, 0, integer=True)
  _number('dataset.num_threads', d.num_threads, 0, integer=True)  # 0: tf.data's own pool size.
  _number('dataset.cache_max_mib', d.cache_max_mib, 0)


def check_train(config: ml_collections.ConfigDict) -> None:
  t = config.train
  _number('seed', config.seed, 0, integer=True)
  _number('train.batch_size', t.batch_size, 1, integer=True)
  _number('train.eval_batch_size', t.eval_batch_size, 1, integer=True)
  _number('train.grad_accum_steps', t.grad_accum_steps, 1, integer=True)
  _number('train.num_steps', t.num_steps, 0, integer=True)
  _number('train.num_epochs', t.num_epochs, 0)
  if t.num_steps == 0 and t.num_epochs == 0:
    raise errors.UsageError('set train.num_steps or train.num_epochs to a positive number')
  _number('train.learning_rate', t.learning_rate, 0, low_open=True)
  _number('train.weight_decay', t.weight_decay, 0)
  _number('train.grad_clip_norm', t.grad_clip_norm, 0)
  _number('train.warmup_steps', t.warmup_steps, 0, integer=True)
  _number('train.log_every_steps', t.log_every_steps, 1, integer=True)
  _number('train.checkpoint_every_steps', t.checkpoint_every_steps, 1, integer=True)
  _number('train.keep_checkpoints', t.keep_checkpoints, 1, integer=True)
  _number('train.num_tensorboard_images', t.num_tensorboard_images, 0, integer=True)
  for name in ('recon_weight', 'kl_weight', 'nll_weight', 'ssim_weight', 'seg_weight'):
    # A negative weight would train by gradient ascent on its term.
    _number(f'loss.{name}', config.loss[name], 0)
  if t.optimizer == 'lars':
    _number('train.momentum', t.momentum, 0, high=1, high_open=True)
    _number('train.trust_coefficient', t.trust_coefficient, 0, low_open=True)


def check_export(config: ml_collections.ConfigDict) -> None:
  e = config.export
  if e.threshold not in thresholds.KINDS:
    raise errors.UsageError(f'export.threshold must be one of {thresholds.KINDS}, got '
                            f'{e.threshold!r}')
  splits = tuple(e.splits)
  if not splits or len(set(splits)) != len(splits) or not set(splits) <= set(SPLITS):
    raise errors.UsageError(f'export.splits must name distinct splits of {SPLITS}, got {splits!r}')
  _number('export.threshold_quantile', e.threshold_quantile, 0, high=1)
  _number('export.max_overlays', e.max_overlays, -1, integer=True)
  _number('export.report_images', e.report_images, 0, integer=True)
  _number('export.display_images', e.display_images, 0, integer=True)
  sigma, size = config.score.smoothing_sigma, config.dataset.image_size
  _number('score.smoothing_sigma', sigma, 0)
  if isinstance(size, int) and sigma > size:  # Its 8 sigma + 1 taps are unrolled into the scoring
    # step: sigma=1000 compiled for minutes without a word, to flatten every map.
    raise errors.UsageError(f'score.smoothing_sigma={sigma:g} is wider than the image '
                            f'(dataset.image_size={size}) and would flatten every map; use at '
                            f'most {size}')


def check_run(config: ml_collections.ConfigDict) -> None:
  """Every check above: the fields of a run, before it prepares data or writes a file."""
  check_dataset(config)
  check_train(config)
  check_export(config)


def parse_image_candidate(text: str) -> dict[str, str]:
  """An image candidate -> the score fields it sets (image, image_map, image_normalize)."""
  return scoring.parse_image_spec(text, 'score.image_candidates')


def parse_pixel_candidate(text: str) -> dict[str, str]:
  """A pixel candidate 'KIND:NORMALIZE' -> the score fields it sets (pixel, normalize)."""
  parts = str(text).split(':')
  if len(parts) == 2 and parts[0] in scoring.PIXEL_MAPS and parts[1] in scoring.NORMALIZE:
    return {'pixel': parts[0], 'normalize': parts[1]}
  raise errors.UsageError(f"score.pixel_candidates: {text!r} is not 'KIND:NORMALIZE' with KIND in "
                   f'{scoring.PIXEL_MAPS}, NORMALIZE in {scoring.NORMALIZE}')


def check_selection(score: ml_collections.ConfigDict, segmenter: bool = True) -> None:
  """One clear error for a bad selection field; without a `segmenter` in the model, also for a
  candidate that reads its map."""
  if score.select not in SELECT:
    raise errors.UsageError(f'score.select must be one of {SELECT}, got {score.select!r}')
  if score.select != 'none':
    if not score.image_candidates or not score.pixel_candidates:
      raise errors.UsageError("score.select='synthetic' needs score.image_candidates and "
                       'score.pixel_candidates')
    candidates = [('score.image_candidates', c, parse_image_candidate(c))
                  for c in score.image_candidates]
    candidates += [('score.pixel_candidates', c, parse_pixel_candidate(c))
                   for c in score.pixel_candidates]
    for field, text, fields in candidates:
      chosen = ml_collections.ConfigDict(score.to_dict())  # This candidate's reads alone.
      chosen.update({'image': 'recon', 'pixel': 'recon', 'image_map': ''} | fields)
      if not segmenter and scoring.segmenter_fields(chosen):
        raise errors.UsageError(f"{field}: {text!r} reads the segmenter's map, and the model has "
                                'none (model.segmenter_features=0)')


def synthetic_fields(config: ml_collections.ConfigDict):
  """(train.synthetic_anomalies, (kinds, area, shapes)), checked: a UsageError naming the field."""
  p = config.train.synthetic_anomalies
  _number('train.synthetic_anomalies', p, 0, high=1)
  if config.model.segmenter_features and not p > 0:
    raise errors.UsageError('model.segmenter_features > 0 trains on synthetic anomalies: set '
                            'train.synthetic_anomalies > 0 (e.g. 0.5)')
  return p, synthetic.check(config.train.synthetic_kinds, config.train.synthetic_area,
                            config.train.synthetic_shapes)


def check_score(config: ml_collections.ConfigDict) -> None:
  """The score fields, their components against the model's, and the score selection."""
  scoring.check_components(config)
  # Else found when the run is first scored: after training, which may take hours.
  scoring.check_shifts(config.score.shifts, config.model.patch_size)
  check_selection(config.score, segmenter=config.model.segmenter_features > 0)


def _fields(config: ml_collections.ConfigDict, prefix: str = '') -> set[str]:
  """The dotted names of a config's leaf fields ('train.batch_size', ...)."""
  names = set()
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      names |= _fields(value, f'{prefix}{key}.')
    else:
      names.add(f'{prefix}{key}')
  return names


def check_fields(config: ml_collections.ConfigDict) -> None:
  """UsageError naming the fields a config lacks or has beyond config_defaults.base_config()'s: a
  config file not built on it would fail far from its cause, and a misspelt field
  (config.train.learning_rat = 1e-3) would be ignored without a word."""
  want, have = _fields(config_defaults.base_config()), _fields(config)
  shown = lambda names: ', '.join(names[:8]) + (f' and {len(names) - 8} more' * (len(names) > 8))
  problems = []
  if have - want:
    extra = sorted(have - want)
    close = difflib.get_close_matches(extra[0], want, n=1)
    problems.append(f'has no field {shown(extra)}' + (f' (did you mean {close[0]}?)' * bool(close)))
  if want - have:
    problems.append(f'lacks {shown(sorted(want - have))}')
  if problems:
    raise errors.UsageError('the config ' + ' and '.join(problems) + '; build configs on '
                            'config_defaults.base_config(), which has every field')


def check_all(config: ml_collections.ConfigDict) -> None:
  """Every check of a run's config that needs no device and no data (see the module docstring)."""
  check_fields(config)
  check_run(config)
  model_lib.check_sizes(config)
  synthetic_fields(config)
  check_score(config)
  optimizer.learning_rate_schedule(config, 1)  # The optimizer, its rule and schedule fields.
