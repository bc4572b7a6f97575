"""Compile time of the initial train state at XLA:CPU's default LLVM level (3) and at the level
train_step.create_train_state uses on CPUs (train_step.INIT_CPU_COMPILER_OPTIONS), and whether the
two give the same state bit for bit (not a test; tests/test_train.py checks the bits on the tiny
config).

Each config's initialisation (parameters and optimizer state) is lowered once and compiled at both
levels, alternately, --repeats times; it prints the median compile seconds of each and their
ratio. Both compiles run in the same process one after the other, so the ratio holds on a loaded
machine where the seconds do not.

  python benchmarks/bench_init_compile.py     # configs/default.py, magnetic_tile.py, paper.py
  python benchmarks/bench_init_compile.py --configs=configs/tiny.py --repeats=3
"""

import argparse
import statistics
import time

import jax
import numpy as np

from vivano_jax import config_files
from vivano_jax import model as model_lib
from vivano_jax import train_step

DEFAULT_LEVEL = {'xla_backend_optimization_level': 3}


def measure(config_path: str, repeats: int) -> dict:
  config = config_files.load_config(config_path)
  model = model_lib.create_model(config)
  # pylint: disable-next=protected-access
  init = jax.jit(train_step._state_init(config, model, 1000))
  key = jax.random.PRNGKey(config.seed)
  lowered = init.lower(key)
  seconds = {'default': [], 'used': []}
  states = {}
  for _ in range(repeats):
    for name, options in (('default', DEFAULT_LEVEL),
                          ('used', train_step.INIT_CPU_COMPILER_OPTIONS)):
      start = time.perf_counter()
      compiled = lowered.compile(compiler_options=options)
      seconds[name].append(time.perf_counter() - start)
      states[name] = compiled(key)
  same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(states['default']), jax.tree.leaves(states['used'])))
  return {'default_s': statistics.median(seconds['default']),
          'used_s': statistics.median(seconds['used']), 'same_bits': same,
          'leaves': len(jax.tree.leaves(states['used']))}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--configs', default='configs/default.py,configs/magnetic_tile.py,'
                      'configs/paper.py')
  parser.add_argument('--repeats', type=int, default=2)
  args = parser.parse_args()
  print(f'backend {jax.default_backend()}; used: {train_step.INIT_CPU_COMPILER_OPTIONS}')
  print('| config | arrays | compile at level 3 (s) | compile as used (s) | ratio | same bits |')
  print('|---|---|---|---|---|---|')
  for path in args.configs.split(','):
    r = measure(path, args.repeats)
    print(f"| {path} | {r['leaves']} | {r['default_s']:.1f} | {r['used_s']:.1f} | "
          f"{r['default_s'] / r['used_s']:.1f}x | {r['same_bits']} |", flush=True)


if __name__ == '__main__':
  main()
