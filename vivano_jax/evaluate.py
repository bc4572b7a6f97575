"""Offline evaluation of an export: no model, no JAX, Flax or TensorFlow.

  vivano evaluate --predictions=RUN/export/test [--ground_truth=FOLDER] [--output=DIR]
  (or python -m vivano_jax.evaluate with the same flags)

Recomputes image AUROC, pixel AUROC and AU-PRO per defect type and overall with `vivano_jax.metrics`
(numpy, scipy, scikit-learn) from the exported files alone (export_format.py describes them),
prints them, and writes `evaluation.csv` and `evaluation.md` to --output (default: the predictions
folder). The numbers equal those computed at the end of training: the same float32 maps bit for
bit, the same masks, the same metric code.

With --ground_truth=FOLDER (MVTec AD layout) the masks come from
FOLDER/ground_truth/<defect type>/<stem>_mask.<ext> instead of masks.npz.
"""

import csv
import io
import os
import pathlib
import shutil
from typing import Any

from absl import flags
import numpy as np

from vivano_jax import atomic_files
from vivano_jax import errors
from vivano_jax import export_format
from vivano_jax import metrics as metrics_lib
from vivano_jax import tables

EVALUATION_CSV = 'evaluation.csv'
EVALUATION_MD = 'evaluation.md'


def evaluate(export: export_format.Export) -> dict[str, dict[str, Any]]:
  """Metrics per defect type and 'overall' ({image_auroc, pixel_auroc, au_pro, num_images}), as
  `metrics.per_defect_type` computes them at the end of training."""
  if np.unique(export.labels).size != 2:
    raise export_format.ExportError(
        f'{export.directory}: metrics need normal and anomalous images; the labels are all '
        f'{int(export.labels[0]) if len(export) else "absent"}')
  return metrics_lib.per_defect_type(export.scores, export.labels, export.defect_types,
                                     maps=export.maps, masks=export.masks,
                                     has_mask=export.has_mask)


def write_evaluation(per_type: dict[str, dict[str, Any]], output: str | os.PathLike) -> None:
  """evaluation.csv (exact floats, empty = not available) and evaluation.md in `output`, both or
  neither (`_replace_together`): a failure on the way (a full disk) leaves the earlier tables as
  they were (or none), no temporary file and no folder this call made."""
  output = pathlib.Path(output)
  created = not output.exists()
  rows = [('defect_type', 'num_images') + tables.METRIC_NAMES]
  rows += [[name, m.get('num_images', '')] + [
      '' if m[k] is None else export_format.format_float(m[k]) for k in tables.METRIC_NAMES]
           for name, m in per_type.items()]
  texts = {EVALUATION_CSV: _csv_text(rows), EVALUATION_MD: tables.metrics_table(per_type,
                                                                                'markdown')}
  try:
    output.mkdir(parents=True, exist_ok=True)
    _replace_together(output, texts)
  except BaseException:
    if created and output.is_dir() and not any(output.iterdir()):
      output.rmdir()
    raise


def _replace_together(folder: pathlib.Path, texts: dict[str, str]) -> None:
  """Each file `folder`/<name> of `texts` replaced by its text, whole (atomic_files.write_text),
  and all or none: when one fails, those already replaced get their earlier content back (or are
  removed), so the two tables never come from two evaluations. The earlier files are kept aside
  as hard links meanwhile: putting them back is a rename, which a full disk allows."""
  aside, done = {}, []
  try:
    for name in texts:
      if (folder / name).is_file():
        aside[name] = folder / f'.{name}.old{os.getpid()}'
        aside[name].unlink(missing_ok=True)
        try:
          os.link(folder / name, aside[name])
        except OSError:  # A file system without hard links.
          shutil.copyfile(folder / name, aside[name])
    for name, text in texts.items():
      atomic_files.write_text(folder / name, text, newline='')
      done.append(name)
  except BaseException:
    for name in done:
      if name in aside:
        os.replace(aside.pop(name), folder / name)
      else:
        (folder / name).unlink(missing_ok=True)
    raise
  finally:
    for path in aside.values():
      path.unlink(missing_ok=True)


def _csv_text(rows: list) -> str:
  """`rows` as CSV text (csv.writer's quoting and line ends)."""
  buffer = io.StringIO()
  csv.writer(buffer).writerows(rows)
  return buffer.getvalue()


def read_evaluation_csv(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """evaluation.csv back into the per-type dict of `evaluate`."""
  with open(path, newline='') as f:
    return {row['defect_type']: {'num_images': int(row['num_images']), **{
        k: float(row[k]) if row[k] else None for k in tables.METRIC_NAMES}}
            for row in csv.DictReader(f)}


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('predictions', None, 'An exported split folder (WORKDIR/export/<split>).',
                      flag_values=fv)
  flags.DEFINE_string('ground_truth', None, 'Optional MVTec AD layout folder to read masks from.',
                      flag_values=fv)
  flags.DEFINE_string('output', None, 'Where evaluation.csv / .md go (default: --predictions).',
                      flag_values=fv)
  flags.mark_flag_as_required('predictions', flag_values=fv)


def check_split_folder(predictions: str) -> None:
  """A UsageError naming the splits when --predictions names a run folder or its export/ folder
  instead of one exported split (else: four 'missing' files, with no word of where they are)."""
  folder = pathlib.Path(predictions)
  if (folder / export_format.SCORES_CSV).exists():
    return
  for parent in (folder / 'export', folder):
    splits = sorted(p.parent.name for p in parent.glob(f'*/{export_format.SCORES_CSV}')
                    if not p.parent.name.startswith('.'))  # Not an export's staging folder.
    if splits:
      split = 'test' if 'test' in splits else splits[0]
      raise errors.UsageError(f'--predictions={predictions}: holds the exported split(s) '
                              f'{", ".join(splits)}, not one split; give one, e.g. '
                              f'--predictions={parent / split}')


def run(fv: flags.FlagValues) -> None:
  output = fv.output or fv.predictions
  errors.check_folder_flag('--output' if fv.output else '--predictions', output)
  check_split_folder(fv.predictions)
  export = export_format.read_export(fv.predictions, fv.ground_truth)
  per_type = evaluate(export)
  write_evaluation(per_type, output)
  print(tables.metrics_table(per_type))
  print(f'\nwritten: {os.path.join(output, EVALUATION_CSV)}, {os.path.join(output, EVALUATION_MD)}')


if __name__ == '__main__':
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('evaluate')
