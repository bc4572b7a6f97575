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
that does not set the field itself (a data_dir that differs per machine, say, or the Magnetic Tile
folder, which the textures runs of a mixed sweep set empty); a run's own values win over them, and
they over the sweep's `fixed`. `--launcher` replaces `python -m vivano_jax.main`, e.g.
`--launcher='srun launch/multihost.sh'` inside a multi-node allocation. `gather` writes
ROOT/results.csv and ROOT/results.md: one row per run with the swept fields as the runs used them
(the scaled learning rate, not the base one), image AUROC, pixel AUROC, AU-PRO and train/score
images/s. `gather --over=seed` also pools the runs that differ only in the seed into one row each:
n, mean and sample standard deviation (ROOT/results_over_seed.{csv,md}).

The package: plan.py reads and expands a sweep file, run.py runs it, results.py gathers it,
command_line.py is the command line (`main(argv)`); config fields are read and set by
vivano_jax.config_files, the way main reads its `--config.<field>` flags.
"""

from vivano_jax.config_files import flatten
from vivano_jax.sweep.plan import (BATCH_FIELD, LR_FIELD, LR_RULES, MAX_NAME_LENGTH, SWEEP_KEYS,
                                   Run, Sweep, SweepError, expand_grid, format_value, load_sweep,
                                   name_part, run_names, scaled_learning_rate)
from vivano_jax.sweep.run import (default_launcher, is_finished, main_command, print_commands,
                                  run_sweep, select, write_plan)
from vivano_jax.sweep.results import (METRIC_COLUMNS, SPREAD_METRICS, gather, markdown_table,
                                      spread_table, summarize, write_results, write_summary)
from vivano_jax.sweep.command_line import main
