"""The HTML report of a run (`WORKDIR/report/index.html`).

The report reads only the exported files (export_format.read_export): the metrics table, the image-level
ROC curve, the PRO curve (which AU-PRO integrates up to an FPR of 0.3) and the overlays of the most
and least anomalous images. Plots use matplotlib's Agg canvas (no display, no pyplot state); no JAX.

  vivano report --workdir=RUN [--split=test]   # rebuild from RUN/export/<split>

It holds the run's lock (workdir_lock.py) meanwhile, as train and export do.
"""

import html
import os
import pathlib
import shutil
from typing import Any, Optional

from absl import flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import sklearn.metrics

from vivano_jax import atomic_files
from vivano_jax import errors
from vivano_jax import export_format
from vivano_jax import metrics as metrics_lib
from vivano_jax import tables
from vivano_jax import workdir_lock

REPORT_DIR = 'report'
_MAX_CURVE_POINTS = 4096  # Curves are thinned to this many points for plotting.


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  if x.size <= _MAX_CURVE_POINTS:
    return x, y
  idx = np.unique(np.linspace(0, x.size - 1, _MAX_CURVE_POINTS).round().astype(np.int64))
  return x[idx], y[idx]


def _plot(path: pathlib.Path, x: np.ndarray, y: np.ndarray, title: str, xlabel: str, ylabel: str,
          xlim: float = 1.0, vline: Optional[float] = None) -> None:
  fig = Figure(figsize=(4.2, 4.0), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x, y = _thin(np.asarray(x), np.asarray(y))
  ax.plot(x, y, lw=1.5)
  if vline is not None:
    ax.axvline(vline, color='grey', ls='--', lw=1)
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, xlim), ylim=(0, 1.01))
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)


def _image_cards(export: export_format.Export, idx: np.ndarray, out: pathlib.Path) -> str:
  cards = []
  for i in idx:
    src = export.directory / export.overlays[i]
    dst = f'images/{src.name}'
    shutil.copyfile(src, out / dst)
    cards.append(f'<figure><img src="{html.escape(dst)}"><figcaption>'
                 f'{html.escape(str(export.filenames[i]))}<br>{html.escape(export.defect_types[i])}'
                 f' | score {export.scores[i]:.5g}</figcaption></figure>')
  return '<div class="cards">' + ''.join(cards) + '</div>'


def write_report(workdir: str | os.PathLike, split_dir: str | os.PathLike, num_images: int
                 ) -> pathlib.Path:
  """Writes WORKDIR/report/ (index.html, roc.png, pro.png, images/) from an exported split.

  Args:
    workdir: the run.
    split_dir: the exported split to report on (WORKDIR/export/test).
    num_images: how many of the most and of the least anomalous images to show.
  Returns:
    The path of index.html.
  """
  export = export_format.read_export(split_dir)
  run = export.run
  per_type = export.metrics or {}
  final = pathlib.Path(workdir) / REPORT_DIR
  with atomic_files.atomic_directory(final) as out:
    (out / 'images').mkdir()
    parts = [f'<h1>ViV-Ano run {html.escape(str(run.get("workdir", workdir)))}</h1>',
             f'<p>split <b>{html.escape(str(run.get("split", "")))}</b>, {len(export)} images, '
             f'checkpoint step {run.get("checkpoint_step")}, image score '
             f'<code>{html.escape(str(run.get("score", {}).get("image")))}</code>, pixel map '
             f'<code>{html.escape(str(run.get("score", {}).get("pixel")))}</code></p>']
    if per_type:
      parts += ['<h2>Metrics</h2>', tables.metrics_table(per_type, 'html')]
    parts.append(_threshold_html(run.get('thresholds'), export))
    plots = []
    if np.unique(export.labels).size == 2:
      fpr, tpr, _ = sklearn.metrics.roc_curve(export.labels, export.scores)
      auroc = per_type.get('overall', {}).get('image_auroc')
      _plot(out / 'roc.png', fpr, tpr, f'image ROC (AUROC {tables.format_metric(auroc)})',
            'false positive rate', 'true positive rate')
      plots.append('<img src="roc.png" alt="ROC curve">')
    sel = [i for i in range(len(export)) if export.has_mask[i]]
    au_pro = per_type.get('overall', {}).get('au_pro')
    if au_pro is not None:
      fprs, pros = metrics_lib.pro_curve([export.maps[i] for i in sel],
                                         [export.masks[i] for i in sel])
      _plot(out / 'pro.png', fprs, pros, f'PRO curve (AU-PRO@0.3 {au_pro:.4f})',
            'false positive rate (pixels)', 'per-region overlap', vline=0.3)
      plots.append('<img src="pro.png" alt="PRO curve">')
    else:
      plots.append('<p>No pixel ground truth: no PRO curve.</p>')
    parts += ['<h2>Curves</h2>', '<div class="cards">' + ''.join(plots) + '</div>']
    with_overlay = np.array([i for i in range(len(export)) if export.overlays[i]], np.int64)
    if with_overlay.size:
      order = with_overlay[np.argsort(-export.scores[with_overlay], kind='stable')]
      k = min(num_images, order.size)
      parts += ['<h2>Most anomalous</h2>', '<p>image | anomaly map | ground truth</p>',
                _image_cards(export, order[:k], out),
                '<h2>Least anomalous</h2>', _image_cards(export, order[::-1][:k], out)]
    page = ('<!doctype html><html><head><meta charset="utf-8"><title>ViV-Ano report</title>'
            '<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}'
            'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}'
            '.cards{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}'
            'figure img{height:160px;image-rendering:pixelated}figcaption{font-size:80%}'
            '</style></head><body>' + '\n'.join(parts) + '</body></html>\n')
    (out / 'index.html').write_text(page)
  return final / 'index.html'


def _threshold_html(record: Optional[dict[str, Any]], export: export_format.Export) -> str:
  if not record:
    return ''
  t = record['threshold']
  flagged = export.scores >= t
  normal, anomalous = export.labels == 0, export.labels == 1
  lines = [f'<h2>Threshold</h2><p>{html.escape(record["chosen"])} threshold {t:.6g} '
           f'({html.escape(record["rule"])}; from {record["num_normal"]} '
           f'{html.escape(record["source"])} normals, quantile {record["quantile"]["q"]}).']
  if record.get('f1'):
    f1 = record['f1']
    lines.append(f' F1-optimal on validation: {f1["threshold"]:.6g} (F1 {f1["f1"]:.3f}).')
  lines.append(f' On this split: {int(flagged[anomalous].sum())} of {int(anomalous.sum())} '
               f'anomalous and {int(flagged[normal].sum())} of {int(normal.sum())} normal images '
               'flagged.</p>')
  return ''.join(lines)


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'The run folder.', flag_values=fv)
  flags.DEFINE_string('split', 'test', 'The exported split to report on.', flag_values=fv)
  flags.DEFINE_integer('num_images', 4, 'Most / least anomalous images to show.', flag_values=fv)
  flags.mark_flag_as_required('workdir', flag_values=fv)


def run(fv: flags.FlagValues) -> None:
  if not fv.split or fv.split != os.path.basename(fv.split) or fv.split in ('.', '..'):
    raise errors.UsageError(f'--split={fv.split!r}: the name of an exported split (e.g. test), '
                            'not a path')
  if fv.num_images < 0:
    raise errors.UsageError(f'--num_images must be >= 0, got {fv.num_images}')
  if not os.path.isdir(fv.workdir):
    raise errors.DataError(f'--workdir={fv.workdir}: no such run folder')
  with workdir_lock.lock(fv.workdir):  # Not while another command rewrites export/.
    page = write_report(fv.workdir, os.path.join(fv.workdir, 'export', fv.split), fv.num_images)
  print(page)


if __name__ == '__main__':
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('report')
