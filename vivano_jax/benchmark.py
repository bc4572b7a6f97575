"""Speed, FLOPs and memory of a configuration's train and score steps, on random data.

  vivano benchmark --config=configs/paper.py [--config.train.batch_size=8]
      [--sizes=128,256,512] [--steps=10] [--output=bench.json] [--profile_dir=DIR]

No dataset is read: the batches are uniform noise in [-1, 1] of the configured shape. For each image
size in --sizes (patch size fixed by the config, so the patch grid grows with the size):
  - compile time of the train step (lowering + XLA compilation), seconds;
  - train step time (median of --steps steps after --warmup, each waited for) and images/s;
  - score images/s of the scoring step (`scorer_lib.make_eval_step`): NLL only (decode=False) and with
    the decoder (decode=True);
  - model FLOPs per image of the train step (forward, backward and update), from XLA's cost analysis
    of the lowered, not yet partitioned program: a count for the whole global batch, whatever the
    device count. Counted with remat off and one microbatch, since XLA counts a loop body once and a
    rematerialised forward twice;
  - achieved train FLOP/s and MFU = achieved / ceiling, where the ceiling is the FLOP/s of a large
    matmul in the compute dtype measured here on all devices at once; the same for each score step
    (score MFU: its FLOPs per image x images/s / ceiling);
  - memory: XLA's buffer sizes for the train step per device (arguments + outputs + temporaries -
    donated), and the peak of the device's allocator where it reports one (GPU, TPU), else the peak
    resident memory of this process (CPU; a maximum over the whole run so far).
Sizes run in the order given; the batch is sharded over every device (XLA_FLAGS=
--xla_force_host_platform_device_count=8 simulates 8 on a CPU). --profile_dir captures a
jax.profiler trace (TensorBoard's profile plugin or Perfetto reads it) of a few train and score
steps per size.
"""

if __name__ == '__main__':
  # Before this file's own imports: `python -m vivano_jax.benchmark` then runs the
  # command exactly as `vivano benchmark` does, with the libraries imported after the entry point has
  # routed their logs (cli.py), and exits; the imports below serve the imported module.
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('benchmark')

import copy
import os
import resource
import statistics
import time
from typing import Any, Callable, Optional, Sequence

from absl import flags
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
from ml_collections import config_flags
import numpy as np

from vivano_jax import atomic_files
from vivano_jax import errors
from vivano_jax import model as model_lib
from vivano_jax import scorer as scorer_lib
from vivano_jax import sharding
from vivano_jax import train as train_lib
from vivano_jax import train_step

PROFILE_STEPS = 3


# --------------------------------------------------------------------------------------------------
# Measurements.


def flops_of(cost: Any) -> float:
  """FLOPs from `Lowered/Compiled.cost_analysis()`: a dict in jax 0.10, a list of dicts before."""
  if cost is None:
    return float('nan')
  if isinstance(cost, dict):
    cost = [cost]
  return float(sum(c.get('flops', 0.0) for c in cost))


def time_calls(fn: Callable[[], Any], steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` calls of `fn` after `warmup` calls, each waited for."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def matmul_ceiling(mesh: Mesh, n: int, dtype: Any = jnp.float32, repeats: int = 5) -> float:
  """FLOP/s of an [n, n] @ [n, n] matmul on every device at once (summed), median of repeats.

  The operands are made on the devices, so no host transfer is timed.
  """
  d = mesh.devices.size
  sharded = NamedSharding(mesh, P('data'))
  make = jax.jit(lambda key: jax.random.normal(key, (d, n, n), dtype), out_shardings=sharded)
  a, b = make(jax.random.PRNGKey(0)), make(jax.random.PRNGKey(1))
  matmul = jax.jit(lambda x, y: jnp.einsum('dij,djk->dik', x, y), out_shardings=sharded)
  seconds = statistics.median(time_calls(lambda: matmul(a, b), repeats, warmup=1))
  return 2.0 * d * n ** 3 / seconds


def default_matmul_size(platform: str, num_devices: int) -> int:
  """8192 per accelerator; on CPUs about 2e10 FLOPs in all (a few seconds), a power of two."""
  if platform != 'cpu':
    return 8192
  return int(2 ** np.floor(np.log2((1e10 / num_devices) ** (1 / 3))))


def peak_memory() -> tuple[Optional[int], str]:
  """(bytes, source): device 0's allocator peak where reported, else the process's peak RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device 0 peak_bytes_in_use'
  # Linux reports ru_maxrss in KiB.
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, 'process peak RSS'


def random_batch(config: ml_collections.ConfigDict, batch_size: int, mesh: Mesh, seed: int = 0,
                 train: bool = True) -> dict[str, jax.Array]:
  """{'image': float32 [batch_size, S, S, C]} uniform in [-1, 1], sharded like the real batches.
  A train batch (`train`) of a config with `train.synthetic_anomalies` > 0 is the batch such a run
  trains on: synthetic anomalies drawn on that fraction of the images, with their targets, masks
  and patch weights (train.synthetic_batches)."""
  s, c = config.dataset.image_size, config.dataset.channels
  local = batch_size // jax.process_count()
  rng = np.random.default_rng([seed, jax.process_index()])
  images = rng.uniform(-1.0, 1.0, (local, s, s, c)).astype(np.float32)
  if train and config.train.synthetic_anomalies > 0:
    batch = next(train_lib.synthetic_batches(iter([{'image': images}]), config, seed))
    return sharding.global_batch(batch, mesh)
  return sharding.global_batch({'image': images}, mesh)


def _canonical(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config whose train step XLA counts fully: no remat, one microbatch (same model FLOPs)."""
  c = copy.deepcopy(config)
  c.model.remat = False
  if 'grad_accum_steps' in c.train:
    c.train.grad_accum_steps = 1
  return c


def model_train_flops(config: ml_collections.ConfigDict, mesh: Mesh, lowered: Any,
                      batch: dict[str, jax.Array]) -> float:
  """Global FLOPs of one train step (forward, backward, update) on train.batch_size images."""
  canonical = _canonical(config)
  if canonical.to_dict() == config.to_dict():
    return flops_of(lowered.cost_analysis())
  model = model_lib.create_model(canonical)
  # Shapes only: nothing is allocated. (The step count shapes the schedule, not the FLOPs.)
  state = train_step.abstract_train_state(canonical, model, 1000, mesh)
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
  lowered = train_step.make_train_step(canonical, mesh).lower(state, abstract_batch)
  return flops_of(lowered.cost_analysis())


def _xla_bytes(compiled: Any) -> Optional[int]:
  m = compiled.memory_analysis()
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def _score_steps(config, mesh, state, eval_batch, steps, warmup):
  """Scoring throughput and FLOPs without ('nll') and with ('decode') the decoder; and the
  compiled step with the decoder."""
  score, n = {}, eval_batch['image'].shape[0]
  for decode in (False, True):
    eval_lowered = scorer_lib.make_eval_step(config, mesh, decode).lower(state, eval_batch)
    eval_compiled = eval_lowered.compile()
    seconds = statistics.median(
        time_calls(lambda: eval_compiled(state, eval_batch), steps, warmup))
    score['decode' if decode else 'nll'] = {
        'images_per_sec': n / seconds, 'step_s': seconds,
        'flops_per_image': flops_of(eval_lowered.cost_analysis()) / n}
  return score, eval_compiled


def _profile(trace_dir: str, train_once: Callable[[], Any], score_once: Callable[[], Any]) -> None:
  """A jax.profiler trace of a few train steps and one score step; the steps are marked so the
  profile viewer lines them up."""
  jax.profiler.start_trace(trace_dir)
  try:
    for i in range(PROFILE_STEPS):
      with jax.profiler.StepTraceAnnotation('train', step_num=i):
        jax.block_until_ready(train_once())
    with jax.profiler.TraceAnnotation('score_decode'):
      jax.block_until_ready(score_once())
  finally:
    jax.profiler.stop_trace()


def benchmark_size(config: ml_collections.ConfigDict, mesh: Mesh, steps: int, warmup: int,
                   ceiling: float, profile_dir: Optional[str] = None) -> dict[str, Any]:
  """All measurements for one configuration (one image size). Times in seconds, memory in bytes."""
  s, patch = config.dataset.image_size, config.model.patch_size
  if s % patch:
    raise errors.UsageError(f'image size {s} is not a multiple of model.patch_size={patch}')
  batch_size, eval_batch_size = config.train.batch_size, config.train.eval_batch_size
  sharding.check_batch_size(batch_size, 'train.batch_size', mesh)
  sharding.check_batch_size(eval_batch_size, 'train.eval_batch_size', mesh)
  model = model_lib.create_model(config)
  state = train_step.create_train_state(config, model, max(steps + warmup, 1), mesh)
  batch = random_batch(config, batch_size, mesh)

  step_fn = train_step.make_train_step(config, mesh)
  start = time.perf_counter()
  lowered = step_fn.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  train_flops = model_train_flops(config, mesh, lowered, batch)

  holder = {'state': state}  # The step donates its state: keep only the newest.

  def train_once():
    holder['state'], metrics = compiled(holder['state'], batch)
    return holder['state'], metrics
  step_times = time_calls(train_once, steps, warmup)
  step_s = statistics.median(step_times)

  eval_batch = random_batch(config, eval_batch_size, mesh, seed=1, train=False)
  score, eval_compiled = _score_steps(config, mesh, holder['state'], eval_batch, steps, warmup)
  if profile_dir:
    _profile(os.path.join(profile_dir, f'size_{s}'), train_once,
             lambda: eval_compiled(holder['state'], eval_batch))
  achieved = train_flops / step_s
  peak, peak_source = peak_memory()
  return {
      'image_size': s, 'patch_grid': s // patch, 'batch_size': batch_size,
      'eval_batch_size': eval_batch_size,
      'compile_s': compile_s, 'step_s': step_s, 'step_s_all': step_times,
      'train_images_per_sec': batch_size / step_s,
      'score_nll_images_per_sec': score['nll']['images_per_sec'],
      'score_decode_images_per_sec': score['decode']['images_per_sec'],
      'train_flops_per_image': train_flops / batch_size,
      'score_nll_flops_per_image': score['nll']['flops_per_image'],
      'score_decode_flops_per_image': score['decode']['flops_per_image'],
      'achieved_flops_per_sec': achieved, 'mfu': achieved / ceiling,
      'score_mfu': {k: score[k]['flops_per_image'] * score[k]['images_per_sec'] / ceiling
                    for k in ('nll', 'decode')},
      'xla_train_bytes_per_device': _xla_bytes(compiled),
      'peak_memory_bytes': peak, 'peak_memory_source': peak_source,
  }


def benchmark(config: ml_collections.ConfigDict, sizes: Sequence[int], steps: int = 10,
              warmup: int = 2, matmul_size: int = 0, profile_dir: Optional[str] = None) -> dict[str, Any]:
  """Benchmarks `config` at each image size: the machine, the ceiling and one record per size."""
  mesh = sharding.make_mesh()
  devices = jax.devices()
  platform = devices[0].platform
  dtype_name = config.train.compute_dtype
  n = matmul_size or default_matmul_size(platform, len(devices))
  ceiling = matmul_ceiling(mesh, n, model_lib.compute_dtype(dtype_name))
  records = []
  for s in sizes:
    c = copy.deepcopy(config)
    c.dataset.image_size = int(s)
    records.append(benchmark_size(c, mesh, steps, warmup, ceiling, profile_dir))
  return {
      'platform': platform, 'device_kind': devices[0].device_kind, 'num_devices': len(devices),
      'num_processes': jax.process_count(), 'jax_version': jax.__version__,
      'compute_dtype': dtype_name, 'matmul_size': n, 'matmul_ceiling_flops_per_sec': ceiling,
      'steps': steps, 'warmup': warmup, 'config': config.to_dict(), 'sizes': records,
  }


# --------------------------------------------------------------------------------------------------
# Report.


def _si(x: Optional[float], unit: str = '') -> str:
  if x is None or not np.isfinite(x):
    return 'n/a'
  for scale, prefix in ((1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(x) >= scale:
      return f'{x / scale:.3g} {prefix}{unit}'
  return f'{x:.3g} {unit}'.strip()


def _bytes(x: Optional[int]) -> str:
  return 'n/a' if x is None else f'{x / 2**30:.2f} GiB' if x >= 2**30 else f'{x / 2**20:.0f} MiB'


def format_report(result: dict[str, Any]) -> str:
  """The header lines and one table row per image size."""
  cfg = result['config']
  m = cfg['model']
  lines = [
      f"{result['platform']}: {result['num_devices']} device(s) ({result['device_kind']}), "
      f"{result['num_processes']} process(es), jax {result['jax_version']}",
      f"model: {m['encoder']} width {m['width']} depth {m['depth']} heads {m['num_heads']} mlp "
      f"{m['mlp_dim']}, patch {m['patch_size']}, latent {m['latent_dim']}, "
      f"{cfg['density']['num_components']} Gaussians, {cfg['dataset']['channels']} channel(s), "
      f"{result['compute_dtype']}, remat {m['remat']}",
      f"matmul ceiling ({result['compute_dtype']}, {result['matmul_size']}^2 per device, all "
      f"devices): {_si(result['matmul_ceiling_flops_per_sec'], 'FLOP/s')}",
      f"median of {result['steps']} steps after {result['warmup']} warm-up; FLOPs are model FLOPs "
      f"(XLA cost analysis); score = NLL only / with decoder; MFU = achieved FLOP/s / ceiling",
      '',
  ]
  head = ('size', 'grid', 'batch', 'compile', 'step', 'train img/s', 'score img/s',
          'train FLOP/img', 'achieved', 'MFU', 'score MFU', 'XLA mem/dev', 'peak mem', 'x FLOPs', 'x time')
  rows = []
  first = result['sizes'][0] if result['sizes'] else None
  for r in result['sizes']:
    rows.append((
        str(r['image_size']), f"{r['patch_grid']}x{r['patch_grid']}",
        str(r['batch_size']), f"{r['compile_s']:.1f} s", f"{r['step_s'] * 1e3:.1f} ms",
        f"{r['train_images_per_sec']:.1f}",
        f"{r['score_nll_images_per_sec']:.1f} / {r['score_decode_images_per_sec']:.1f}",
        _si(r['train_flops_per_image'], 'FLOP'), _si(r['achieved_flops_per_sec'], 'FLOP/s'),
        f"{100 * r['mfu']:.1f}%",
        f"{100 * r['score_mfu']['nll']:.1f}% / {100 * r['score_mfu']['decode']:.1f}%",
        _bytes(r['xla_train_bytes_per_device']),
        _bytes(r['peak_memory_bytes']),
        f"{r['train_flops_per_image'] / first['train_flops_per_image']:.2f}",
        f"{r['step_s'] / first['step_s'] * first['batch_size'] / r['batch_size']:.2f}"))
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
  fmt = lambda cells: '  '.join(c.rjust(w) for c, w in zip(cells, widths))
  lines += [fmt(head)] + [fmt(row) for row in rows]
  if rows:
    lines += ['', f"peak mem: {result['sizes'][-1]['peak_memory_source']}; x FLOPs / x time: per "
              f"image, relative to size {first['image_size']}"]
  return '\n'.join(lines)


# --------------------------------------------------------------------------------------------------
# Command line.

def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file('config', None, 'Path to a configuration file.', flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_list('sizes', None, 'Image sizes to measure (default: the config\'s).',
                    flag_values=fv)
  flags.DEFINE_integer('steps', 10, 'Timed steps per measurement (the median is reported).',
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer('warmup', 2, 'Untimed steps before the timed ones.', lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_integer('matmul_size', 0, 'n of the n x n ceiling matmul; 0 = automatic.',
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string('output', None, 'Write the results as JSON to this path.', flag_values=fv)
  flags.DEFINE_string('profile_dir', None, 'Write a jax.profiler trace per size here.',
                      flag_values=fv)
  flags.mark_flag_as_required('config', flag_values=fv)


def run(fv: flags.FlagValues) -> None:
  config = fv.config
  try:
    sizes = [int(s) for s in fv.sizes] if fv.sizes else [config.dataset.image_size]
  except ValueError:
    raise errors.UsageError(f'--sizes={",".join(fv.sizes)}: not a list of integers') from None
  if not sizes or min(sizes) < 1:
    raise errors.UsageError(f'--sizes={",".join(fv.sizes or [])}: image sizes must be positive')
  if fv.output and os.path.isdir(fv.output):
    raise errors.UsageError(f'--output={fv.output} is a folder: name the JSON file to write, '
                            f'e.g. --output={os.path.join(fv.output, "bench.json")}')
  if fv.output and not os.path.isdir(os.path.dirname(os.path.abspath(fv.output))):
    raise errors.UsageError(f'--output={fv.output}: its folder does not exist')
  print(f'benchmarking on {jax.device_count()} device(s): {jax.devices()}', flush=True)
  result = benchmark(config, sizes, fv.steps, fv.warmup, fv.matmul_size, fv.profile_dir)
  print(format_report(result), flush=True)
  if fv.output:
    atomic_files.write_json(fv.output, result)
    print(f'results: {fv.output}')
  if fv.profile_dir:
    print(f'traces: {fv.profile_dir} (tensorboard --logdir={fv.profile_dir}, Profile tab)')
