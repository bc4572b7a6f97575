"""Gradient accumulation: step time and memory of one batch against k microbatches, the microbatch
loop rolled (`lax.scan`) and unrolled (not a test).

Each variant runs in its own subprocess (so that its peak memory is its own) on random data of the
config's shape: B in one step, B as k microbatches in a rolled loop, and unrolled. It prints the
median step time over --steps steps after one untimed, images/s, XLA's temporary buffer size for
the step and the process's peak RSS (device 0's allocator peak on accelerators), and the step time
against one batch. train_step.train_step unrolls on CPUs and rolls elsewhere; this measures why.

  python benchmarks/bench_accumulation.py                    # configs/magnetic_tile.py, B 64, k 4
  python benchmarks/bench_accumulation.py --batch=256 --accum=4 --steps=2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RESULT = 'RESULT '


def worker(config_path: str, batch: int, accum: int, unroll: bool, steps: int) -> dict:
  """Compiles and times one variant in this process."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from vivano_jax import benchmark, config_files, sharding, train_step
  from vivano_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  config = config_files.load_config(config_path)
  config.train.batch_size = batch
  config.train.grad_accum_steps = accum
  mesh = sharding.make_mesh()
  state = train_step.create_train_state(config, model_lib.create_model(config), 100, mesh)
  data = benchmark.random_batch(config, batch, mesh)
  fn = jax.jit(functools.partial(train_step.train_step, accum_steps=accum, mesh=mesh,
                                 unroll=unroll, loss_weights=train_step.loss_weights(config)),
               donate_argnums=(0,))
  start = time.perf_counter()
  compiled = fn.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  holder = {'state': state}

  def once():
    holder['state'], metrics = compiled(holder['state'], data)
    return holder['state'], metrics
  times = benchmark.time_calls(once, steps, 1)
  peak, source = benchmark.peak_memory()
  memory = compiled.memory_analysis()
  return {'batch': batch, 'accum': accum, 'unroll': unroll, 'devices': len(jax.devices()),
          'compile_s': compile_s, 'step_s': statistics.median(times),
          'images_per_sec': batch / statistics.median(times),
          'temp_bytes': getattr(memory, 'temp_size_in_bytes', None), 'peak_bytes': peak,
          'peak_source': source}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=os.path.join(os.path.dirname(__file__), '..', 'configs',
                                                       'magnetic_tile.py'))
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--accum', type=int, default=4)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--output', default=None, help='write the results as JSON here')
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    accum, unroll = args.worker.split(',')
    print(RESULT + json.dumps(worker(args.config, args.batch, int(accum), unroll == 'unrolled',
                                     args.steps)), flush=True)
    return
  if args.batch % args.accum:
    sys.exit(f'--batch={args.batch} does not divide by --accum={args.accum}')
  results = []
  for variant in ('1,rolled', f'{args.accum},rolled', f'{args.accum},unrolled'):
    proc = subprocess.run([sys.executable, __file__, f'--config={args.config}',
                           f'--batch={args.batch}', f'--steps={args.steps}', f'--worker={variant}'],
                          capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
    if proc.returncode or not lines:
      sys.exit(f'variant {variant} failed:\n{proc.stderr[-3000:]}')
    results.append(json.loads(lines[-1][len(RESULT):]))
  base = results[0]['step_s']
  print(f'{os.path.basename(args.config)}, global batch {args.batch}, '
        f'{results[0]["devices"]} device(s), load average {os.getloadavg()[0]:.1f}')
  print('| variant | compile (s) | step (s) | images/s | XLA temp (MiB) | peak memory (MiB) '
        '| step / one batch |')
  print('|---|---|---|---|---|---|---|')
  for r in results:
    name = ('one batch' if r['accum'] == 1 else
            f'{r["accum"]} microbatches, {"unrolled" if r["unroll"] else "rolled (lax.scan)"}')
    temp = '-' if r['temp_bytes'] is None else f'{r["temp_bytes"] / 2**20:.0f}'
    print(f'| {name} | {r["compile_s"]:.1f} | {r["step_s"]:.2f} | {r["images_per_sec"]:.1f} | '
          f'{temp} | {r["peak_bytes"] / 2**20:.0f} ({r["peak_source"]}) | '
          f'{r["step_s"] / base:.2f} |')
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
