"""An exported model folder (`vivano export-model`), and loading it to score images.

  model.onnx | saved_model/ | model.jax   the scoring function (score_function.py), one format
  thresholds.json                         the run's decision thresholds (thresholds.py)
  model_card.json                         what the model is: format, input, outputs, score,
                                          checkpoint step, test metrics, versions, verification

The model takes uint8 (or, exported so, float32) [N, S, S, C] images at the model size (any N)
and returns the outputs the card lists: 'score' [N], 'map' [N, S, S] and the image score
components [N]. `load` checks the card, the thresholds and the model file and returns an
`ExportedModel`; a missing, corrupt or mismatched file is one DataError naming it.

Only numpy here: the runtime of the model's format is imported when one is loaded (onnxruntime
for ONNX, TensorFlow for a SavedModel, JAX for a serialized JAX function), so scoring with an ONNX
model imports neither JAX nor TensorFlow.
"""

import hashlib
import os
import pathlib
from typing import Any, Callable

import numpy as np

from vivano_jax import atomic_files
from vivano_jax import errors
from vivano_jax import thresholds as thresholds_lib

MODEL_CARD = 'model_card.json'
CARD_VERSION = 1
FILES = {'onnx': 'model.onnx', 'saved_model': 'saved_model', 'jax': 'model.jax'}
FORMATS = tuple(FILES)
INPUT_NAME = 'images'
SERVING_SIGNATURE = 'serving_default'
_RUNTIMES = {'onnx': 'onnxruntime (pip install "vivano_jax[serve]")',
             'saved_model': 'tensorflow', 'jax': 'jax'}


def read_json(path: pathlib.Path, what: str) -> dict[str, Any]:
  """A JSON object from `path`; one DataError naming the file when it is missing or corrupt."""
  if not path.is_file():
    raise errors.DataError(f'{path}: missing; {what}')
  return atomic_files.read_json_object(path)


def _check_card(card: dict[str, Any], path: pathlib.Path) -> None:
  """Every field a model folder is read with, of the type it must have; one DataError naming the
  file and the field otherwise (a hand-edited card must not score by the wrong output)."""
  missing = [k for k in ('format', 'image_size', 'channels', 'outputs') if k not in card]
  if missing:
    raise errors.DataError(f'{path}: corrupt (no {", ".join(missing)})')
  version = card.get('card_version', CARD_VERSION)
  if isinstance(version, bool) or not isinstance(version, int):
    raise errors.DataError(f'{path}: corrupt (card_version {version!r}, not an int)')
  if version > CARD_VERSION:
    raise errors.DataError(f'{path}: written by a newer vivano_jax (card version '
                           f'{card["card_version"]}); update vivano_jax to read it')
  if card['format'] not in FORMATS:
    raise errors.DataError(f'{path}: unknown format {card["format"]!r} (one of {FORMATS})')
  for field in ('image_size', 'batch_size', 'patch_size'):
    value = card.get(field, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise errors.DataError(f'{path}: corrupt ({field} {value!r}, not a positive int)')
  if card['channels'] not in (1, 3) or isinstance(card['channels'], bool):
    raise errors.DataError(f'{path}: corrupt (channels {card["channels"]!r}, not 1 or 3)')
  outputs = card['outputs']
  if (not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs)
      or len(set(outputs)) != len(outputs) or not {'score', 'map'} <= set(outputs)):
    raise errors.DataError(f'{path}: corrupt (outputs {outputs!r}: distinct names, with score '
                           'and map)')
  dtype = card.get('input', {}).get('dtype', 'uint8') if isinstance(card.get('input', {}),
                                                                    dict) else None
  if dtype not in ('uint8', 'float32'):
    raise errors.DataError(f'{path}: corrupt (input {card.get("input")!r}: its dtype must be '
                           'uint8 or float32)')


class ExportedModel:
  """A loaded model folder: `model(images)` scores [N, S, S, C] -> {output: array}.

  Attributes: directory, card (model_card.json), thresholds (thresholds.json), image_size,
  channels, input_dtype ('uint8' or 'float32'), output_names, format.
  """

  def __init__(self, directory: pathlib.Path, card: dict[str, Any], thresholds: dict[str, Any],
               run: Callable[[np.ndarray], list[np.ndarray]]):
    self.directory, self.card, self.thresholds = directory, card, thresholds
    self.format = card['format']
    self.image_size, self.channels = int(card['image_size']), int(card['channels'])
    self.output_names = tuple(card['outputs'])
    self.input_dtype = str((card.get('input') or {}).get('dtype', 'uint8'))
    self._run = run

  @property
  def threshold(self) -> float:
    return float(self.thresholds['threshold'])

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    images = np.asarray(images)
    want = (self.image_size, self.image_size, self.channels)
    if images.dtype != self.input_dtype or images.ndim != 4 or images.shape[1:] != want:
      raise errors.DataError(
          f'{self.directory} was exported for {self.input_dtype} images [N, {want[0]}, {want[1]}, '
          f'{want[2]}] '
          f'({self.channels} channel(s), {self.image_size} px); got {images.dtype} '
          f'{list(images.shape)} (vivano predict --model resizes and converts images for it)')
    if len(images) == 0:
      s = self.image_size
      return {n: np.zeros((0, s, s) if n == 'map' else (0,), np.float32)
              for n in self.output_names}
    outputs = self._run(images)
    return {n: np.asarray(v) for n, v in zip(self.output_names, outputs)}

  def decide(self, scores: np.ndarray) -> np.ndarray:
    """[N] bool: anomalous where score >= the stored threshold."""
    return thresholds_lib.is_anomalous(scores, self.threshold)


def load(directory: str | os.PathLike) -> ExportedModel:
  """The model folder `directory`, checked and ready to score."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise errors.DataError(f'--model={directory}: no such folder (a folder written by vivano '
                           'export-model)')
  card_path = directory / MODEL_CARD
  card = read_json(card_path, 'is this a folder written by vivano export-model?')
  _check_card(card, card_path)
  thresholds = read_json(directory / thresholds_lib.FILENAME, 'export the model again')
  thresholds_lib.check_record(thresholds, directory / thresholds_lib.FILENAME)
  path = directory / FILES[card['format']]
  if not path.exists():
    raise errors.DataError(f'{path}: missing; the {card["format"]} model of {card_path}')
  _check_same_export(card, card_path, thresholds, directory / thresholds_lib.FILENAME, path)
  run = _runner(card, path)
  return ExportedModel(directory, card, thresholds, run)


def fingerprint(path: pathlib.Path) -> str:
  """sha256 of the model file, or of a SavedModel folder's files (relative names and bytes)."""
  digest = hashlib.sha256()
  files = sorted(p for p in path.rglob('*') if p.is_file()) if path.is_dir() else [path]
  for f in files:
    digest.update(str(f.relative_to(path) if path.is_dir() else '').encode() + b'\0')
    with open(f, 'rb') as stream:
      for block in iter(lambda: stream.read(1 << 20), b''):
        digest.update(block)
  return digest.hexdigest()


def _check_same_export(card, card_path, thresholds, thresholds_path, model_path) -> None:
  """The card, thresholds.json and the model file come from one export: a folder that mixes two
  would score with one run and decide with another's threshold, without a word."""
  score = card.get('score')
  image = score.get('image') if isinstance(score, dict) else None
  if thresholds.get('score') is not None and image is not None and thresholds['score'] != image:
    raise errors.DataError(f'{thresholds_path}: chosen for the image score '
                           f'{thresholds["score"]!r}, but {card_path} scores with {image!r}; the '
                           'folder mixes two exports: export the model again')
  expected = card.get('model_sha256')
  if expected is not None and fingerprint(model_path) != expected:
    raise errors.DataError(f'{model_path}: not the model {card_path} was written with (its '
                           'sha256 differs); the folder mixes two exports: export the model again')


def _runner(card: dict[str, Any], path: pathlib.Path) -> Callable[[np.ndarray], list]:
  fmt = card['format']
  loader = {'onnx': _onnx_runner, 'saved_model': _saved_model_runner, 'jax': _jax_runner}[fmt]
  try:
    return loader(path, card)
  except ImportError as e:
    raise errors.UsageError(f'{path}: scoring a {fmt} model needs {_RUNTIMES[fmt]} ({e})') from e
  except errors.DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (each runtime raises its own kinds)
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ''
    raise errors.DataError(f'{path}: corrupt or unreadable {fmt} model '
                           f'({type(e).__name__}: {first})') from e


def _check_input_shape(path: pathlib.Path, card: dict[str, Any], shape: list,
                       dtype: str = '') -> None:
  """The model file must take the images the card says, of its dtype (a file of another export
  swapped in, or an edited card, would otherwise fail later, or score the wrong size)."""
  card_dtype = str((card.get('input') or {}).get('dtype', 'uint8'))
  if dtype and dtype != card_dtype:
    raise errors.DataError(f'{path}: takes {dtype} images, but {MODEL_CARD} says {card_dtype}; '
                           'the folder mixes two exports: export the model again')
  want = [card['image_size'], card['image_size'], card['channels']]
  got = [None if d is None or isinstance(d, str) else int(d) for d in list(shape)[1:]]
  if len(shape) != 4 or got != want:
    raise errors.DataError(f'{path}: takes images {list(shape)}, but {MODEL_CARD} says '
                           f'[N, {want[0]}, {want[1]}, {want[2]}]; the folder mixes two exports: '
                           'export the model again')


def _onnx_runner(path: pathlib.Path, card: dict[str, Any]):
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  options = ort.SessionOptions()
  options.log_severity_level = 3  # Errors only: initializer clean-up notes are not for users.
  session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
  (inp,) = session.get_inputs()
  dtype = {'tensor(uint8)': 'uint8', 'tensor(float)': 'float32'}.get(inp.type, inp.type)
  _check_input_shape(path, card, inp.shape, dtype)
  names = [o.name for o in session.get_outputs()]
  if names != list(card['outputs']):
    raise errors.DataError(f'{path}: outputs {names}, but {MODEL_CARD} lists {card["outputs"]}')
  return lambda images: session.run(names, {inp.name: images})


def _saved_model_runner(path: pathlib.Path, card: dict[str, Any]):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(str(path)).signatures[SERVING_SIGNATURE]
  spec = serve.structured_input_signature[1][INPUT_NAME]
  _check_input_shape(path, card, spec.shape.as_list(), spec.dtype.name)
  names = list(card['outputs'])
  if sorted(serve.structured_outputs) != sorted(names):  # Else: None.numpy(), a traceback.
    raise errors.DataError(f'{path}: its outputs are {sorted(serve.structured_outputs)}, but '
                           f'{path.parent / MODEL_CARD} lists {names}; export the model again')
  return lambda images: [v.numpy() for v in map(serve(**{INPUT_NAME: tf.constant(images)}).get,
                                                 names)]


def _jax_runner(path: pathlib.Path, card: dict[str, Any]):
  import jax  # pylint: disable=g-import-not-at-top
  from jax import export  # pylint: disable=g-import-not-at-top
  exported = export.deserialize(bytearray(path.read_bytes()))
  (aval,) = exported.in_avals
  _check_input_shape(path, card, [None] + list(aval.shape[1:]), str(aval.dtype))
  names = jax.tree_util.tree_unflatten(exported.out_tree, range(len(exported.out_avals)))
  if not isinstance(names, dict) or sorted(names) != sorted(card['outputs']):
    got = sorted(names) if isinstance(names, dict) else f'{len(exported.out_avals)} unnamed'
    raise errors.DataError(f'{path}: its outputs are {got}, but {path.parent / MODEL_CARD} lists '
                           f'{card["outputs"]}; export the model again')
  call = jax.jit(exported.call)

  def run(images):
    outputs = call(images)
    return [np.asarray(outputs[n]) for n in card['outputs']]
  return run
