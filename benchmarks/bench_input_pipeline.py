"""Input-pipeline throughput for MVTec-size images (not a test).

Writes N synthetic 1024 x 1024 RGB PNGs (smooth noise, so PNG decoding costs what a photo costs) in the
MVTec layout into a temporary folder, prepares the `folder` dataset, and times `train_batches` at each
image size, in both modes: in memory (every image decoded and resized once; the default when they fit in
`dataset.cache_max_mib`) and streaming (PNG decode + antialiased resize per sample), each followed by
flips/rotations and batching. Compare with the train step's
images/s from `python -m vivano_jax.benchmark` on the same machine.

  python benchmarks/bench_input_pipeline.py [--n 64] [--sizes 256,512] [--batches 30]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

from vivano_jax import config_defaults  # noqa: E402
from vivano_jax import input_pipeline  # noqa: E402


def write_folder(root: str, n: int, size: int) -> None:
  rng = np.random.default_rng(0)
  for sub in ('train/good', 'test/good'):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  for i in range(n):
    img = ndimage.gaussian_filter(rng.normal(size=(size // 8, size // 8, 3)), (1, 1, 0))
    img = np.kron(img, np.ones((8, 8, 1)))  # 1024 px from a coarse field, plus fine noise
    img = img * 40 + 128 + rng.normal(size=img.shape) * 6
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
        os.path.join(root, 'train/good', f'{i:03d}.png'))
  Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(os.path.join(root, 'test/good', '0.png'))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--n', type=int, default=64)
  parser.add_argument('--native', type=int, default=1024)
  parser.add_argument('--sizes', default='256,512')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--batches', type=int, default=30)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, 'images')
    write_folder(root, args.n, args.native)
    config = config_defaults.base_config()
    config.dataset.name = 'folder'
    config.dataset.manual_dir = root
    config.dataset.data_dir = os.path.join(tmp, 'tfds')
    config.dataset.channels = 3
    t = time.perf_counter()
    train = input_pipeline.load(config, ('train',))['train']
    print(f'prepared {len(train)} images of {args.native} px in {time.perf_counter() - t:.1f} s')
    print(f'batch {args.batch}, {args.batches} batches, {config.dataset.num_threads} tf.data '
          f'threads, flips + rot90')
    print(f'{"size":>6} {"mode":>10} {"first batch s":>14} {"images/s":>10}')
    for size in [int(s) for s in args.sizes.split(',')]:
      for mode, cache_mib in (('in-memory', 2048), ('streaming', 0)):
        cfg = ml_collections.ConfigDict(config.dataset.to_dict())
        cfg.image_size = size
        cfg.cache_max_mib = cache_mib
        t = time.perf_counter()
        it = input_pipeline.train_batches(train, cfg, args.batch, seed=0)
        next(it)  # graph building, the prefetch buffer and, in memory, decoding every image once
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(args.batches):
          next(it)
        ips = args.batches * args.batch / (time.perf_counter() - t)
        print(f'{size:>6} {mode:>10} {first:>14.1f} {ips:>10.1f}')


if __name__ == '__main__':
  main()
