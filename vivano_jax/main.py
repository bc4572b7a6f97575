"""Train a config and evaluate it on the test split, then export (`vivano train`).

  python -m vivano_jax.main --config=configs/default.py --workdir=runs/default
  vivano train --config=configs/default.py --workdir=runs/default          (the same)

Any config field can be overridden, e.g. `--config.model.depth=2`; an unknown field is an error.
A workdir that holds checkpoints resumes from the latest. `--mode=export [--step=N]` exports a
checkpoint of the run without training (as `vivano export`).

Several hosts: pass --coordinator_address, --num_processes and --process_id (or set them in the
environment that `jax.distributed.initialize` reads) and every process runs the same command.
"""

if __name__ == '__main__':
  # Before this file's own imports: `python -m vivano_jax.main` then runs the command exactly as `vivano train` does, with the libraries imported after the entry point has
  # routed their logs (cli.py), and exits; the imports below serve the imported module.
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('train')

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vivano_jax import console
from vivano_jax import export
from vivano_jax import tables
from vivano_jax import train
from vivano_jax import workdir as workdir_lib
from vivano_jax import workdir_lock


def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file('config', None, 'Path to a configuration file.', flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.',
                      flag_values=fv)
  flags.DEFINE_enum('mode', 'train', ['train', 'export'],
                    'train: train and evaluate, then export when config.export.at_end; '
                    'export: export a checkpoint of the run in --workdir without training.',
                    flag_values=fv)
  flags.DEFINE_integer('step', None, 'With --mode=export: the checkpoint step (default: the '
                       'latest).', flag_values=fv)
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-host runs.',
                      flag_values=fv)
  flags.DEFINE_integer('num_processes', None, 'Number of processes (hosts).', flag_values=fv)
  flags.DEFINE_integer('process_id', None, 'This process\'s index.', flag_values=fv)
  flags.DEFINE_bool('distributed', False,
                    'Call jax.distributed.initialize() with what the platform provides (Cloud TPU '
                    'VMs, SLURM, Open MPI), without the three flags above.', flag_values=fv)
  flags.mark_flags_as_required(['config', 'workdir'], flag_values=fv)


def format_summary(summary: dict) -> str:
  """The few lines a person reads at the end of a run."""
  fmt, ips = tables.format_metric, lambda v: 'n/a' if v is None else f'{v:.1f}'
  if summary['metrics'] is None:
    metrics = ['', 'no metrics: the test split holds only normal or only anomalous images']
  else:
    overall = summary['metrics']['overall']
    metrics = ['', tables.metrics_table(summary['metrics']), '',
               f"image AUROC {fmt(overall['image_auroc'])} | pixel AUROC "
               f"{fmt(overall['pixel_auroc'])} | AU-PRO {fmt(overall['au_pro'])}"]
  return '\n'.join(metrics + [
      f"train {ips(summary['train_images_per_sec'])} images/s | score "
      f"{ips(summary['score_images_per_sec'])} images/s | checkpoint step "
      f"{summary['checkpoint_step']}",
      f"outputs: {summary['workdir']} (config.json, metrics.json, checkpoints/, TensorBoard events)",
  ])


def run(fv: flags.FlagValues) -> None:
  if fv.coordinator_address or fv.num_processes or fv.distributed:
    jax.distributed.initialize(coordinator_address=fv.coordinator_address,
                               num_processes=fv.num_processes, process_id=fv.process_id)
  logging.info('JAX process %d of %d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  config, exported = fv.config, None
  with workdir_lock.lock(fv.workdir):
    if fv.mode == 'train':
      summary, evaluation = train.train_and_evaluate(config, fv.workdir, return_evaluation=True)
      if jax.process_index() == 0:
        print(format_summary(summary), flush=True)
      # A changed score re-exports: thresholds.json must belong to the configured score.
      if config.export.at_end or export.thresholds_outdated(config, fv.workdir):
        with console.stage('export (scores, maps, thresholds, report)'):
          exported = export.export_run(config, fv.workdir, step=summary['checkpoint_step'],
                                       reuse={'test': evaluation})
    else:
      with console.stage('export (scores, maps, thresholds, report)'):
        exported = export.export_run(config, fv.workdir, step=fv.step)
  if exported is not None and jax.process_index() == 0:
    print(export.format_export(exported), flush=True)
