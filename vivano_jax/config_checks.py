"""Checks of the run's fields that would otherwise fail late (after data preparation, with files in
the workdir) or not at all (a negative learning rate trains by gradient ascent): each is one
`UsageError` naming the field, raised before anything is prepared or written.

The model's sizes are checked where the model is built (model/vivano.py), the optimizer's choices in
optimizer.py, the scores in scoring.py; this module holds the dataset, training and export fields.
"""

import math
from typing import Any

import ml_collections

from vivano_jax import errors


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


def check_train(config: ml_collections.ConfigDict) -> None:
  t = config.train
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
  if t.optimizer == 'lars':
    _number('train.momentum', t.momentum, 0, high=1, high_open=True)
    _number('train.trust_coefficient', t.trust_coefficient, 0, low_open=True)


def check_export(config: ml_collections.ConfigDict) -> None:
  e = config.export
  _number('export.threshold_quantile', e.threshold_quantile, 0, high=1)
  _number('export.max_overlays', e.max_overlays, -1, integer=True)
  _number('export.report_images', e.report_images, 0, integer=True)
  _number('export.display_images', e.display_images, 0, integer=True)
  _number('score.smoothing_sigma', config.score.smoothing_sigma, 0)


def check_run(config: ml_collections.ConfigDict) -> None:
  """Every check above: the fields of a run, before it prepares data or writes a file."""
  check_dataset(config)
  check_train(config)
  check_export(config)
