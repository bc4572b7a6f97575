"""Running a sweep: one `python -m vivano_jax.main` subprocess per run, finished runs skipped, the
plan and each run's flags recorded so a stopped sweep restarts where it stopped."""

from collections.abc import Iterable, Sequence
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Optional, TextIO

from vivano_jax import atomic_files
from vivano_jax.sweep.plan import Run, Sweep, SweepError, format_value


def default_launcher() -> list[str]:
  return [sys.executable, '-m', 'vivano_jax.main']


def main_command(sweep: Sweep, run: Run, root: str, launcher: Optional[Sequence[str]] = None
                 ) -> list[str]:
  """The argv that trains and evaluates `run` in ROOT/<name>."""
  cmd = list(launcher or default_launcher())
  workdir = os.path.join(os.path.abspath(root), run.name)
  cmd += [f'--config={sweep.base_config}', f'--workdir={workdir}']
  cmd += [f'--config.{field}={format_value(value)}' for field, value in run.flags.items()]
  return cmd


def is_finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, 'metrics.json'))


def _run_record(sweep: Sweep, run: Run) -> dict[str, Any]:
  return {'sweep': sweep.path, 'base_config': sweep.base_config, 'index': run.index,
          'name': run.name, 'overrides': run.overrides, 'flags': run.flags,
          'effective': run.effective}


def write_plan(sweep: Sweep, root: str) -> None:
  """ROOT/sweep.json: every run of the sweep, so `gather` can list those that never ran."""
  os.makedirs(root, exist_ok=True)
  atomic_files.write_json(os.path.join(root, 'sweep.json'), {
      'sweep': sweep.path, 'base_config': sweep.base_config, 'fields': sweep.fields,
      'runs': [_run_record(sweep, r) for r in sweep.runs]})


def _check_same_run(sweep: Sweep, run: Run, workdir: str) -> None:
  """A workdir started with other flags must not be resumed or skipped as if it were this run."""
  record_path = os.path.join(workdir, 'sweep_run.json')
  if not os.path.isfile(record_path):
    return
  old = atomic_files.read_json_object(record_path)
  new = json.loads(json.dumps(_run_record(sweep, run), default=repr))
  if (old.get('flags'), old.get('base_config')) != (new['flags'], new['base_config']):
    diff = sorted(k for k in set(old.get('flags', {})) | set(new['flags'])
                  if old.get('flags', {}).get(k) != new['flags'].get(k))
    raise SweepError(f'{sweep.path}: {workdir} was started with other settings (fields differing: '
                     f'{diff or ["base_config"]}); use another --root, or delete that workdir')


def select(sweep: Sweep, only: Optional[Iterable[int]]) -> list[Run]:
  if only is None:
    return list(sweep.runs)
  chosen = []
  for k in only:
    if not 0 <= k < len(sweep.runs):
      raise SweepError(f'{sweep.path}: --only={k} is out of range: the sweep has {len(sweep.runs)} '
                       f'runs (0 to {len(sweep.runs) - 1})')
    chosen.append(sweep.runs[k])
  return chosen


def _overall(workdir: str) -> dict[str, Any]:
  metrics = atomic_files.read_json_object(os.path.join(workdir, 'metrics.json')).get('metrics')
  return (metrics or {}).get('overall') or {} if isinstance(metrics, dict) else {}


def _run_one(sweep: Sweep, run: Run, workdir: str, cmd: list[str], head: str, out: TextIO) -> str:
  """Runs main for one run, its output in WORKDIR/sweep_run.log; 'done' or 'failed'."""
  os.makedirs(workdir, exist_ok=True)
  atomic_files.write_json(os.path.join(workdir, 'sweep_run.json'),
                          _run_record(sweep, run) | {'command': cmd})
  log_path = os.path.join(workdir, 'sweep_run.log')
  print(f'{head}: running (log {log_path})', file=out, flush=True)
  start = time.perf_counter()
  with open(log_path, 'a') as log:
    log.write(f'$ {shlex.join(cmd)}\n')
    log.flush()
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
  seconds = time.perf_counter() - start
  if rc == 130:
    raise KeyboardInterrupt
  if rc == 0 and is_finished(workdir):
    auroc = _overall(workdir).get('image_auroc')
    shown = 'n/a' if auroc is None else f'{auroc:.4f}'
    print(f'{head}: done in {seconds:.0f} s, image AUROC {shown}', file=out, flush=True)
    return 'done'
  with open(log_path) as f:
    tail = ''.join(f.readlines()[-20:])
  print(f'{head}: FAILED (exit code {rc}) after {seconds:.0f} s; end of {log_path}:\n{tail}',
        file=out, flush=True)
  return 'failed'


def run_sweep(sweep: Sweep, root: str, only: Optional[Iterable[int]] = None,
              launcher: Optional[Sequence[str]] = None, dry_run: bool = False,
              out: Optional[TextIO] = None) -> dict[str, str]:
  """Runs the selected runs one after another; returns {name: 'done'|'skipped'|'failed'|'planned'}.

  A failed run does not stop the sweep: its log tail is printed and the next run starts.
  """
  out = out or sys.stdout
  root = os.path.abspath(root)
  runs = select(sweep, only)
  if launcher and not dry_run and shutil.which(launcher[0]) is None:
    # Else the first run fails with a bare '<name>: No such file or directory', the plan written.
    raise SweepError(f'--launcher={shlex.join(launcher)}: {launcher[0]!r} is neither a command on '
                     'PATH nor an executable file')
  if not dry_run:
    write_plan(sweep, root)
  status = {}
  for k, run in enumerate(runs):
    workdir = os.path.join(root, run.name)
    head = f'[{k + 1}/{len(runs)}] run {run.index} {run.name}'
    _check_same_run(sweep, run, workdir)
    if is_finished(workdir):
      status[run.name] = 'skipped'
      print(f'{head}: finished before (metrics.json), skipped', file=out, flush=True)
      continue
    cmd = main_command(sweep, run, root, launcher)
    if dry_run:
      status[run.name] = 'planned'
      e = run.effective
      rate = (f": learning rate {e['learning_rate']:.4g}, warmup {e['warmup_steps']} steps" if e
              else '')
      print(f'{head}{rate}\n  {shlex.join(cmd)}', file=out, flush=True)
      continue
    status[run.name] = _run_one(sweep, run, workdir, cmd, head, out)
  return status


def print_commands(sweep: Sweep, root: str, only: Optional[Iterable[int]] = None,
                   launcher: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> None:
  """One shell command per unfinished run (finished ones left out), to submit as separate jobs.

  Writes the plan (ROOT/sweep.json) too, so `gather` lists runs that never started.
  """
  out = out or sys.stdout
  write_plan(sweep, os.path.abspath(root))
  for run in select(sweep, only):
    if not is_finished(os.path.join(os.path.abspath(root), run.name)):
      print(shlex.join(main_command(sweep, run, root, launcher)), file=out)
