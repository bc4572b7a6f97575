"""Plots the large-batch study: image AUROC and AU-PRO against the global batch size, one line per
optimizer and learning-rate rule, one column per dataset (not a test).

Reads ROOT/results_over_seed.csv, which `python -m vivano_jax.sweep gather --root=ROOT --over=seed`
writes from the runs of sweeps/large_batch.py; points are the mean over seeds, bars the sample
standard deviation where more than one seed finished. At the base batch (16) every AdamW rule is
the same run, which each AdamW line starts from.

  python sweeps/plot_large_batch.py --root=runs/large_batch --output=large_batch.png
"""

import argparse
import csv
import os
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRICS = (('image_auroc', 'image AUROC'), ('au_pro', 'AU-PRO'))
DATASET_NAMES = {'folder': 'Magnetic Tile', 'textures/brick': 'brick'}


def read_points(path: str) -> dict[str, dict[tuple[str, str], list[dict[str, float]]]]:
  """{dataset: {(optimizer, rule): [{'batch', '<metric>_mean', '<metric>_std'}, ...]}}, batches
  ascending; AdamW's base-batch run is added to every AdamW rule."""
  with open(path, newline='') as f:
    rows = [r for r in csv.DictReader(f) if int(r['n']) > 0]
  if not rows:
    sys.exit(f'{path}: no finished run')
  points: dict[str, dict[tuple[str, str], list[dict[str, float]]]] = {}
  for r in rows:
    point = {'batch': int(r['train.batch_size'])}
    for m, _ in METRICS:
      point[f'{m}_mean'] = float(r[f'{m}_mean'])
      point[f'{m}_std'] = float(r[f'{m}_std']) if r[f'{m}_std'] else 0.0
    key = (r['train.optimizer'], r['train.lr_scaling'])
    points.setdefault(r['dataset.name'], {}).setdefault(key, []).append(point)
  for lines in points.values():
    base = lines.get(('adamw', 'none'), [])
    for (optimizer, rule), line in lines.items():
      if optimizer == 'adamw' and rule != 'none':
        line.extend(p for p in base if p['batch'] < min(q['batch'] for q in line))
    for line in lines.values():
      line.sort(key=lambda p: p['batch'])
  return points


def plot(points, output: str) -> None:
  datasets = sorted(points)
  fig = Figure(figsize=(4.2 * len(datasets), 6.4), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(METRICS), len(datasets), squeeze=False)
  for j, dataset in enumerate(datasets):
    for i, (metric, label) in enumerate(METRICS):
      ax = axes[i][j]
      for (optimizer, rule), line in sorted(points[dataset].items()):
        ax.errorbar([p['batch'] for p in line], [p[f'{metric}_mean'] for p in line],
                    yerr=[p[f'{metric}_std'] for p in line], marker='o', ms=3, lw=1.2,
                    capsize=2, label=f'{optimizer} {rule}')
      ax.set_xscale('log', base=2)
      ax.set(xlabel='global batch', ylabel=label,
             title=f'{DATASET_NAMES.get(dataset, dataset)}: {label}')
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(output)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', required=True, help='the study\'s sweep root')
  parser.add_argument('--output', required=True, help='the PNG to write')
  args = parser.parse_args()
  path = os.path.join(args.root, 'results_over_seed.csv')
  if not os.path.isfile(path):
    sys.exit(f'{path} does not exist: run python -m vivano_jax.sweep gather --root={args.root} '
             '--over=seed first')
  plot(read_points(path), args.output)
  print(f'wrote {args.output}')


if __name__ == '__main__':
  main()
