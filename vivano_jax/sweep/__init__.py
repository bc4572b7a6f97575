"""Hyper-parameter sweeps over `python -m vivano_jax.main`: expand a sweep file, run, gather.

A sweep file is Python with `get_sweep()` returning a dict or an `ml_collections.ConfigDict`:

  base_config      config file the runs start from (relative to the sweep file's folder)
  grid             {field: [values, ...]}: every combination (Cartesian product, fields in order),
  runs             or [{field: value, ...}, ...]: an explicit list of runs (exactly one of the two)
  fixed            {field: value} for every run (optional; not part of the run names)

A field is a config path, e.g. 'train.batch_size'. Nested mappings are read as paths too, so a
ConfigDict sweep may write `sweep.grid = {'train': {'batch_size': [16, 32]}}` (ConfigDict keys
cannot hold dots).

A learning rate that follows the batch size is the config's own: set `train.lr_scaling` ('linear'
or 'sqrt') and `train.base_batch_size` (B0) in `fixed` (or per run), and every run's
train.learning_rate and train.warmup_steps are read as given at B0; main scales them
(optimizer.scaled_hyperparameters) and records what it trained with in config.json under
'effective'. The plan computes the same to check each run's fields and shows it in --dry_run.

Every run gets its own workdir `ROOT/<name>`, the name made from its swept values
(`batch_size=16,learning_rate=0.001`), and is one `python -m vivano_jax.main` subprocess with
`--config.<field>=<value>` flags. A run whose workdir holds `metrics.json` is finished and skipped,
so a stopped sweep restarts where it stopped (an unfinished run resumes from its last checkpoint).

  python -m vivano_jax.sweep run --sweep=sweeps/example.py --root=runs/example
      [--dry_run] [--only=K[,K...]] [--print_commands] [--launcher='CMD'] [--config.<field>=<value>]
  python -m vivano_jax.sweep run --sweep=sweeps/example.py --root=runs/example --count
  python -m vivano_jax.sweep gather --root=runs/example [--over=seed]
  python -m vivano_jax.sweep plot --root=runs/example --x=train.batch_size
      [--lines=F[,F...]] [--panels=F] [--metrics=image_auroc,au_pro] --output=plot.png

`run` also writes ROOT/sweep.json (the plan), and per run ROOT/<name>/sweep_run.json (its flags)
and ROOT/<name>/sweep_run.log (its output). Extra `--config.<field>=<value>` flags go to every run
that does not set the field itself (a data_dir that differs per machine, say, or the Magnetic Tile
folder, which the textures runs of a mixed sweep set empty); a run's own values win over them, and
they over the sweep's `fixed`. `--launcher` replaces `python -m vivano_jax.main`, e.g.
`--launcher='srun launch/multihost.sh'` inside a multi-node allocation. `gather` writes
ROOT/results.csv and ROOT/results.md: one row per run with the swept fields as the runs used them
(and any config field that differs between runs, e.g. config.json's effective.learning_rate under
a scaling rule), image AUROC, pixel AUROC, AU-PRO and train/score images/s. `gather --over=seed`
also pools the runs that differ only in the seed into one row each: n, mean and sample standard
deviation (ROOT/results_over_seed.{csv,md}). `plot` draws that table's metrics against a swept
field as a PNG, SVG or PDF (plot.py), one line per value of the `--lines` fields.

The package: plan.py reads and expands a sweep file, run.py runs it, results.py gathers it,
plot.py plots it, command_line.py is the command line (`main(argv)`); config fields are read and
set by vivano_jax.config_files, the way main reads its `--config.<field>` flags. `run --dry_run`
lists every run with its index (what --only selects: a job array's task id) and the learning rate
and warmup it will train with; `run --count` prints the number of runs (the array's size).
"""

from vivano_jax.config_files import flatten
from vivano_jax.sweep.plan import (MAX_NAME_LENGTH, MOVED_KEYS, SWEEP_KEYS, Run, Sweep, SweepError,
                                   expand_grid, format_value, load_sweep, name_part, run_names)
from vivano_jax.sweep.run import (default_launcher, is_finished, main_command, print_commands,
                                  run_sweep, select, write_plan)
from vivano_jax.sweep.results import (METRIC_COLUMNS, SPREAD_METRICS, gather, markdown_table,
                                      spread_table, summarize, write_results, write_summary)
from vivano_jax.sweep.command_line import main
