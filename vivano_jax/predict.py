"""Scores new images with a trained run or an exported model, and decides against its threshold.

  vivano predict --workdir=RUN --input=PATH_OR_GLOB --output=DIR [--step=N] [--batch_size=N]
  vivano predict --model=MODEL --input=PATH_OR_GLOB --output=DIR [--batch_size=N]
  (or python -m vivano_jax.predict with the same flags)

--input is an image file, a folder (its image files, recursively, through linked folders too) or
a glob ('imgs/**/*.png'); a link that leads nowhere or an unreadable folder there is an error.
Images may have any size and be grayscale or colour: each is read as the dataset builders read
files (datasets/image_files.py) and converted, resized (antialiased bilinear) and normalised as
the training input pipeline does.

--workdir scores with the run's checkpoint (serving/from_checkpoint.py): through the training
input pipeline and the scorer (scorer.py), batched and sharded over all devices (the batch rounded
up to a multiple of the device count, the last one padded). The run's config comes from
RUN/config.json (fields added to the code since then take their defaults), its checkpoint from
RUN/checkpoints and the threshold, score statistics and heatmap colour scale from
RUN/thresholds.json (written by the export), which decides the scores of the checkpoint it was
chosen at only: --step (default the latest checkpoint) must be that step.

--model scores with a folder written by `vivano export-model` (serving/model_dir.py): images are
converted and resized in numpy as training does (serving/preprocess.py) and, for a model with
uint8 input (the default), rounded (at most half a grey level from training's float input; a
model exported with --input_dtype=float32 scores exactly as --workdir does), and the threshold
and colour scale come from MODEL/thresholds.json. An ONNX model needs only onnxruntime, numpy and
Pillow: this module imports no JAX, Flax or TensorFlow (the --workdir path imports them when used).

DIR receives, per image i, maps/<i>_<stem>.npy (float32 [H, W], the anomaly map at the image's
native size) and overlays/<i>_<stem>.png (image | map), and predictions.csv with one row per
image; a decision per image is printed.
"""

import contextlib
import csv
import glob
import os
import pathlib
import re
import sys
import tempfile
from typing import Any, Optional, Sequence

from absl import flags
import numpy as np

from vivano_jax import errors
from vivano_jax import export_format
from vivano_jax import image_io
from vivano_jax import overlays
from vivano_jax.datasets import image_files
from vivano_jax.serving import model_dir
from vivano_jax.serving import preprocess

PREDICTIONS_CSV = 'predictions.csv'
OUTPUT_FOLDERS = ('maps', 'overlays')  # Beside predictions.csv in --output.
OUTPUT_SUFFIX = {'maps': '.npy', 'overlays': '.png'}


def _files_under(folder: pathlib.Path, problems: list[str]) -> list[pathlib.Path]:
  """Every file under `folder`, hidden and system files (image_files.is_ignored) aside; linked
  folders are followed, each folder once. An unreadable folder and a link that leads nowhere are
  appended to `problems` (they would otherwise be skipped without a word)."""
  files, seen = [], set()
  unreadable = lambda e: problems.append(f'{e.filename}: unreadable folder ({e.strerror or e})')
  for top, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
    real = os.path.realpath(top)
    if real in seen:  # A link back up the tree, or a second link to one folder.
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = sorted(d for d in dirs if not image_files.is_ignored(d))
    for name in sorted(n for n in names if not image_files.is_ignored(n)):
      path = pathlib.Path(top, name)
      if not path.exists():  # A dangling or looping link.
        problems.append(image_files.broken_link(path))
      elif path.is_file():
        files.append(path)
  return files


def _ignored_below(spec: str, match: str) -> bool:
  """Whether a name the glob `spec` matched in the path `match` (below the folders it names
  literally) is hidden or a system file (image_files.is_ignored): '**/*.png' reached into a
  __MACOSX/ folder, which a folder --input skips as _files_under does."""
  literal = 0
  for part in pathlib.Path(spec).parts:
    if any(c in part for c in '*?['):
      break
    literal += 1
  return any(image_files.is_ignored(part) for part in pathlib.Path(match).parts[literal:])


def _check_names(paths: Sequence[pathlib.Path], spec: str) -> None:
  """One DataError listing the paths whose names are not UTF-8 text: predictions.csv could not
  hold them."""
  image_files.raise_problems([m for m in map(image_io.name_problem, paths) if m], f'--input={spec}')


def find_images(spec: str, exclude: Sequence[str] = ()) -> list[pathlib.Path]:
  """The files named by --input: a file, a folder's image files (recursively) or a glob; sorted.
  Files under the folders `exclude` (predict's own maps/ and overlays/) are not among them."""
  path, problems = pathlib.Path(spec), []
  if path.is_file():
    _check_names([path], spec)
    return [path]
  if path.is_dir():
    files = _files_under(path, problems)
    image_files.raise_problems(problems, f'--input={spec}')  # Before the warning below.
    found = [p for p in files if image_files.is_image_name(p.name)]
    others = sorted(str(p) for p in files if not image_files.is_image_name(p.name))
    if others:
      print(f'warning: {len(others)} file(s) in --input={spec} are not images of a read type '
            f'({", ".join(sorted(image_io.IMAGE_EXTENSIONS))}) and are skipped, e.g. '
            f'{", ".join(others[:3])}', file=sys.stderr)
  else:
    matches = [p for p in glob.glob(spec, recursive=True) if not _ignored_below(spec, p)]
    problems += [image_files.broken_link(p) for p in sorted(matches)
                 if os.path.islink(p) and not os.path.exists(p)]
    image_files.raise_problems(problems, f'--input={spec}')
    found = [pathlib.Path(p) for p in matches if os.path.isfile(p)]
  _check_names(found, spec)
  for folder in exclude:
    skip = pathlib.Path(folder).resolve()
    found = [p for p in found if skip not in p.resolve().parents]
  if not found:
    raise errors.DataError(f'--input={spec!r} names no image file (a file, a folder of images or '
                           'a glob)')
  unique = {}  # One row per file: a '**' glob through a linked folder names files again.
  for p in sorted(found):
    unique.setdefault(os.path.realpath(p), p)
  if len(unique) < len(found):
    print(f'warning: --input={spec} names {len(found) - len(unique)} file(s) again through links; '
          'each file is scored once', file=sys.stderr)
  return sorted(unique.values())


def decode_images(paths: list[pathlib.Path]) -> list[np.ndarray]:
  """Each file decoded to uint8 [H, W, C], C = 1 for grayscale files else 3 (as the builders
  store them). Every file is checked first; unreadable ones raise one error listing them all."""
  info, problems = image_files.check_files((p, False) for p in paths)
  image_files.raise_problems(problems, 'the --input images')
  return [image_files.read_image(p, info[p][1]) for p in paths]


def warn_tiny(paths, sizes: list[tuple[int, int]], patch_size: int, image_size: int) -> None:
  """A warning per image smaller than one patch (image_io.smaller_than_patch): upscaled to the
  model size, it says little. Training warns of such images in its dataset alike."""
  for path, (h, w) in zip(paths, sizes):
    if image_io.smaller_than_patch((h, w), patch_size):
      print(f'warning: {path} is {h} x {w} px, {image_io.too_small(patch_size, image_size)}: its '
            'score says little', file=sys.stderr)


def predict(workdir: str, paths: list[pathlib.Path], step: Optional[int] = None,
            batch_size: Optional[int] = None) -> dict[str, Any]:
  """Scores image files with the run in `workdir`.

  Returns {'scores' [n] (final image scores), 'components' {name: [n]}, 'maps' (n float32
  [H_i, W_i] at native size), 'images' (n uint8 [H_i, W_i, C_i]), 'anomalous' [n] bool,
  'thresholds' (the thresholds.json record), 'checkpoint_step', 'scored_by' (a line for people)}.
  """
  from vivano_jax.serving import from_checkpoint  # pylint: disable=g-import-not-at-top  (JAX)
  return from_checkpoint.predict(workdir, paths, step, batch_size, warn_tiny)


def predict_with_model(model: model_dir.ExportedModel, paths: list[pathlib.Path],
                       batch_size: Optional[int] = None) -> dict[str, Any]:
  """Scores image files with an exported model (`model_dir.load`); returns what `predict` does."""
  batch = batch_size or int(model.card.get('batch_size') or 16)
  if batch <= 0:
    raise errors.UsageError(f'--batch_size must be positive, got {batch}')
  images = decode_images(paths)
  warn_tiny(paths, [im.shape[:2] for im in images], int(model.card.get('patch_size') or 0),
            model.image_size)
  n = len(images)
  outputs = {name: [] for name in model.output_names}
  for start in range(0, n, batch):
    chunk = preprocess.batch(images[start:start + batch], model.image_size, model.channels,
                             model.input_dtype)
    for name, value in model(chunk).items():
      outputs[name].append(value)
  outputs = {k: np.concatenate(v) for k, v in outputs.items()}
  scores = outputs['score'].astype(np.float64)
  maps = [image_io.resize(outputs['map'][i], images[i].shape[:2]).astype(np.float32)
          for i in range(n)]
  components = {k: v.astype(np.float64) for k, v in outputs.items() if k not in ('score', 'map')}
  return {'scores': scores, 'components': components, 'maps': maps, 'images': images,
          'anomalous': model.decide(scores), 'thresholds': model.thresholds,
          'checkpoint_step': model.card.get('checkpoint_step'),
          'scored_by': f'{model.format} model {model.directory}, checkpoint step '
                       f'{model.card.get("checkpoint_step")}'}


def write_predictions(output: str, paths: list[pathlib.Path], result: dict[str, Any],
                      stale: Sequence[pathlib.Path] = ()) -> str:
  """maps/*.npy, overlays/*.png and predictions.csv in `output`, after removing `stale` (an
  earlier call's files: `previous_outputs`) and the earlier predictions.csv; returns the csv's
  path. The csv comes last, whole (renamed into place); a failure on the way (a full disk) removes
  what this call wrote, so no partial results are left to pass for complete ones."""
  out = pathlib.Path(output)
  csv_path = out / PREDICTIONS_CSV
  for path in (*stale, csv_path):  # A reused --output holds only this call's results.
    path.unlink(missing_ok=True)
  (out / 'maps').mkdir(parents=True, exist_ok=True)
  (out / 'overlays').mkdir(parents=True, exist_ok=True)
  record = result['thresholds']
  names = list(result['components'])
  rows = [['index', 'path', 'height', 'width', 'score', 'threshold', 'decision', *names, 'map',
           'overlay']]
  written = [out / f'.{PREDICTIONS_CSV}.tmp{os.getpid()}']
  try:
    for i, path in enumerate(paths):
      base = f'{export_format.array_key(i)}_{export_format.safe_stem(path.name)}'
      amap = result['maps'][i]
      written += [out / 'maps' / f'{base}.npy', out / 'overlays' / f'{base}.png']
      np.save(written[-2], amap)
      overlays.save_overlay(written[-1], result['images'][i], amap, None,
                            record['pixel_display_range'])
      rows.append([i, str(path), *amap.shape, export_format.format_float(result['scores'][i]),
                   export_format.format_float(record['threshold']),
                   'anomalous' if result['anomalous'][i] else 'normal',
                   *(export_format.format_float(result['components'][c][i]) for c in names),
                   f'maps/{base}.npy', f'overlays/{base}.png'])
    with open(written[0], 'w', newline='') as f:
      csv.writer(f).writerows(rows)
    os.replace(written[0], csv_path)
  except BaseException:
    for path in written:
      path.unlink(missing_ok=True)
    for folder in OUTPUT_FOLDERS:
      with contextlib.suppress(OSError):  # Only when empty: it may hold someone else's files.
        (out / folder).rmdir()
    raise
  return str(csv_path)


def previous_outputs(output: str) -> list[pathlib.Path]:
  """The maps and overlays an earlier predict wrote to `output`, known by the names it gives them
  (NNNNNN_<name>.npy in maps/, .png in overlays/); any other file in maps/ or overlays/ there is
  a DataError: it is someone else's, and is neither deleted nor mixed with these results."""
  out = pathlib.Path(output)
  folders = [out / d for d in OUTPUT_FOLDERS if (out / d).exists()]
  own = lambda p, d: p.is_file() and re.fullmatch(r'\d{6}_.*' + re.escape(OUTPUT_SUFFIX[d]), p.name)
  # A file browser's droppings (.DS_Store, Thumbs.db) and other hidden files are no one's results:
  # left where they are, never deleted (image_io.is_ignored, not is_browser_file).
  dropped = lambda p: p.is_file() and image_io.is_ignored(p.name) and p.parent.parent == out
  foreign = [d for d in folders if not d.is_dir()] or [
      p for d in folders for p in sorted(d.rglob('*')) if not own(p, d.name) and not dropped(p)]
  if foreign:
    raise errors.DataError(f'--output={output} holds {", ".join(d.name + "/" for d in folders)} '
                           f'with files an earlier vivano predict did not write (e.g. '
                           f'{foreign[0]}); choose another --output')
  return [p for d in folders for p in sorted(d.iterdir()) if not dropped(p)]


def check_writable(output: str) -> None:
  """--output must be a folder this process can write, checked before anything is scored."""
  errors.check_folder_flag('--output', output)
  os.makedirs(output, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=output, prefix='.write-check-'):
    pass


def check_not_an_export(output: str, workdir: Optional[str]) -> None:
  """A UsageError when --output is an exported split (it holds scores.csv) or lies in the run's
  export/: its overlays/ carry the names predict gives its own (NNNNNN_<name>.png), so they were
  deleted as an earlier call's, and the export left without them."""
  out = pathlib.Path(output).absolute()
  export_dir = pathlib.Path(workdir, 'export').absolute() if workdir is not None else None
  if (out / export_format.SCORES_CSV).exists():
    raise errors.UsageError(f'--output={output}: an exported split (it holds '
                            f'{export_format.SCORES_CSV}), whose overlays predict would take for '
                            'its own and delete; choose another folder')
  if export_dir is not None and (out == export_dir or export_dir in out.parents):
    raise errors.UsageError(f'--output={output}: inside the run\'s export/, which holds exported '
                            'overlays and is replaced as a whole by the next export; choose '
                            'another folder')


def check_finite(paths: Sequence[pathlib.Path], result: dict[str, Any]) -> None:
  """A DataError naming the images whose score is NaN or infinite: no threshold decides them
  (score >= threshold is false for NaN, so each would be called normal)."""
  bad = [str(p) for p, score in zip(paths, result['scores']) if not np.isfinite(score)]
  if bad:
    raise errors.DataError(f'{len(bad)} of {len(paths)} image(s) scored NaN or infinite (e.g. '
                           f'{", ".join(bad[:3])}) by {result["scored_by"]}: its checkpoint or '
                           'score statistics are damaged; nothing is written')


def check_folder_kinds(workdir: Optional[str], model: Optional[str]) -> None:
  """A UsageError when --workdir names a model folder or --model a run folder (the two flags
  mixed up): else only 'config.json does not exist' or 'model_card.json: missing'."""
  has = lambda folder, name: os.path.isfile(os.path.join(folder, name))
  if workdir is not None and not has(workdir, 'config.json') and has(workdir, model_dir.MODEL_CARD):
    raise errors.UsageError(f'--workdir={workdir}: a model folder written by vivano export-model, '
                            f'not a trained run; give --model={workdir}')
  if model is not None and not has(model, model_dir.MODEL_CARD) and has(model, 'config.json'):
    raise errors.UsageError(f'--model={model}: a trained run folder, not a model written by '
                            f'vivano export-model; give --workdir={model}')


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'A trained run (main --workdir); or --model.',
                      flag_values=fv)
  flags.DEFINE_string('model', None, 'A model folder written by vivano export-model; or '
                      '--workdir.', flag_values=fv)
  flags.DEFINE_string('input', None, 'An image file, a folder of images, or a glob.',
                      flag_values=fv)
  flags.DEFINE_string('output', None, 'Folder for maps/, overlays/ and predictions.csv.',
                      flag_values=fv)
  flags.DEFINE_integer('step', None, 'Checkpoint step, with --workdir (default: the latest); '
                       'the step thresholds.json was chosen at.', flag_values=fv)
  flags.DEFINE_integer('batch_size', None, 'Images per batch; with --workdir rounded up to a '
                       'multiple of the device count (default: the run\'s '
                       'train.eval_batch_size).', flag_values=fv)
  flags.mark_flags_as_required(['input', 'output'], flag_values=fv)


def run(fv: flags.FlagValues) -> None:
  if (fv.workdir is None) == (fv.model is None):
    raise errors.UsageError('give one of --workdir (a trained run) and --model (an exported '
                            'model folder)')
  if fv.model is not None and fv.step is not None:
    raise errors.UsageError('--step applies to --workdir; an exported model has one checkpoint')
  if fv.workdir is not None and not os.path.isdir(fv.workdir):
    raise errors.DataError(f'--workdir={fv.workdir}: no such run folder')
  check_folder_kinds(fv.workdir, fv.model)
  errors.check_folder_flag('--output', fv.output)  # Before a model is loaded or an image read.
  if fv.batch_size is not None and fv.batch_size <= 0:
    raise errors.UsageError(f'--batch_size must be positive, got {fv.batch_size}')
  model = model_dir.load(fv.model) if fv.model is not None else None
  # Not this command's own earlier outputs (its maps and overlays under --output).
  paths = find_images(fv.input, exclude=[os.path.join(fv.output, d) for d in OUTPUT_FOLDERS])
  check_not_an_export(fv.output, fv.workdir)
  created = not os.path.isdir(fv.output)
  check_writable(fv.output)
  stale = previous_outputs(fv.output)  # Refused before scoring when they are someone else's.
  try:
    if model is not None:
      result = predict_with_model(model, paths, fv.batch_size)
    else:
      result = predict(fv.workdir, paths, fv.step, fv.batch_size)
    check_finite(paths, result)
    csv_path = write_predictions(fv.output, paths, result, stale)
  except BaseException:
    if created and not any(os.scandir(fv.output)):
      os.rmdir(fv.output)  # Nothing written: no empty output folder left behind.
    raise
  t = result['thresholds']
  print(f"threshold {t['threshold']:.6g} ({t['chosen']}, {t['rule']}), {result['scored_by']}")
  for path, score, bad in zip(paths, result['scores'], result['anomalous']):
    print(f"{'ANOMALOUS' if bad else 'normal':<9}  {score:12.6g}  {path}")
  print(f'{int(result["anomalous"].sum())} of {len(paths)} anomalous; written: {csv_path}')


if __name__ == '__main__':
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('predict')
