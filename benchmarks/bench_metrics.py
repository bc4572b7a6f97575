"""Time and peak memory of the pixel metrics on many large maps.

Each metric runs in its own subprocess, on the same deterministic data, so that the reported peak
RSS (resource.getrusage) belongs to that metric alone. Example:

  python benchmarks/bench_metrics.py --n 200 --size 1024
"""

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

METRICS = ('au_pro', 'pixel_auroc', 'compute_all', 'sklearn_pixel_auroc')


def make_data(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """[n, size, size] float32 maps and bool masks with 0-5 elliptic blobs per image."""
  rng = np.random.default_rng(seed)
  maps = np.empty((n, size, size), np.float32)
  masks = np.zeros((n, size, size), bool)
  for i in range(n):
    # Gaussian noise gives (nearly) all-distinct scores: the largest possible PRO curve.
    rng.standard_normal(out=maps[i], dtype=np.float32)
    for _ in range(rng.integers(0, 6)):
      ry, rx = rng.integers(2, size // 8, size=2)
      cy, cx = rng.integers(0, size, size=2)
      y0, y1 = max(cy - ry, 0), min(cy + ry + 1, size)
      x0, x1 = max(cx - rx, 0), min(cx + rx + 1, size)
      yy, xx = np.ogrid[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
      masks[i, y0:y1, x0:x1] |= (yy / ry)**2 + (xx / rx)**2 <= 1
    maps[i] += 1.5 * masks[i]  # Defects score higher on average.
  return maps, masks


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux.


def run_one(metric: str, n: int, size: int) -> None:
  """Runs one metric in this process and prints one result line."""
  from vivano_jax import metrics  # pylint: disable=g-import-not-at-top
  maps, masks = make_data(n, size)
  data_gb = peak_rss_gb()
  t = time.perf_counter()
  if metric == 'au_pro':
    value = metrics.au_pro(maps, masks)
  elif metric == 'pixel_auroc':
    value = metrics.pixel_auroc(maps, masks)
  elif metric == 'compute_all':
    labels = masks.any(axis=(1, 2)).astype(int)
    value = metrics.compute_all(labels + 0.1, labels, maps, masks)
  else:
    import sklearn.metrics  # pylint: disable=g-import-not-at-top
    value = sklearn.metrics.roc_auc_score(masks.ravel(), maps.ravel())
  seconds = time.perf_counter() - t
  peak = peak_rss_gb()
  print(f'{metric:20s} {seconds:8.2f} s   peak RSS {peak:6.2f} GB '
        f'(data {data_gb:.2f} GB, +{peak - data_gb:.2f} GB)   value {value}', flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--n', type=int, default=200, help='number of maps')
  parser.add_argument('--size', type=int, default=1024, help='maps are size x size')
  parser.add_argument('--metric', choices=METRICS, default=None,
                      help='run only this metric, in this process')
  parser.add_argument('--sklearn', action='store_true',
                      help='also time sklearn roc_auc_score on all pixels (slow, memory hungry)')
  args = parser.parse_args()
  if args.metric:
    run_one(args.metric, args.n, args.size)
    return
  print(f'{args.n} maps of {args.size} x {args.size} = {args.n * args.size**2 / 1e6:.0f} M pixels')
  todo = METRICS if args.sklearn else METRICS[:-1]
  for metric in todo:
    subprocess.run([sys.executable, __file__, '--n', str(args.n), '--size', str(args.size),
                    '--metric', metric], check=True)


if __name__ == '__main__':
  main()
