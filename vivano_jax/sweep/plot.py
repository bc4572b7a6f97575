"""`sweep plot`: a metric against a swept field from `gather --over=...`'s table, as a PNG (or
the format --output's suffix names: .svg, .pdf, ...; one matplotlib cannot write is refused).

One row of panels per metric, one column per value of `--panels` (e.g. dataset.name), one line
per combination of the `--lines` fields (e.g. train.optimizer,train.lr_scaling): points are the
mean over the pooled runs, bars the sample standard deviation where more than one finished.
Groups with no finished run are left out. The x axis is logarithmic (base 2) when every x is
positive and they span a factor of 8 or more (batch sizes, learning rates).

  python -m vivano_jax.sweep gather --root=runs/large_batch --over=seed
  python -m vivano_jax.sweep plot --root=runs/large_batch --x=train.batch_size \\
      --lines=train.optimizer,train.lr_scaling --panels=dataset.name --output=large_batch.png
"""

from collections.abc import Sequence
import csv
import math
import os
from typing import Optional

from vivano_jax.sweep.plan import SweepError, name_part
from vivano_jax.sweep.results import SPREAD_METRICS

METRIC_LABELS = {'image_auroc': 'image AUROC', 'pixel_auroc': 'pixel AUROC', 'au_pro': 'AU-PRO'}

# {panel: {line label: [(x, {metric: (mean, std or None)}), ...] ascending in x}}.
Series = dict[str, dict[str, list[tuple[float, dict[str, tuple[float, Optional[float]]]]]]]


def read_summary(root: str, over: str) -> list[dict[str, str]]:
  """The rows of ROOT/results_over_<over>.csv."""
  path = os.path.join(root, f'results_over_{name_part(over)}.csv')
  if not os.path.isfile(path):
    raise SweepError(f'{path} does not exist: run `python -m vivano_jax.sweep gather '
                     f'--root={root} --over={over}` first')
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def not_finite(rows: Sequence[dict[str, str]], metrics: Sequence[str]) -> list[tuple[str, str]]:
  """(group, metric) for every mean `series` leaves out because it is NaN or infinite (a run of
  the group recorded such a metric)."""
  out = []
  for row in rows:
    for m in metrics:
      try:
        value = float(row.get(f'{m}_mean') or 0.0)
      except ValueError:
        raise SweepError(f"results_over_*.csv: group {row.get('group')}: {m}_mean is "
                         f"{row.get(f'{m}_mean')!r}, not a number") from None
      if not math.isfinite(value):
        out.append((row['group'], m))
  return out


def series(rows: Sequence[dict[str, str]], x: str, lines: Sequence[str],
           panels: Optional[str] = None, metrics: Sequence[str] = ('image_auroc', 'au_pro')
           ) -> Series:
  """Groups `read_summary`'s rows into panels and lines (see the module docstring)."""
  columns = list(rows[0]) if rows else []
  fields = columns[1:columns.index('n')] if 'n' in columns else []
  for name, field in [('--x', x), ('--panels', panels)] + [('--lines', f) for f in lines]:
    if field is not None and field not in fields:
      raise SweepError(f'{name}={field}: not a field that differs between the runs (fields: '
                       f'{", ".join(fields) or "none"})')
  for m in metrics:
    if m not in SPREAD_METRICS:
      raise SweepError(f'--metrics: unknown metric {m!r} (one of {", ".join(SPREAD_METRICS)})')
  out: Series = {}
  left_out = {g for g, _ in not_finite(rows, metrics)}
  for row in rows:
    if (int(row['n']) == 0 or any(row[f'{m}_mean'] == '' for m in metrics)
        or row['group'] in left_out):
      continue
    try:
      x_value = float(row[x])
    except ValueError:
      raise SweepError(f'--x={x}: {row[x]!r} (group {row["group"]}) is not a number') from None
    panel = row[panels] if panels else ''
    label = ' '.join(row[f] for f in lines) or 'all'
    values = {m: (float(row[f'{m}_mean']), float(row[f'{m}_std']) if row[f'{m}_std'] else None)
              for m in metrics}
    out.setdefault(panel, {}).setdefault(label, []).append((x_value, values))
  if not out:
    raise SweepError('no group has a finished run to plot')
  for lines_of_panel in out.values():
    for points in lines_of_panel.values():
      points.sort(key=lambda p: p[0])
  return out


def output_format(output: str) -> str:
  """The format `output`'s suffix names ('png', 'svg', 'pdf', ...), checked before anything is
  read or drawn: a SweepError naming --output when it is a folder, its folder is missing, or
  matplotlib writes no file of its suffix (PNG bytes were written under any name, e.g. a.txt)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(os.path.abspath(output))
  if os.path.isdir(output):
    raise SweepError(f"--output={output}: is a folder; give the plot's path (e.g. "
                     f'{output}/plot.png)')
  if not os.path.isdir(folder):
    raise SweepError(f'--output={output}: the folder {folder} does not exist')
  suffix = os.path.splitext(output)[1].lower()
  formats = FigureCanvasAgg.get_supported_filetypes()
  if suffix[1:] not in formats:
    raise SweepError(f'--output={output}: ' + (f'matplotlib writes no {suffix} file' if suffix
                                                else 'no suffix to name the format')
                     + f'; matplotlib writes {", ".join("." + f for f in sorted(formats))}')
  return suffix[1:]


def plot(data: Series, x: str, output: str, metrics: Sequence[str] = ('image_auroc', 'au_pro')):
  """Draws `series`' data and writes it to `output`, in the format its suffix names (PNG, SVG,
  PDF, ...: `output_format`); returns the matplotlib Figure."""
  fmt = output_format(output)
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import ScalarFormatter  # pylint: disable=g-import-not-at-top
  panels = sorted(data)
  xs = [p[0] for lines in data.values() for points in lines.values() for p in points]
  log_x = min(xs) > 0 and max(xs) / min(xs) >= 8
  fig = Figure(figsize=(4.2 * len(panels), 3.2 * len(metrics)), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(metrics), len(panels), squeeze=False)
  for j, panel in enumerate(panels):
    for i, metric in enumerate(metrics):
      ax = axes[i][j]
      for label, points in sorted(data[panel].items()):
        stds = [p[1][metric][1] for p in points]
        ax.errorbar([p[0] for p in points], [p[1][metric][0] for p in points],
                    yerr=None if all(s is None for s in stds) else [s or 0.0 for s in stds],
                    marker='o', ms=3, lw=1.2, capsize=2, label=label)
      if log_x:
        ax.set_xscale('log', base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 16, 64, not 2^4, 2^6.
      name = METRIC_LABELS.get(metric, metric)
      ax.set(xlabel=x, ylabel=name, title=f'{panel}: {name}' if panel else name)
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  tmp = f'{output}.tmp{os.getpid()}'  # Renamed over `output`: never a half-written file.
  try:
    fig.savefig(tmp, format=fmt)
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return fig
