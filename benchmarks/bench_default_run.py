"""Wall time of README's first command (after `pip install`), from a cold tfds data dir (not a test).

Runs `python -m vivano_jax.main --config=configs/default.py --workdir=<tmp>` as a user would, with a fresh
tfds data dir so dataset preparation is included, and prints the run's console output, the time of
each stage (from its "<stage>: done in" lines; "startup" is Python, JAX and TensorFlow imports and
what precedes the first stage), the wall time, the metrics and the load average before and after.

  python benchmarks/bench_default_run.py [--config=configs/default.py] [-- extra main flags]
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default=str(REPO / 'configs' / 'default.py'))
  args, extra = parser.parse_known_args()
  if extra[:1] == ['--']:  # The separator of the usage line is not a flag of main.
    extra = extra[1:]
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, 'run')
    cmd = [sys.executable, '-m', 'vivano_jax.main', f'--config={args.config}', f'--workdir={workdir}',
           f'--config.dataset.data_dir={os.path.join(tmp, "tfds")}', *extra]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
      sys.exit(f'run failed:\n{proc.stderr[-3000:]}')
    print(proc.stdout.strip())
    stages = [(m.group(1), _seconds(m.group(2))) for m in
              re.finditer(r'^(\S[^\n]*?): done in (\S+)$', proc.stdout, re.MULTILINE)]
    rest = wall - sum(t for _, t in stages)
    print('\n| stage | seconds |\n| --- | --- |')
    for name, t in stages + [('startup, summary and exit (the rest)', rest)]:
      print(f'| {name} | {t:.0f} |')
    summary = json.loads(pathlib.Path(workdir, 'metrics.json').read_text())
    overall = summary['metrics']['overall']
    print(f'\nwall time {wall:.0f} s ({wall / 60:.1f} min) on {os.cpu_count()} CPUs, '
          f'{summary["checkpoint_step"]} steps, image AUROC {overall["image_auroc"]:.4f}, '
          f'pixel AUROC {overall["pixel_auroc"]:.4f}, AU-PRO {overall["au_pro"]:.4f}; '
          f'load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after')


def _seconds(text: str) -> float:
  """'2m05s' / '45s' / '1h02m' -> seconds."""
  total = 0.0
  for value, unit in re.findall(r'(\d+)([hms])', text):
    total += int(value) * {'h': 3600, 'm': 60, 's': 1}[unit]
  return total


if __name__ == '__main__':
  main()
