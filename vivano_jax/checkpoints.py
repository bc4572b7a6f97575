"""Orbax checkpoints of a run: WORKDIR/checkpoints/<step>/{state, meta}.

`state` is the whole train state (parameters, optimizer state, BatchNorm statistics, rng); `meta`
holds the step and the data position, so a resumed run continues the same batch sequence. Training
(resume), export and predict all restore through `restore`, into the shapes and shardings of the
configured model.
"""

import os
import sys
from typing import Any, Optional

from jax.sharding import Mesh
import ml_collections
import orbax.checkpoint as ocp

from vivano_jax import errors
from vivano_jax import model as model_lib
from vivano_jax import train_step

CHECKPOINT_DIR = 'checkpoints'


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True))


def save(mngr: ocp.CheckpointManager, state: train_step.TrainState, meta: dict[str, Any]) -> None:
  mngr.save(int(meta['step']), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)


def abstract_state(config: ml_collections.ConfigDict, mesh: Mesh, total_steps: int
                   ) -> train_step.TrainState:
  """The configured train state's shapes, dtypes and (replicated) shardings; nothing is computed.
  `total_steps` sets the optimizer's schedule, which holds no array."""
  return train_step.abstract_train_state(config, model_lib.create_model(config), total_steps, mesh)


def _restore_step(mngr, config, mesh, step, total_steps):
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state(config, mesh, total_steps)),
      meta=ocp.args.JsonRestore()))
  return restored['state'], dict(restored['meta'])


def describe(e: BaseException) -> str:
  """'<type>: <first line>' of a restore error, without TensorStore's trailing details (a bound
  method's repr), at most 200 characters of message."""
  first = str(e).splitlines()[0] if str(e) else ''
  first = first.split(' See full TensorStore details')[0]
  return f'{type(e).__name__}: {first[:200]}'


# What Orbax says when the stored arrays are intact but of another model: a shape or a parameter
# tree that differs from the configured one.
_MISMATCH_SIGNS = ('is not compatible with the stored shape', 'tree structures do not match')


def does_not_fit(e: BaseException) -> bool:
  """Whether a restore error says the checkpoint holds another model, not damaged data."""
  return any(sign in str(e) for sign in _MISMATCH_SIGNS)


def restore(mngr: ocp.CheckpointManager, config: ml_collections.ConfigDict, mesh: Mesh,
            step: Optional[int] = None, total_steps: int = 1, fall_back: bool = False
            ) -> tuple[train_step.TrainState, dict[str, Any]]:
  """Checkpoint `step` (default the latest) as the configured train state, and its meta record.

  A checkpoint that does not restore is damaged: with `fall_back` (resuming training, latest step)
  the previous steps are tried in turn, with a warning; else one DataError names the damaged step
  and the earlier ones to pass as --step. One whose arrays are of another shape or parameter tree
  (`does_not_fit`: config.json edited, another model's config) is not damaged: one DataError says
  so, and nothing is deleted.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  step = steps[0] if step is None else step
  tried = []
  for candidate in [step] + ([s for s in steps if s < step] if fall_back else []):
    try:
      result = _restore_step(mngr, config, mesh, candidate, total_steps)
    except Exception as e:  # pylint: disable=broad-except  (Orbax raises many kinds.)
      tried.append(candidate)
      problem = describe(e)
      if does_not_fit(e):  # Every step would fail alike; none is damaged, none is deleted.
        raise errors.DataError(
            f'checkpoint step {candidate} in {mngr.directory} holds another model than the '
            f'config describes ({problem}); the checkpoint is not damaged: use the model fields '
            "the run was trained with (its config.json as written, or --config with them)") from e
      if not fall_back:
        earlier = [s for s in steps if s < candidate]
        hint = (f'; pass --step={earlier[0]} to use the previous one, or delete '
                f'{os.path.join(mngr.directory, str(candidate))} to resume from it'
                if earlier else '')
        raise errors.DataError(f'checkpoint step {candidate} in {mngr.directory} is damaged '
                               f'({problem}){hint}') from e
      print(f'warning: checkpoint step {candidate} in {mngr.directory} is damaged ({problem}); '
            'trying the previous one', file=sys.stderr)
      continue
    if tried:
      print(f'warning: resuming from checkpoint step {candidate}; the damaged later step(s) '
            f'{tried} are deleted', file=sys.stderr)
      for damaged in tried:
        mngr.delete(damaged)
    return result
  raise errors.DataError(f'{mngr.directory}: no checkpoint restores ({tried}): they are damaged, '
                         'or were saved by a run of another model config (compare --config with '
                         "the run's config.json); start a new --workdir to train from the start")


def restore_run(config: ml_collections.ConfigDict, workdir: str, step: Optional[int], mesh: Mesh
                ) -> tuple[train_step.TrainState, int]:
  """A trained run's checkpoint at `step` (default the latest) and its step, for scoring; one
  clear error when the run has none."""
  ckpt_dir = directory(workdir)
  if not os.path.isdir(ckpt_dir):
    raise errors.DataError(f'{ckpt_dir}: no checkpoints; is {workdir} a trained run?')
  mngr = manager(workdir, config)
  try:
    steps = mngr.all_steps()
    if not steps:
      raise errors.DataError(f'{ckpt_dir}: no finished checkpoint')
    if step is not None and step not in steps:
      raise errors.UsageError(
          f'--step={step}: {ckpt_dir} has no checkpoint for it; there are {sorted(steps)}')
    state, meta = restore(mngr, config, mesh, step)
  finally:
    mngr.close()
  return state, int(meta['step'])
