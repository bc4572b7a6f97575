"""Where the train step's time goes: the ViT encoder and the conv decoder timed separately (not a test).

Forward + backward of each module alone at the paper's sizes (batch 8, 512 px, patch 64, width 512,
depth 6, 8 heads, MLP 1024; decoder 256 -> 8 channels), with XLA's FLOP count, and a 2048^3 f32 matmul
as the ceiling:  python benchmarks/bench_model_parts.py
"""
import time, jax, jax.numpy as jnp, numpy as np
from vivano_jax.model import decoder as D, encoder as E
def bench(mod, inp, name):
  v = mod.init(jax.random.PRNGKey(0), inp, train=False)
  def loss(p):
    if 'batch_stats' in v:
      out, _ = mod.apply(p, inp, train=True, mutable=['batch_stats'])
    else:
      out = mod.apply(p, inp, train=True)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.mean(jnp.square(out))
  g = jax.jit(jax.grad(loss))
  c = g.lower(v).compile(); fl = c.cost_analysis()['flops']
  jax.block_until_ready(g(v)); ts=[]
  for _ in range(3):
    t=time.perf_counter(); jax.block_until_ready(g(v)); ts.append(time.perf_counter()-t)
  t=min(ts); print(f'{name}: {t*1000:.0f} ms, {fl/1e9:.1f} GFLOP, {fl/t/1e9:.0f} GFLOP/s', flush=True)
x = jnp.asarray(np.random.randn(8,512,512,3).astype(np.float32))
bench(E.ViTEncoder(64,512,6,8,1024,False), x, 'ViT encoder (fwd+bwd, batch 8, 512 px)')
z = jnp.asarray(np.random.randn(8,8,8,32).astype(np.float32))
bench(D.ConvDecoder(D.decoder_features(64,256,8), 3, 'batch'), z, 'conv decoder (fwd+bwd)')
a = jnp.asarray(np.random.randn(2048,2048).astype(np.float32))
f = jax.jit(lambda a: a@a); jax.block_until_ready(f(a)); t=time.perf_counter(); [jax.block_until_ready(f(a)) for _ in range(5)]; t=(time.perf_counter()-t)/5
print(f'matmul 2048^3: {2*2048**3/t/1e9:.0f} GFLOP/s')
