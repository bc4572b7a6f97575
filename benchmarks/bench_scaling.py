"""Throughput of the train step on 1, 2, 4 and 8 devices, weak and strong scaling (not a test).

Weak scaling keeps the batch per device fixed (global batch = per-device batch x devices); strong
scaling keeps the global batch fixed (split over more devices). Each device count runs in its own
subprocess, since JAX fixes its devices at start: on a CPU (the default) with
XLA_FLAGS=--xla_force_host_platform_device_count=N, on GPUs (--platform=gpu) with
CUDA_VISIBLE_DEVICES=0..N-1. For every count and mode it prints the global batch, the step time
(median of --steps steps after --warmup, random data of the configured shape, as `vivano
benchmark`), images/s, the speed-up and efficiency against one device, and where a device's time
goes, from a jax.profiler trace of --profile_steps steps: the time in XLA operations per device
and step, split into communication (the collectives: all-reduce, all-gather, reduce-scatter,
collective-permute, all-to-all) and compute (every other operation); the rest of the step is the
host (dispatch, input) or idle. The compiled program's collectives (count and MiB per step) are
read from its HLO.

Simulated CPU devices share this machine's cores: N of them do not compute N times faster, and a
collective's time includes waiting at its rendezvous for the slowest device. What the CPU run
measures is the program's cost of being split (the collectives, the smaller per-device work), not
the speed-up of real hardware; the same script on a GPU host gives that (launch/large_batch.sh).

  python benchmarks/bench_scaling.py    # configs/tiny.py, 4 / device, 32 global: ~3 min on 2 cores
  python benchmarks/bench_scaling.py --config=configs/magnetic_tile.py --per_device_batch=4 \\
      --global_batch=64 --steps=10 --output=scaling.json
  python benchmarks/bench_scaling.py --platform=gpu --config=configs/magnetic_tile.py \\
      --per_device_batch=64 --global_batch=512 --set=train.compute_dtype=bfloat16
"""

import argparse
import copy
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4,
               's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
RESULT = 'RESULT '  # The worker's line of JSON on stdout.


# --------------------------------------------------------------------------------------------------
# The compiled program and its trace.


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, int]]:
  """{instruction name: (opcode, result bytes)} of every instruction of an HLO module's text."""
  ops = {}
  for line in hlo_text.splitlines():
    if ' = ' not in line:
      continue
    name, rest = line.split(' = ', 1)
    name = name.strip().removeprefix('ROOT ').strip().lstrip('%')
    m = re.search(r'\s([a-z][a-z0-9\-]*)\(', ' ' + rest)
    if not m or not name:
      continue
    shapes = re.findall(r'\b([a-z]+[0-9]*)\[([0-9,]*)\]', rest[:m.start()])
    size = sum(DTYPE_BYTES.get(t, 4) * _prod(d) for t, d in shapes)
    ops[name] = (m.group(1), size)
  return ops


def _prod(dims: str) -> int:
  n = 1
  for d in filter(None, dims.split(',')):
    n *= int(d)
  return n


def is_collective(opcode: str) -> bool:
  return any(opcode.startswith(c) for c in COLLECTIVES)


def collectives(ops: dict[str, tuple[str, int]]) -> tuple[int, int]:
  """(count, bytes) of the collectives in a program (an async pair counted once, at its start)."""
  chosen = [size for op, size in ops.values() if is_collective(op) and not op.endswith('-done')]
  return len(chosen), sum(chosen)


def _union(intervals: list[tuple[float, float]]) -> float:
  total, end = 0.0, float('-inf')
  for s, e in sorted(intervals):
    if e > end:
      total += e - max(s, end)
      end = e
  return total


def op_times(trace_dir: str, ops: dict[str, tuple[str, int]]) -> tuple[float, float]:
  """(seconds in XLA operations, of which in collectives), summed over the trace's devices.

  Events are matched to the program's instruction names: on GPUs on the device planes, on a CPU
  on the host threads that run each device's operations. Nested operations (a loop's body) and
  overlapping ones are counted once per thread (the union of their intervals).
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = max(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True),
             key=os.path.getmtime)
  data = jax.profiler.ProfileData.from_file(path)
  planes = [p for p in data.planes if p.name.startswith('/device:')]
  busy = comm = 0.0
  for plane in planes or [data.find_plane_with_name('/host:CPU')]:
    for line in plane.lines:
      spans = [(e.start_ns, e.end_ns, is_collective(ops[e.name][0]))
               for e in line.events if e.name in ops]
      busy += _union([(s, e) for s, e, _ in spans])
      comm += _union([(s, e) for s, e, c in spans if c])
  return busy * 1e-9, comm * 1e-9


# --------------------------------------------------------------------------------------------------
# One device count (the worker subprocess).


def measure(config, batch_size: int, steps: int, warmup: int, profile_steps: int) -> dict:
  """Times the train step at global `batch_size` on every device; traces a few steps."""
  import jax  # pylint: disable=g-import-not-at-top
  from vivano_jax import benchmark  # pylint: disable=g-import-not-at-top
  from vivano_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from vivano_jax import sharding  # pylint: disable=g-import-not-at-top
  from vivano_jax import train_step  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  config.train.batch_size = batch_size
  mesh = sharding.make_mesh()
  n = mesh.devices.size
  state = train_step.create_train_state(config, model_lib.create_model(config), 1000, mesh)
  batch = benchmark.random_batch(config, batch_size, mesh)
  start = time.perf_counter()
  compiled = train_step.make_train_step(config, mesh).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  holder = {'state': state}  # The step donates its state.

  def once():
    holder['state'], metrics = compiled(holder['state'], batch)
    return metrics
  step_s = statistics.median(benchmark.time_calls(once, steps, warmup))
  ops = hlo_ops(compiled.as_text())
  count, nbytes = collectives(ops)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    try:
      for _ in range(profile_steps):
        jax.block_until_ready(once())
    finally:
      jax.profiler.stop_trace()
    busy, comm = op_times(trace_dir, ops)
  per = 1.0 / (n * profile_steps)  # Per device and step.
  return {'devices': n, 'batch_size': batch_size, 'compile_s': compile_s, 'step_s': step_s,
          'images_per_sec': batch_size / step_s, 'ops_s': busy * per, 'comm_s': comm * per,
          'compute_s': (busy - comm) * per, 'collectives': count, 'collective_bytes': nbytes}


def worker(args: argparse.Namespace) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from vivano_jax import config_files  # pylint: disable=g-import-not-at-top
  n = jax.device_count()
  if n != args.worker:
    sys.exit(f'expected {args.worker} devices, JAX sees {n}: {jax.devices()}')
  config = config_files.apply_overrides(config_files.load_config(args.config),
                                        dict(s.split('=', 1) for s in args.set))
  records = {}
  for mode in args.modes.split(','):
    batch = args.per_device_batch * n if mode == 'weak' else args.global_batch
    if batch % (n * config.train.grad_accum_steps):
      records[mode] = {'devices': n, 'batch_size': batch, 'skipped': 'batch does not divide'}
      continue
    records[mode] = measure(config, batch, args.steps, args.warmup, args.profile_steps)
  platform = jax.devices()[0].platform
  print(RESULT + json.dumps({'platform': platform, 'device_kind': jax.devices()[0].device_kind,
                             'records': records}), flush=True)


# --------------------------------------------------------------------------------------------------
# The driver: one subprocess per device count, then the tables.


def _environment(platform: str, n: int) -> dict[str, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2'))
  if platform == 'gpu':
    env['CUDA_VISIBLE_DEVICES'] = ','.join(str(i) for i in range(n))
    return env
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={n}'])
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _run_worker(args: argparse.Namespace, n: int, argv: list[str]) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *argv, f'--worker={n}']
  proc = subprocess.run(cmd, env=_environment(args.platform, n), capture_output=True, text=True,
                        check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
  if proc.returncode or not lines:
    sys.exit(f'{n} device(s): the worker failed (exit code {proc.returncode}):\n'
             + proc.stderr[-3000:])
  return json.loads(lines[-1][len(RESULT):])


def format_table(mode: str, records: list[dict], args: argparse.Namespace) -> str:
  what = (f'{args.per_device_batch} images per device' if mode == 'weak' else
          f'global batch {args.global_batch}')
  head = ('devices', 'batch', 'step ms', 'images/s', 'speed-up', 'efficiency', 'ops ms/dev',
          'compute ms', 'comm ms', 'comm %', 'collectives', 'MiB/step')
  rows = []
  base = next((r for r in records if 'skipped' not in r), None)
  for r in records:
    if 'skipped' in r:
      rows.append((str(r['devices']), str(r['batch_size'])) + ('-',) * (len(head) - 2))
      continue
    speed = r['images_per_sec'] / base['images_per_sec'] * base['devices']
    rows.append((str(r['devices']), str(r['batch_size']), f"{r['step_s'] * 1e3:.1f}",
                 f"{r['images_per_sec']:.1f}", f'{speed:.2f}', f"{speed / r['devices']:.0%}",
                 f"{r['ops_s'] * 1e3:.1f}", f"{r['compute_s'] * 1e3:.1f}",
                 f"{r['comm_s'] * 1e3:.1f}", f"{r['comm_s'] / max(r['ops_s'], 1e-12):.0%}",
                 str(r['collectives']), f"{r['collective_bytes'] / 2**20:.2f}"))
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
  fmt = lambda cells: '  '.join(c.rjust(w) for c, w in zip(cells, widths))
  return '\n'.join([f'{mode} scaling ({what}):', fmt(head)] + [fmt(row) for row in rows])


def _parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=os.path.join(os.path.dirname(os.path.abspath(
      __file__)), '..', 'configs', 'tiny.py'), help='config file (default configs/tiny.py)')
  parser.add_argument('--set', action='append', default=[],
                      help='a config field, e.g. --set=train.grad_accum_steps=2 (repeatable)')
  parser.add_argument('--devices', default='1,2,4,8', help='device counts')
  parser.add_argument('--modes', default='weak,strong')
  parser.add_argument('--per_device_batch', type=int, default=4, help='weak scaling')
  parser.add_argument('--global_batch', type=int, default=32, help='strong scaling')
  parser.add_argument('--steps', type=int, default=5, help='timed steps (the median is shown)')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--profile_steps', type=int, default=3)
  parser.add_argument('--platform', choices=('cpu', 'gpu'), default='cpu',
                      help='cpu: simulated devices; gpu: the first N GPUs')
  parser.add_argument('--output', default=None, help='write every record as JSON here')
  parser.add_argument('--worker', type=int, default=0, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  args = _parse(argv)
  if args.worker:
    worker(args)
    return
  counts = [int(n) for n in args.devices.split(',')]
  fields = ''.join(f' --set={f}' for f in args.set)
  print(f'{args.platform}: {counts} device(s), config {os.path.normpath(args.config)}{fields}; '
        f'{os.cpu_count()} CPU cores', flush=True)
  results = {}
  for n in counts:
    start = time.perf_counter()
    results[n] = _run_worker(args, n, argv)
    print(f'  {n} device(s): {time.perf_counter() - start:.0f} s', flush=True)
  for mode in args.modes.split(','):
    print('\n' + format_table(mode, [results[n]['records'][mode] for n in counts], args))
  first = results[counts[0]]
  kind = '' if first['device_kind'] == first['platform'] else f" ({first['device_kind']})"
  print(f"\n{first['platform']}{kind}; step: median of {args.steps} after "
        f"{args.warmup} warm-up; ops, compute, comm: per device and step, from a trace of "
        f"{args.profile_steps} steps (comm = collectives, waiting included)", flush=True)
  if first['platform'] == 'cpu' and max(counts) > 1:
    print('simulated devices share the CPU cores: the speed-up is not hardware\'s (docstring)')
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({'args': vars(args), 'results': {str(n): r for n, r in results.items()}}, f,
                indent=1)
    print(f'results: {args.output}')


if __name__ == '__main__':
  main(sys.argv[1:])
