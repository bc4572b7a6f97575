"""The metrics table (image AUROC, pixel AUROC, AU-PRO per defect type and overall) as plain text,
Markdown or HTML: one formatter for the console, evaluation.md and the report."""

import html
from typing import Any, Optional

METRIC_NAMES = ('image_auroc', 'pixel_auroc', 'au_pro')
_HEADER = ('defect type', 'images', 'image AUROC', 'pixel AUROC', 'AU-PRO')
FORMATS = ('text', 'markdown', 'html')


def format_metric(v: Optional[float], digits: int = 4) -> str:
  return 'n/a' if v is None else f'{v:.{digits}f}'


def metrics_table(per_type: dict[str, dict[str, Any]], fmt: str = 'text') -> str:
  """One row per defect type and 'overall' ({name: {'num_images', *METRIC_NAMES}}); metrics that
  are not available (None) print as 'n/a'."""
  rows = [[name, str(m.get('num_images', ''))] + [format_metric(m[k]) for k in METRIC_NAMES]
          for name, m in per_type.items()]
  if fmt == 'text':
    # The name column fits the longest name (MVTec AD's cut_inner_insulation: 20 characters).
    widths = (max([16] + [len(r[0]) for r in rows]), 6, 12, 12, 8)
    line = lambda cells: ' '.join(f'{c:<{w}}' if j == 0 else f'{c:>{w}}'
                                  for j, (c, w) in enumerate(zip(cells, widths)))
    return '\n'.join([line(('defect type', 'n') + _HEADER[2:])] + [line(r) for r in rows])
  if fmt == 'markdown':
    lines = ['| ' + ' | '.join(_HEADER) + ' |', '| --- | ---: | ---: | ---: | ---: |']
    return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows]) + '\n'
  if fmt == 'html':
    cell = lambda tag, c: f'<{tag}>{html.escape(c)}</{tag}>'
    head = '<tr>' + ''.join(cell('th', c) for c in _HEADER) + '</tr>'
    body = ''.join('<tr>' + ''.join(cell('td', c) for c in r) + '</tr>' for r in rows)
    return f'<table>{head}{body}</table>'
  raise ValueError(f'table format must be one of {FORMATS}, got {fmt!r}')
