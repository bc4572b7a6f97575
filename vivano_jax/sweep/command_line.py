"""The sweep's command line: `python -m vivano_jax.sweep run|gather|plot ...` (the flags: the
package docstring, vivano_jax/sweep/__init__.py). Exit codes: 0 done, 1 some run failed, 2 bad
input (a SweepError, printed as one line), 130 interrupted."""

import argparse
from collections.abc import Sequence
import os
import shlex
import sys
from typing import Optional

from vivano_jax import errors
import vivano_jax.sweep as sweep_package
from vivano_jax.sweep import plot as plot_lib
from vivano_jax.sweep.plan import SweepError, load_sweep
from vivano_jax.sweep.results import SPREAD_METRICS, gather, not_finite, summarize
from vivano_jax.sweep.results import write_results, write_summary
from vivano_jax.sweep.run import print_commands, run_sweep


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m vivano_jax.sweep',
                                   description=sweep_package.__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  run = sub.add_parser('run', help='run the sweep (one run after another)',
                       epilog='Extra --config.<field>=<value> flags are passed to every run.')
  run.add_argument('--sweep', required=True, help='sweep file (Python with get_sweep())')
  run.add_argument('--root', required=True, help='folder holding one workdir per run')
  run.add_argument('--dry_run', action='store_true',
                   help='print the runs and commands, run nothing')
  run.add_argument('--only', default=None,
                   help='comma-separated run indices (0-based) to run, e.g. $SLURM_ARRAY_TASK_ID')
  run.add_argument('--print_commands', action='store_true',
                   help='print one command per unfinished run (to submit as separate jobs)')
  run.add_argument('--count', action='store_true',
                   help='print the number of runs N and nothing else (a job array is 0 to N - 1)')
  run.add_argument('--launcher', default=None,
                   help="command replacing 'python -m vivano_jax.main', e.g. 'launch/multihost.sh'")
  gather_parser = sub.add_parser('gather', help='collect results into ROOT/results.{csv,md}')
  gather_parser.add_argument('--root', required=True)
  gather_parser.add_argument('--over', default=None,
                             help='also pool runs differing only in this field (e.g. seed) into '
                                  'mean +- std: ROOT/results_over_<field>.{csv,md}')
  gather_parser.add_argument('--ignore', default='',
                             help='with --over: fields (comma-separated) whose differences change '
                                  'nothing and may split no group, e.g. dataset.manual_dir written '
                                  'as two paths of one folder')
  plot_parser = sub.add_parser('plot', help='plot metrics against a swept field (PNG, SVG, PDF) '
                               "from gather --over's table")
  plot_parser.add_argument('--root', required=True)
  plot_parser.add_argument('--over', default='seed', help="the table gather --over wrote")
  plot_parser.add_argument('--x', required=True, help='the swept field on the x axis, e.g. '
                           'train.batch_size')
  plot_parser.add_argument('--lines', default='', help='fields (comma-separated) whose values '
                           'make one line each, e.g. train.optimizer,train.lr_scaling')
  plot_parser.add_argument('--panels', default=None, help='a field with one column of panels '
                           'per value, e.g. dataset.name')
  plot_parser.add_argument('--metrics', default='image_auroc,au_pro',
                           help='one row of panels each: image_auroc, pixel_auroc, au_pro')
  plot_parser.add_argument('--output', required=True, help='the plot to write, in the format '
                           'its suffix names: .png, .svg, .pdf, ...')
  args, unknown = parser.parse_known_args(argv)
  args.extra = {}
  for arg in unknown:
    if args.command != 'run' or not arg.startswith('--config.') or '=' not in arg:
      parser.error(f'unrecognised argument {arg!r} (run passes on only --config.<field>=<value>)')
    field, _, value = arg[len('--config.'):].partition('=')
    args.extra[field] = value
  return args


def _check_paths(args: argparse.Namespace) -> None:
  """A path argument given as '' (an unset shell variable) would run the sweep into, or write its
  tables to, the current folder, or name the current folder as the sweep file: one SweepError.
  One starting with '~' is made the home folder's path (not a folder named '~' here)."""
  for name in ('sweep', 'root', 'output'):
    value = getattr(args, name, None)
    if value is not None and not value.strip():
      raise SweepError(f'--{name}={value} is empty: give the '
                       + {'sweep': 'sweep file', 'root': 'folder holding one workdir per run',
                          'output': "plot's path (e.g. plot.png)"}[name])
    if value is not None and value.startswith('~'):  # Left as it is by the shell after '='.
      setattr(args, name, os.path.expanduser(value))


def _only(text):
  """--only's run indices (None: every run)."""
  if text is None:
    return None
  try:
    only = [int(k) for k in text.split(',') if k.strip()]
  except ValueError:
    raise SweepError(f'--only={text!r}: expected run indices like 3 or 0,2') from None
  if not only:  # E.g. an unset $SLURM_ARRAY_TASK_ID: running nothing would look like success.
    raise SweepError(f'--only={text!r}: no run index given (expected e.g. 3 or 0,2)')
  if len(set(only)) != len(only):
    raise SweepError(f'--only={text!r}: a run index is given twice')
  return only


def _gather(args: argparse.Namespace) -> int:
  columns, rows = gather(args.root)
  print(write_results(os.path.abspath(args.root), columns, rows), end='')
  for text in not_finite(rows):
    print(f'warning: {text} (kept: means over its group are NaN too)', file=sys.stderr)
  if args.over:
    ignore = [f for f in args.ignore.split(',') if f.strip()]
    summary_columns, summary_rows = summarize(columns, rows, args.over, ignore)
    print(f'\nover {args.over} (mean ± sample std):\n'
          + write_summary(os.path.abspath(args.root), args.over, summary_columns,
                          summary_rows), end='')
  return 0


def _plot(args: argparse.Namespace) -> int:
  metrics = [m.strip() for m in args.metrics.split(',') if m.strip()]
  if not metrics:
    raise SweepError(f'--metrics={args.metrics!r}: name at least one of '
                     f'{", ".join(SPREAD_METRICS)}')
  plot_lib.output_format(args.output)  # Before the table is read.
  rows = plot_lib.read_summary(args.root, args.over)
  for group, metric in plot_lib.not_finite(rows, metrics):
    print(f'warning: group {group}: {metric} is not finite; left out of the plot', file=sys.stderr)
  data = plot_lib.series(rows, args.x, [f.strip() for f in args.lines.split(',') if f.strip()],
                         args.panels, metrics)
  plot_lib.plot(data, args.x, args.output, metrics)
  print(f'wrote {args.output}')
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs `run`, `gather` or `plot` with argv (without the program name); returns the exit code,
  also for --help (0) and a bad argument (2), which argparse ends with SystemExit, so that a caller
  (the `vivano sweep` command) gets a code back whatever happens."""
  try:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else 2
  try:
    _check_paths(args)
    if args.command == 'gather':
      return _gather(args)
    if args.command == 'plot':
      return _plot(args)
    if os.path.exists(args.root) and not os.path.isdir(args.root):
      raise SweepError(f'--root={args.root}: is a file, not a folder (the folder holding one '
                       'workdir per run)')
    sweep = load_sweep(args.sweep, args.extra)
    only = _only(args.only)
    launcher = shlex.split(args.launcher) if args.launcher else None
    if args.count:
      print(len(sweep.runs))
      return 0
    if args.print_commands:
      print_commands(sweep, args.root, only, launcher)
      return 0
    status = run_sweep(sweep, args.root, only, launcher, dry_run=args.dry_run)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return errors.EXIT_USAGE
  except errors.DataError as e:  # A missing or unreadable sweep or config file.
    print(f'error: {e}', file=sys.stderr)
    return errors.EXIT_DATA
  except OSError as e:  # A full or read-only disk: one line, as the vivano command gives it.
    print(f'error: {e.filename}: {e.strerror or e}' if e.filename else f'error: {e}',
          file=sys.stderr)
    return errors.EXIT_DATA
  except KeyboardInterrupt:
    return 130
  failed = [n for n, s in status.items() if s == 'failed']
  counts = {s: list(status.values()).count(s) for s in dict.fromkeys(status.values())}
  print(f'sweep {os.path.basename(sweep.path)}: '
        + ', '.join(f'{n} {s}' for s, n in counts.items()))
  if failed:
    print(f'failed: {", ".join(failed)}', file=sys.stderr)
  return 1 if failed else 0

