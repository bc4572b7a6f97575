"""Command line: `python -m vivano_jax.main --config=configs/default.py --workdir=runs/default`.

Any config field can be overridden, e.g. `--config.model.depth=2`; an unknown field is an error.
`--mode=export [--step=N]` exports a checkpoint of the run in --workdir, without training (export.py).

Several hosts: pass --coordinator_address, --num_processes and --process_id (or set them in the
environment that `jax.distributed.initialize` reads) and every process runs the same command.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vivano_jax import export  # noqa: E402
from vivano_jax import train  # noqa: E402

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'export'],
                          'train: train and evaluate, then export when config.export.at_end; '
                          'export: export a checkpoint of the run in --workdir without training.')
_STEP = flags.DEFINE_integer('step', None, 'With --mode=export: the checkpoint step (default: the '
                             'latest).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for multi-host runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (hosts).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'Call jax.distributed.initialize() with what the platform provides '
                                 '(Cloud TPU VMs, SLURM, Open MPI), without the three flags above.')
flags.mark_flags_as_required(['config', 'workdir'])


def format_summary(summary: dict) -> str:
  """The few lines a person reads at the end of a run."""
  def fmt(v):
    return 'n/a' if v is None else f'{v:.4f}'
  lines = ['', f"{'defect type':<16} {'n':>5} {'image AUROC':>12} {'pixel AUROC':>12} {'AU-PRO':>8}"]
  for name, m in summary['metrics'].items():
    lines.append(f"{name:<16} {m.get('num_images', ''):>5} {fmt(m['image_auroc']):>12} "
                 f"{fmt(m['pixel_auroc']):>12} {fmt(m['au_pro']):>8}")
  overall = summary['metrics']['overall']
  ips = lambda v: 'n/a' if v is None else f'{v:.1f}'
  lines += [
      '',
      f"image AUROC {fmt(overall['image_auroc'])} | pixel AUROC {fmt(overall['pixel_auroc'])} | "
      f"AU-PRO {fmt(overall['au_pro'])}",
      f"train {ips(summary['train_images_per_sec'])} images/s | score "
      f"{ips(summary['score_images_per_sec'])} images/s | checkpoint step {summary['checkpoint_step']}",
      f"outputs: {summary['workdir']} (config.json, metrics.json, checkpoints/, TensorBoard events)",
  ]
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _COORDINATOR.value or _NUM_PROCESSES.value or _DISTRIBUTED.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  logging.info('JAX process %d of %d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  config, summary, exported = _CONFIG.value, None, None
  try:
    if _MODE.value == 'train':
      summary = train.train_and_evaluate(config, _WORKDIR.value)
      if jax.process_index() == 0:
        print(format_summary(summary), flush=True)
      if config.export.at_end:
        exported = export.export_run(config, _WORKDIR.value, step=summary['checkpoint_step'])
    else:
      exported = export.export_run(config, _WORKDIR.value, step=_STEP.value)
  except (ValueError, FloatingPointError) as e:
    # Bad input (config field, dataset file) or a diverged run: one clear line, not a stack trace.
    logging.debug('Stopped', exc_info=True)
    sys.exit(f'error: {e}')
  if exported is not None and jax.process_index() == 0:
    print(export.format_export(exported), flush=True)


def run():
  try:
    app.run(main)
  except KeyboardInterrupt:
    sys.exit(130)


if __name__ == '__main__':
  run()
