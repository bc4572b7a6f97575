"""Serving speed: ONNX Runtime (CPU) against the JAX scorer, and the export time of each format (not
a test).

For the 128 px recipe (config_defaults.plain_128px_config: combined per-pixel standardised score,
map_max) and the paper's 512 px config (config_defaults.paper_config: NLL, 3 channels), with random
weights (speed does not depend on training; the 128 px score's statistics come from random
images), this script

  * exports the scoring function to every format with `export_model.write_model` (conversion,
    writing and the check against the JAX scorer) and prints the time of each, and of the
    conversion alone;
  * times images/s of the JAX scorer (score_function.ScoreFunction, jitted) and of the exported
    ONNX model in ONNX Runtime's CPU provider, on uint8 batches of each size, after a warm-up
    call (compilation excluded), the best of `--repeats` timings of `--iterations` calls.

  python benchmarks/bench_serving.py [--sizes=128,512] [--batches=1,16] [--repeats=3]
      [--iterations=5] [--formats=onnx,saved_model,jax] [--all_components=1]

A quick check that it runs: --sizes=128 --batches=1 --repeats=1 --iterations=1 --formats=onnx.
jax2onnx imports its plugins once per process (tens of seconds on 2 cores): timed apart, before the
first ONNX export.
"""

import argparse
import logging
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from vivano_jax import config_defaults
from vivano_jax import export_model
from vivano_jax import model as model_lib
from vivano_jax import scorer as scorer_lib
from vivano_jax import scoring
from vivano_jax import sharding
from vivano_jax import train_step
from vivano_jax.serving import from_checkpoint
from vivano_jax.serving import model_dir
from vivano_jax.serving import score_function

CONFIGS = {128: config_defaults.plain_128px_config, 512: config_defaults.paper_config}


def _run(size: int) -> from_checkpoint.Run:
  """A Run of the config for `size` with random weights (and statistics from random images)."""
  config = CONFIGS[size]()
  mesh = sharding.make_mesh(jax.devices()[:1])
  config.train.eval_batch_size = 8
  state = train_step.create_train_state(config, model_lib.create_model(config), 1, mesh)
  stats = None
  if scoring.needs_stats(config.score):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, size, size, config.dataset.channels)).astype(np.float32)
    stats = scorer_lib.Scorer(config, mesh).arrays(state, images).stats()
  record = {'threshold': 0.0, 'rule': 'anomalous if score >= threshold', 'checkpoint_step': 0,
            'pixel_display_range': [0.0, 1.0]}
  return from_checkpoint.Run(config=config, record=record, state=state, step=0, stats=stats)


def _images_per_sec(fn, images: np.ndarray, repeats: int, iterations: int) -> float:
  fn(images)  # Warm-up: compilation, session set-up.
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(iterations):
      fn(images)
    best = min(best, (time.perf_counter() - start) / iterations)
  return len(images) / best


def _import_onnx_plugins() -> float:
  start = time.perf_counter()
  # Plugins for libraries of other versions fail to import and log tracebacks: harmless here.
  logging.getLogger('jax2onnx').setLevel(logging.ERROR)
  from jax2onnx.plugins import plugin_system  # pylint: disable=g-import-not-at-top
  plugin_system.import_all_plugins()
  return time.perf_counter() - start


def _bench_size(size: int, args, root: pathlib.Path) -> None:
  run = _run(size)
  sf = score_function.build(run.config, run.state, run.stats, bool(args.all_components))
  params = sum(x.size for x in jax.tree.leaves(run.state.params))
  print(f'\n{size} px ({run.config.dataset.channels} channel(s), {params / 1e6:.1f} M parameters, '
        f'score {run.config.score.image}/{run.config.score.pixel}, outputs '
        f'{", ".join(sf.output_names)})', flush=True)
  folders = {}
  for fmt in args.formats:
    folders[fmt] = root / f'{size}_{fmt}'
    start = time.perf_counter()
    card = export_model.write_model(run, sf, fmt, str(folders[fmt]), str(root / 'no_workdir'),
                                     ('cpu',))
    worst = card['verification']['max_relative_difference']
    print(f'  export {fmt:<11} {time.perf_counter() - start:6.1f} s (conversion '
          f'{card["convert_seconds"]:.1f} s); differs from JAX by {worst["score"]:.1e} (score), '
          f'{worst["map"]:.1e} (map) of the range', flush=True)
  rng = np.random.default_rng(1)
  onnx = model_dir.load(folders['onnx']) if 'onnx' in folders else None
  for batch in args.batches:
    images = rng.integers(0, 256, (batch, size, size, run.config.dataset.channels), np.uint8)
    speed = lambda fn: _images_per_sec(fn, images, args.repeats, args.iterations)
    line = f'  batch {batch:>3}: JAX {speed(sf):8.2f}'
    if onnx is not None:
      line += f', ONNX Runtime {speed(onnx):8.2f}'
    print(line + ' images/s', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='128,512')
  parser.add_argument('--batches', default='1,16')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--iterations', type=int, default=5)
  parser.add_argument('--formats', default=','.join(model_dir.FORMATS))
  parser.add_argument('--all_components', type=int, default=1,
                      help='1: every component, as predict writes them (runs the decoder); 0: '
                      'only what the score needs (export-model --noall_components)')
  args = parser.parse_args()
  args.batches = [int(b) for b in args.batches.split(',')]
  args.formats = args.formats.split(',')
  print(f'{os.cpu_count()} CPU(s), JAX {jax.__version__} on {jax.devices()[0].platform}; '
        f'ONNX Runtime CPU provider', flush=True)
  if 'onnx' in args.formats:
    print(f'jax2onnx plugin import (once per process): {_import_onnx_plugins():.1f} s', flush=True)
  with tempfile.TemporaryDirectory() as root:
    for size in (int(s) for s in args.sizes.split(',')):
      _bench_size(size, args, pathlib.Path(root))


if __name__ == '__main__':
  main()
