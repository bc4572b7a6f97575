"""The scoring function of a trained checkpoint as one pure JAX function of raw images.

    fn(variables, images) -> (score [N], map [N, S, S], component_1 [N], ...)

`images` are uint8 [N, S, S, C] at the model size (or float32 in [0, 255], `INPUT_DTYPES`: the
resized image before rounding, as training computes it); the function normalises them as the input
pipeline does (x / 127.5 - 1), runs the model in eval mode (the BatchNorm running statistics are
constants of the function), computes the score components with the evaluation step training and
`vivano predict` use (scorer.make_eval_step, so every `config.score` option, smoothing and test-time
shifts included, carries over), and combines them as `config.score` says (scoring.final_scores). The
statistics of held-out normal images that a standardised score needs (score_stats.npz) are baked in
as constants. Outputs, in `OUTPUTS + components` order: the image score (anomalous if >= the run's
threshold), the anomaly map at the model size, and the image score components of predictions.csv
(nll_max, nll_mean; recon, seg_max and ssim as the run computes them: scoring.computes_ssim).
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivano_jax import scorer as scorer_lib
from vivano_jax import scoring
from vivano_jax import sharding

OUTPUTS = ('score', 'map')  # Then the image score components, sorted by name.
INPUT_DTYPES = ('uint8', 'float32')


def normalise(images: jax.Array) -> jax.Array:
  """uint8 or float32 [N, S, S, C] in [0, 255] -> float32 in [-1, 1], as
  input_pipeline._decode_image."""
  return jnp.clip(images.astype(jnp.float32) / 127.5 - 1.0, -1.0, 1.0)


@dataclasses.dataclass
class ScoreFunction:
  """A checkpoint's scorer: `fn(variables, images)` and the variables it was trained to.

  output_names: OUTPUTS + the component names, the order of fn's outputs; image_size, channels,
  input_dtype: the model input [N, image_size, image_size, channels] of input_dtype.
  """
  fn: Callable[[Any, jax.Array], tuple[jax.Array, ...]]
  variables: dict[str, Any]
  output_names: tuple[str, ...]
  image_size: int
  channels: int
  input_dtype: str = 'uint8'

  def bound(self) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """images -> outputs, the variables closed over (they become constants of a conversion)."""
    return functools.partial(self.fn, self.variables)

  def input_spec(self, batch: Any) -> jax.ShapeDtypeStruct:
    """The input's shape and dtype with `batch` rows (an int or a symbolic dimension)."""
    return jax.ShapeDtypeStruct((batch, self.image_size, self.image_size, self.channels),
                                jnp.dtype(self.input_dtype))

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """Scores a batch here with JAX: {output name: numpy array}."""
    outputs = _jitted(self.fn)(self.variables, jnp.asarray(images, self.input_dtype))
    return {n: np.asarray(v) for n, v in zip(self.output_names, outputs)}


@functools.lru_cache(maxsize=8)
def _jitted(fn):
  return jax.jit(fn)


def _eval_step(config: ml_collections.ConfigDict, decode: bool) -> Callable[..., dict[str, Any]]:
  """The evaluation step exactly as the scorer configures it, unjitted (jax.jit keeps the wrapped
  function as __wrapped__), so that it can be traced into another function."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  jitted = scorer_lib.make_eval_step(config, mesh, decode=decode)
  step = getattr(jitted, '__wrapped__', None)
  if step is None:
    raise RuntimeError('scorer.make_eval_step no longer exposes the step it jits (__wrapped__)')
  return step


def build(config: ml_collections.ConfigDict, state, stats: Optional[scoring.ScoreStats],
          all_components: bool = True, input_dtype: str = 'uint8') -> ScoreFunction:
  """The scoring function of `state` (a restored train state) under `config.score`.

  Args:
    config: the run's config, score resolved (score_selection.resolve).
    state: its train state (apply_fn, params, batch_stats).
    stats: the held-out statistics the score standardises by (None when it needs none).
    all_components: output every component `vivano predict` writes, as it does, running the
      decoder for 'recon' and 'ssim'; False: only those the configured score computes (an NLL
      score then runs without the decoder, several times faster at 512 px).
    input_dtype: 'uint8' or 'float32' (`INPUT_DTYPES`).
  """
  if input_dtype not in INPUT_DTYPES:
    raise ValueError(f'input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}')
  if scoring.needs_stats(config.score) and not stats:
    raise ValueError('the configured score needs the statistics of held-out normal images')
  step = _eval_step(config, all_components or scoring.needs_decoder(config.score))
  score = config.score
  size, channels = config.dataset.image_size, config.dataset.channels
  variables = {'params': state.params, 'batch_stats': state.batch_stats}

  def components_of(variables, images):
    return step(state.replace(**variables), {'image': normalise(images)})

  probe = jax.eval_shape(components_of, variables,
                         jax.ShapeDtypeStruct((1, size, size, channels), input_dtype))
  names = tuple(sorted(probe['image']))

  def fn(variables, images):
    out = components_of(variables, images)
    image, maps = scoring.final_scores(out['image'], out['pixel'], score, stats)
    return (image.astype(jnp.float32), maps.astype(jnp.float32)) + tuple(
        out['image'][n].astype(jnp.float32) for n in names)

  return ScoreFunction(fn=fn, variables=variables, output_names=OUTPUTS + names,
                       image_size=size, channels=channels, input_dtype=input_dtype)
