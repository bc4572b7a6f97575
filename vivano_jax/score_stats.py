"""Statistics of the score components over held-out normal images, and their file.

ScoreStats keys:
  '<image component>' -> (mean, std) of the image scores;
  'pixel_<component>' -> (mean, std) over all pixels of all maps;
  'map_<component>' -> (mean map [S, S], std map [S, S]) per pixel position
    (`score.normalize='pixel'`), shrunk towards the global mean and std (`stats_from_moments`);
  'ensemble:<member>' -> (mean, std) of an ensemble member's image scores (scoring.py).
"""

import os
from typing import Any, Optional

import numpy as np

ScoreStats = dict[str, tuple[Any, Any]]

PRIOR_MAPS = 10  # Pseudo-maps of the per-pixel statistics' shrinkage (stats_from_moments).
STATS_FILENAME = 'score_stats.npz'  # In the workdir, written by the export beside thresholds.json.


def stats_from_moments(image: dict[str, np.ndarray], moments: dict[str, tuple]) -> ScoreStats:
  """ScoreStats from the image components {name: [n]} and per-pixel moments {component: (sum [S, S],
  sum of squares [S, S], number of maps)} of held-out normal images."""
  stats = {name: (float(np.mean(v)), float(np.std(v))) for name, v in image.items()}
  for name, (s, s2, n) in moments.items():
    s, s2 = np.asarray(s, np.float64), np.asarray(s2, np.float64)
    mean = s.sum() / (n * s.size)
    stats[f'pixel_{name}'] = (float(mean), float(np.sqrt(max(s2.sum() / (n * s.size) - mean**2, 0.0))))
    mean_map = s / n
    var_map = np.maximum(s2 / n - mean_map**2, 0.0)
    # Shrunk towards the statistics of all positions, as if PRIOR_MAPS more maps had the global
    # mean and variance everywhere: a few held-out images (a small MVTec AD category keeps 6) give
    # noisy per-position estimates, and a tiny std would turn noise into a huge z-score.
    g_mean, g_std = stats[f'pixel_{name}']
    w = n / (n + PRIOR_MAPS)
    mean_map = w * mean_map + (1 - w) * g_mean
    std_map = np.sqrt(w * var_map + (1 - w) * g_std**2) + 1e-12
    stats[f'map_{name}'] = (mean_map.astype(np.float32), std_map.astype(np.float32))
  return stats


def scalar_stats(stats: Optional[ScoreStats]) -> Optional[dict[str, tuple[float, float]]]:
  """The scalar entries of `stats` (for JSON records); the per-pixel maps are saved apart."""
  if stats is None:
    return None
  return {k: v for k, v in stats.items() if not k.startswith('map_')}


def save_stats(path: str, stats: ScoreStats) -> None:
  """All of `stats` as a .npz of float arrays ('<key>/mean', '<key>/std'); no pickle."""
  arrays = {}
  for k, (mean, std) in stats.items():
    arrays[f'{k}/mean'] = np.asarray(mean, np.float64)
    arrays[f'{k}/std'] = np.asarray(std, np.float64)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_stats(path: str) -> ScoreStats:
  """The inverse of `save_stats`."""
  with np.load(path, allow_pickle=False) as z:
    keys = sorted({k.rsplit('/', 1)[0] for k in z.files})
    out = {}
    for k in keys:
      mean, std = z[f'{k}/mean'], z[f'{k}/std']
      out[k] = (float(mean), float(std)) if mean.ndim == 0 else (mean.astype(np.float32),
                                                                 std.astype(np.float32))
  return out
