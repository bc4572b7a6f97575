"""Deploys a trained run: its scorer as one self-contained model for ONNX Runtime, TF Serving, JAX.

  vivano export-model --workdir=RUN --format=onnx|saved_model|jax --output=DIR [--step=N]
  (or python -m vivano_jax.export_model with the same flags)

The run must have been exported (`vivano export`, done at the end of training): its thresholds and
the statistics of a standardised score come from there. The run's lock (workdir_lock.py) is held
while it is read, so no train or export rewrites it meanwhile (a read-only copy is read as it is).
DIR receives, all at once (written in a hidden sibling folder renamed into place when complete;
serving/model_dir.py describes them):

  model.onnx | saved_model/ | model.jax   the scoring function of the checkpoint: uint8 images
               [N, S, S, C] at the model size, any N (--input_dtype=float32: float32 in
               [0, 255], the resized image unrounded, for predict's exact scores on images of
               other sizes) -> image score [N], anomaly map [N, S, S]
               and the score components (all, as predict writes them, or with
               --noall_components those the score uses), for the run's configured score
               (normalisation, model in eval mode, score statistics and smoothing inside;
               serving/score_function.py)
  thresholds.json   the run's decision thresholds: anomalous if score >= threshold
  model_card.json   format, input, outputs, score, checkpoint step, the run's test metrics,
               package versions, and how closely the file reproduced the JAX scorer here

Formats (serving/converters.py says how and why): 'onnx' via jax2onnx, for onnxruntime (CPU, and
any other ONNX runtime); 'saved_model' via jax2tf, for TF Serving; 'jax' via jax.export (StableHLO),
for a JAX process without the training code. Before DIR is written the file is loaded back with
its runtime and must reproduce the JAX scorer on a check batch (1e-3 of the range of the scores
and maps; the card records the differences, usually ~1e-6).

`vivano predict --model=DIR` scores image files with it.
"""

import importlib.metadata
import json
import os
import pathlib
import time
from typing import Any, Optional, Sequence

from absl import flags
import jax
import numpy as np

import vivano_jax
from vivano_jax import atomic_files
from vivano_jax import errors
from vivano_jax import image_io
from vivano_jax import sharding
from vivano_jax import thresholds as thresholds_lib
from vivano_jax import workdir as workdir_lib
from vivano_jax import workdir_lock
from vivano_jax.serving import converters
from vivano_jax.serving import from_checkpoint
from vivano_jax.serving import model_dir
from vivano_jax.serving import score_function

TOLERANCE = 1e-3  # Largest difference from the JAX scorer accepted, relative to the range.
PLATFORMS = ('cpu', 'cuda')
KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
_VERSIONS = {'onnx': ('jax2onnx', 'onnx', 'onnxruntime'), 'saved_model': ('tensorflow',),
             'jax': ()}


def check_images(size: int, channels: int, dtype='uint8') -> np.ndarray:
  """A fixed [4, size, size, channels] batch of `dtype` the export is verified on: noise, a
  gradient, flat grey, and noise with a bright square (scores and maps that differ, so that
  differences are measured against a range)."""
  rng = np.random.default_rng(0)
  ramp = np.linspace(0, 255, size)[:, None] * np.ones(size)[None, :]
  images = np.stack([rng.normal(128, 40, (size, size)), ramp, np.full((size, size), 128.0),
                     rng.normal(100, 20, (size, size))])
  q = size // 4
  images[3, q:2 * q, q:2 * q] = 250
  images = np.clip(np.rint(images), 0, 255).astype(np.uint8).astype(dtype)
  return np.repeat(images[..., None], channels, -1)


def relative_differences(want: dict[str, np.ndarray], got: dict[str, np.ndarray]
                         ) -> dict[str, float]:
  """max |got - want| / the range of want, per output (the range at least 1e-3 of the largest
  magnitude, so that a near-constant output is not judged by its noise)."""
  out = {}
  for name, w in want.items():
    w, g = np.asarray(w, np.float64), np.asarray(got[name], np.float64)
    scale = max(float(np.ptp(w)), 1e-3 * float(np.max(np.abs(w))), 1e-12)
    out[name] = float(np.max(np.abs(g - w)) / scale)
  return out


def verify(sf: score_function.ScoreFunction, directory: pathlib.Path) -> dict[str, Any]:
  """Loads the exported folder with its runtime and compares it with the JAX scorer on
  `check_images`, whole and one image at a time (the batch size is symbolic)."""
  images = check_images(sf.image_size, sf.channels, sf.input_dtype)
  model = model_dir.load(directory)
  want, whole, one = sf(images), model(images), model(images[:1])
  both = lambda d, first: {k: np.concatenate([v, first[k][:1]]) for k, v in d.items()}
  worst = relative_differences(both(want, want), both(whole, one))
  bad = {k: v for k, v in worst.items() if k in score_function.OUTPUTS and v > TOLERANCE}
  if bad:
    raise errors.DataError(f'the {model.format} model differs from the JAX scorer by {bad} of '
                           f'the range (more than {TOLERANCE}); it was not written')
  decisions = model.decide(want['score']) == model.decide(whole['score'])
  return {'images': len(images), 'max_relative_difference': worst,
          'decisions_equal': bool(decisions.all())}


def _versions(fmt: str) -> dict[str, Optional[str]]:
  names = ('jax', 'jaxlib', 'flax') + _VERSIONS[fmt]
  out = {'vivano_jax': vivano_jax.__version__}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def model_card(run: from_checkpoint.Run, sf: score_function.ScoreFunction, fmt: str,
               workdir: str, platforms: Sequence[str]) -> dict[str, Any]:
  """model_card.json, less the verification and timing added once the file is written."""
  config, s = run.config, sf.image_size
  metrics = workdir_lib.previous_metric(workdir, 'metrics')
  return {
      'card_version': model_dir.CARD_VERSION, 'format': fmt, 'file': model_dir.FILES[fmt],
      'platforms': list(platforms) if fmt != 'onnx' else None,
      'image_size': s, 'channels': sf.channels,
      'input': {'name': model_dir.INPUT_NAME, 'dtype': sf.input_dtype,
                'shape': ['N', s, s, sf.channels], 'layout': 'NHWC', 'range': [0, 255],
                'normalisation': 'inside: x / 127.5 - 1',
                'resize': 'by the caller, to S x S: antialiased bilinear as tf.image.resize('
                          'antialias=True), gray <-> RGB as tf.image' + (
                              ', rounded' if sf.input_dtype == 'uint8' else '') +
                          ' (vivano_jax/serving/preprocess.py)'},
      'outputs': list(sf.output_names),
      'output_shapes': {n: ['N', s, s] if n == 'map' else ['N'] for n in sf.output_names},
      'score': json.loads(json.dumps(config.score.to_dict())),
      'threshold': run.record['threshold'], 'rule': thresholds_lib.RULE,
      'checkpoint_step': run.step, 'patch_size': config.model.patch_size,
      'batch_size': config.train.eval_batch_size, 'test_metrics': metrics,
      'workdir': os.path.abspath(workdir), 'versions': _versions(fmt),
      'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'config': json.loads(config.to_json_best_effort()),
  }


def check_output(output: str, workdir: str) -> pathlib.Path:
  """--output is replaced as a whole: only a new folder, an empty one or an earlier export."""
  path = pathlib.Path(output).absolute()
  errors.check_folder_flag('--output', output)
  run = pathlib.Path(workdir).absolute()
  if path == run or run in path.parents:
    raise errors.UsageError(f'--output={output}: inside the run folder; choose a folder outside')
  if path in run.parents:
    raise errors.UsageError(f'--output={output}: holds the run folder {workdir}, and would be '
                            'replaced as a whole: choose a folder outside it')
  exported = {model_dir.MODEL_CARD, thresholds_lib.FILENAME, *model_dir.FILES.values()}
  names = sorted(p.name for p in path.iterdir()  # A file browser's files are no one's.
                 if not (p.is_file() and image_io.is_browser_file(p.name))) if path.is_dir() else []
  others = [n for n in names if n not in exported]
  if names and (not (path / model_dir.MODEL_CARD).is_file() or others):
    raise errors.UsageError(f'--output={output}: a folder that is not an exported model alone '
                            f'(it holds {", ".join(others[:3]) or "no model card"}); it would be '
                            'replaced as a whole: choose a new or empty folder')
  return path


def export_model(workdir: str, fmt: str, output: str, step: Optional[int] = None,
                 platforms: Sequence[str] = PLATFORMS, all_components: bool = True,
                 input_dtype: str = 'uint8') -> dict[str, Any]:
  """Writes the model folder `output` for checkpoint `step` (default the latest) of the run in
  `workdir` (see the module doc); returns its model card."""
  if fmt not in model_dir.FORMATS:
    raise errors.UsageError(f'--format={fmt}: one of {", ".join(model_dir.FORMATS)}')
  unknown = sorted(set(platforms) - set(KNOWN_PLATFORMS))
  if unknown or not platforms:
    raise errors.UsageError(f'--platforms={",".join(platforms)}: one or more of '
                            f'{", ".join(KNOWN_PLATFORMS)}')
  if not os.path.isdir(workdir):
    raise errors.DataError(f'--workdir={workdir}: no such run folder')
  check_output(output, workdir)
  converters.check_available(fmt)
  start = time.perf_counter()
  # Not while another command rewrites the run (its thresholds, statistics, checkpoints).
  with workdir_lock.lock(workdir, reads_only=True):
    run = from_checkpoint.load_run(workdir, step, sharding.make_mesh(jax.devices()[:1]))
    sf = score_function.build(run.config, run.state, run.stats, all_components, input_dtype)
    return write_model(run, sf, fmt, output, workdir, platforms, start)


def write_model(run: from_checkpoint.Run, sf: score_function.ScoreFunction, fmt: str,
                output: str, workdir: str, platforms: Sequence[str],
                start: Optional[float] = None) -> dict[str, Any]:
  """The model folder of `sf` (built from `run`), written atomically and verified; its card.
  start: when the export began (perf_counter), for the card's export time."""
  start = time.perf_counter() if start is None else start
  card = model_card(run, sf, fmt, workdir, platforms)
  with atomic_files.atomic_directory(check_output(output, workdir)) as tmp:
    converting = time.perf_counter()
    converters.convert(sf, fmt, tmp, platforms)
    card['convert_seconds'] = time.perf_counter() - converting
    card['model_sha256'] = model_dir.fingerprint(tmp / model_dir.FILES[fmt])
    card['export_seconds'] = time.perf_counter() - start
    atomic_files.write_json(tmp / thresholds_lib.FILENAME, run.record)
    atomic_files.write_json(tmp / model_dir.MODEL_CARD, card)
    card['verification'] = verify(sf, tmp)
    atomic_files.write_json(tmp / model_dir.MODEL_CARD, card)
  return card


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'The trained and exported run.', flag_values=fv)
  flags.DEFINE_enum('format', None, list(model_dir.FORMATS), 'onnx (onnxruntime, any ONNX '
                    'runtime), saved_model (TF Serving) or jax (jax.export).', flag_values=fv)
  flags.DEFINE_string('output', None, 'The model folder to write (replaced as a whole).',
                      flag_values=fv)
  flags.DEFINE_integer('step', None, 'The checkpoint step (default: the latest).', flag_values=fv)
  flags.DEFINE_bool('all_components', True, 'Also output the score components the configured '
                    'score does not use, as vivano predict writes them (recon and ssim run the '
                    'decoder); false: an NLL score runs without the decoder (4x faster at 512 px).',
                    flag_values=fv)
  flags.DEFINE_enum('input_dtype', 'uint8', list(score_function.INPUT_DTYPES), 'The images the '
                    'model takes: uint8, or float32 in [0, 255] (resized but not rounded: the '
                    'scores of vivano predict --workdir on images of any size).', flag_values=fv)
  flags.DEFINE_list('platforms', list(PLATFORMS), 'Platforms saved_model and jax are lowered for '
                    '(cpu, cuda, rocm, tpu); onnx runs anywhere.', flag_values=fv)
  flags.mark_flags_as_required(['workdir', 'format', 'output'], flag_values=fv)


def run(fv: flags.FlagValues) -> None:
  card = export_model(fv.workdir, fv.format, fv.output, fv.step, fv.platforms,
                      fv.all_components, fv.input_dtype)
  worst = card['verification']['max_relative_difference']
  s, c = card['image_size'], card['channels']
  print(f"{card['format']} model of checkpoint step {card['checkpoint_step']} -> "
        f"{os.path.join(fv.output, card['file'])} ({card['export_seconds']:.1f} s)\n"
        f"input {card['input']['dtype']} [N, {s}, {s}, {c}]; outputs "
        f"{', '.join(card['outputs'])}; threshold {card['threshold']:.6g} ({card['rule']})\n"
        f"matches the JAX scorer: score {worst['score']:.1e}, map {worst['map']:.1e} of their "
        f"range\nscore images with: vivano predict --model={fv.output} --input=... --output=...")


if __name__ == '__main__':
  from vivano_jax import cli  # pylint: disable=g-import-not-at-top
  cli.main_for('export-model')
