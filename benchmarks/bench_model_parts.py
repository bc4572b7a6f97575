"""Where the train step's time goes: the ViT encoder and the conv decoder timed separately (not a test).

Forward + backward of each module alone at the paper's sizes (batch 8, 512 px, patch 64, width 512,
depth 6, 8 heads, MLP 1024; decoder 256 -> 8 channels, both upsampling options and both output
layers), with XLA's FLOP count, and a 2048^3 f32 matmul measured in the same process as the ceiling:

  python benchmarks/bench_model_parts.py [--batch=8] [--size=512] [--profile_dir=DIR]

With --profile_dir, one step of each part is traced with `jax.profiler` (open it in TensorBoard's
profile plugin or Perfetto).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from vivano_jax.model import decoder as decoder_lib
from vivano_jax.model import encoder as encoder_lib


def _matmul_ceiling() -> float:
  a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32))
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  t = time.perf_counter()
  for _ in range(5):
    jax.block_until_ready(f(a))
  return 2 * 2048 ** 3 / ((time.perf_counter() - t) / 5)


def _bench(module, inputs, name, ceiling, profile_dir):
  variables = module.init(jax.random.PRNGKey(0), inputs, train=False)

  def loss(v):
    if 'batch_stats' in v:
      out, _ = module.apply(v, inputs, train=True, mutable=['batch_stats'])
    else:
      out = module.apply(v, inputs, train=True)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.mean(jnp.square(out))

  grad = jax.jit(jax.grad(loss))
  flops = grad.lower(variables).compile().cost_analysis()['flops']
  jax.block_until_ready(grad(variables))
  times = []
  for _ in range(3):
    t = time.perf_counter()
    jax.block_until_ready(grad(variables))
    times.append(time.perf_counter() - t)
  best = min(times)
  print(f'{name}: {best * 1e3:.0f} ms, {flops / 1e9:.1f} GFLOP, {flops / best / 1e9:.0f} GFLOP/s, '
        f'{100 * flops / best / ceiling:.0f} % of the ceiling', flush=True)
  if profile_dir:
    with jax.profiler.trace(f'{profile_dir}/{name.split()[0]}'):
      jax.block_until_ready(grad(variables))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--profile_dir', default='')
  args = parser.parse_args()
  ceiling = _matmul_ceiling()
  print(f'matmul 2048^3 ceiling: {ceiling / 1e9:.0f} GFLOP/s', flush=True)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32))
  _bench(encoder_lib.ViTEncoder(64, 512, 6, 8, 1024, False), x,
         f'ViT-encoder (batch {args.batch}, {args.size} px)', ceiling, args.profile_dir)
  grid = args.size // 64
  z = jnp.asarray(rng.normal(size=(args.batch, grid, grid, 32)).astype(np.float32))
  features = decoder_lib.decoder_features(64, 256, 8)
  for upsample, output in (('subpixel', 'conv'), ('subpixel', 'subpixel'), ('nearest', 'conv')):
    _bench(decoder_lib.ConvDecoder(features, 3, 'batch', upsample, output), z,
           f'{upsample}-decoder,{output}-output (batch {args.batch}, {args.size} px)', ceiling,
           args.profile_dir)
  print(f'matmul 2048^3 ceiling, measured again: {_matmul_ceiling() / 1e9:.0f} GFLOP/s')


if __name__ == '__main__':
  main()
