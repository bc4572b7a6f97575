"""The test suite's time: wall, CPU, and where the CPU goes, per worker and per test file.

Runs `pytest` (setup.cfg's options: two pytest-xdist workers on a 2-core machine) with this file as
a plugin that records, for every test, the CPU time of its worker and of the worker's subprocesses
and the wall time. Prints the load average before the run, the suite's wall and CPU time, each
worker's busy and waiting time (how evenly the two ended), the test files by CPU time, heaviest
first, beside the order conftest.HEAVIEST_FILES_FIRST gives pytest-xdist, and the tests of most CPU
time (`--top`).

  python benchmarks/bench_test_suite.py                 # the whole suite
  python benchmarks/bench_test_suite.py -- -k train     # arguments after -- go to pytest

On this machine the hour moves the suite's time by a third (BENCHMARKS.md): compare two runs
back to back, and read the CPU time and the ratios rather than the seconds alone.
"""

import argparse
import ast
import collections
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_OUT_ENV = 'VIVANO_BENCH_SUITE_DIR'


def _cpu(who: int) -> float:
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


# --- The plugin, in pytest's processes (`-p bench_test_suite`): one row per test.

_rows: list[tuple[str, float, float, float]] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
  del nextitem
  own, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  try:
    return (yield)
  finally:
    _rows.append((item.nodeid, _cpu(resource.RUSAGE_SELF) - own,
                  _cpu(resource.RUSAGE_CHILDREN) - children, time.perf_counter() - start))


def pytest_unconfigure(config):
  del config
  folder = os.environ.get(_OUT_ENV)
  if folder:
    name = os.environ.get('PYTEST_XDIST_WORKER', 'main')
    pathlib.Path(folder, f'{name}.json').write_text(json.dumps(_rows))


# --- The benchmark.


def _heaviest_files_first() -> tuple[str, ...]:
  """conftest.HEAVIEST_FILES_FIRST, read without importing conftest (which sets up a test run)."""
  tree = ast.parse((REPO / 'tests' / 'conftest.py').read_text())
  for node in tree.body:
    if isinstance(node, ast.Assign) and [getattr(t, 'id', None) for t in node.targets] == [
        'HEAVIEST_FILES_FIRST']:
      return ast.literal_eval(node.value)
  return ()


def _report(rows_by_worker: dict[str, list], wall: float, cpu: float, load: float,
            top: int) -> None:
  print(f'load average before: {load:.2f}')
  print(f'suite: {wall:.0f} s wall, {cpu:.0f} s CPU (user + sys, all processes), '
        f'{len(sum(rows_by_worker.values(), []))} tests')
  for name, rows in sorted(rows_by_worker.items()):
    busy = sum(r[1] + r[2] for r in rows)
    spent = sum(r[3] for r in rows)
    print(f'  {name}: tests {spent:.0f} s wall, {busy:.0f} s CPU '
          f'(own {sum(r[1] for r in rows):.0f}, subprocesses {sum(r[2] for r in rows):.0f})')
  files = collections.defaultdict(float)
  for rows in rows_by_worker.values():
    for nodeid, own, children, _ in rows:
      files[nodeid.split('::')[0].rsplit('/', 1)[-1]] += own + children
  listed = {name: i for i, name in enumerate(_heaviest_files_first())}
  print('test files by CPU time (s), and their place in conftest.HEAVIEST_FILES_FIRST:')
  for name, seconds in sorted(files.items(), key=lambda kv: -kv[1]):
    place = listed.get(name)
    print(f'  {seconds:7.1f}  {name:32s} {"-" if place is None else place + 1}')
  if top:
    tests = sorted(sum(rows_by_worker.values(), []), key=lambda r: -(r[1] + r[2]))[:top]
    print(f'the {len(tests)} tests of most CPU time (s): own + subprocesses, wall')
    for nodeid, own, children, spent in tests:
      print(f'  {own:6.1f} + {children:5.1f}  {spent:6.1f}  {nodeid}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--top', type=int, default=30, help='list this many tests of most CPU time')
  parser.add_argument('pytest_args', nargs='*', help='after --: passed to pytest')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix='vivano-bench-suite-') as folder:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(pathlib.Path(__file__).parent), str(REPO), os.environ.get('PYTHONPATH', '')]),
               **{_OUT_ENV: folder})
    load = os.getloadavg()[0]
    cpu_before, start = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    code = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'bench_test_suite',
                           '-p', 'no:cacheprovider', *args.pytest_args], cwd=REPO, env=env,
                          check=False).returncode
    wall, cpu = time.perf_counter() - start, _cpu(resource.RUSAGE_CHILDREN) - cpu_before
    rows = {p.stem: json.loads(p.read_text()) for p in pathlib.Path(folder).glob('*.json')}
  if len(rows) > 1:
    rows.pop('main', None)  # pytest-xdist's controller runs no test.
  _report(rows, wall, cpu, load, args.top)
  sys.exit(code)


if __name__ == '__main__':
  main()
