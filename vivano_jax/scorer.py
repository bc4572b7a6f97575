"""Scoring a split with a trained state: every score component of every image, then the final
scores, maps and metrics that `config.score` asks for.

A `Scorer` is made once from a config and a mesh (it keeps the jitted scoring steps). Its `split`
runs the model over a split in order, batched and sharded over every device, and returns a
`ScoredSplit`: the components per image and per pixel (scoring.py describes them) of this
process's rows. `final` turns components into the configured image scores and pixel maps, given
the statistics of held-out normal images (`statistics`) when the score standardises; `evaluate`
adds the maps at the masks' native size and the metrics per defect type.
"""

import dataclasses
import functools
import time
from typing import Any, Iterator, Optional

from absl import logging
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from vivano_jax import image_io
from vivano_jax import input_pipeline
from vivano_jax import metrics as metrics_lib
from vivano_jax import score_maps
from vivano_jax import score_stats
from vivano_jax import scoring
from vivano_jax import sharding


@dataclasses.dataclass
class ScoredSplit:
  """Score components of a split's images, in split order.

  image: {component: [n]}; pixel: {component: [n, S, S]} (empty when the maps were not kept);
  moments: {component: (sum [S, S], sum of squares [S, S], number of maps)} of the pixel components;
  mask: bool [n, S, S] at the model size; images_per_sec: scoring throughput (None for one batch);
  inputs / recons: model inputs and reconstructions [k, S, S, C] of the first k images, when kept.
  """
  image: dict[str, np.ndarray]
  pixel: dict[str, np.ndarray]
  moments: dict[str, Any]
  mask: np.ndarray
  images_per_sec: Optional[float] = None
  inputs: Optional[np.ndarray] = None
  recons: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.mask)

  def gathered(self) -> 'ScoredSplit':
    """Every process's rows, concatenated in process order (shards are contiguous slices of the
    split in process order, so this is the whole split in order)."""
    if jax.process_count() == 1:
      return self
    gather = sharding.gather_rows
    return dataclasses.replace(self, image={k: gather(v) for k, v in self.image.items()},
                               pixel={k: gather(v) for k, v in self.pixel.items()},
                               mask=gather(self.mask))

  def stats(self) -> scoring.ScoreStats:
    """Statistics of every component over these (held-out normal) images of every process; all
    processes get the same."""
    image, moments = self.image, self.moments
    if jax.process_count() > 1:
      image = {k: sharding.gather_rows(v) for k, v in image.items()}
      moments = {k: tuple(sharding.sum_over_processes(np.asarray(x, np.float64)) for x in m)
                 for k, m in sorted(moments.items())}
    return score_stats.stats_from_moments(image, moments)


@dataclasses.dataclass
class Evaluation:
  """The configured scores of a whole split and what its metrics are computed on.

  scores: [n] final image scores; maps: [n, S, S] final pixel maps at the model size;
  native_maps / native_masks: n float32 / bool [H_i, W_i] at each mask's native size (or [S, S]
  without `score.native_resolution`); metrics: per defect type and 'overall' (metrics.py), None
  when the split does not hold both normal and anomalous images.
  """
  scores: np.ndarray
  maps: np.ndarray
  native_maps: list[np.ndarray]
  native_masks: list[np.ndarray]
  metrics: Optional[dict[str, dict[str, Any]]]


def eval_step(state, batch: dict[str, jax.Array], smoothing_sigma: float, decode: bool,
              shifts: int = 1, patch_size: int = 0,
              views: tuple[tuple[int, bool], ...] = score_maps.IDENTITY, ssim: bool = True
              ) -> dict[str, Any]:
  """Scores a global batch: {'image': {component: [B]}, 'pixel': {component: [B, S, S]}, 'recon'?}.
  With shifts > 1 the NLL is the finer grid of test-time shifts (score_maps.shifted_nll); the
  model's maps are averaged over the mirrored and turned `views` of the images
  (score_maps.averaged_views; by default one view, the images themselves); `ssim`: also the 'ssim'
  components (with the decoder)."""
  apply = lambda images, decode: state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, images, train=False,
      decode=decode)
  out = score_maps.averaged_views(lambda x: apply(x, decode), batch['image'], views)
  if shifts > 1:
    out = dict(out, nll=score_maps.shifted_nll(lambda x: apply(x, False)['nll'], batch['image'],
                                            out['nll'], patch_size, shifts))
  image, pixel = scoring.score_components(out, batch['image'], smoothing_sigma, shifts, ssim)
  result = {'image': image, 'pixel': pixel}
  if decode:
    result['recon'] = out['recon']
  return result


def make_eval_step(config: ml_collections.ConfigDict, mesh: Mesh, decode: bool):
  """The jitted scoring step: batch sharded on 'data', state replicated."""
  scoring.check_shifts(config.score.shifts, config.model.patch_size)
  return jax.jit(functools.partial(eval_step, smoothing_sigma=config.score.smoothing_sigma,
                                   decode=decode, shifts=config.score.shifts,
                                   patch_size=config.model.patch_size,
                                   views=score_maps.tta_views(config.score.tta,
                                                              config.dataset.augment),
                                   ssim=scoring.computes_ssim(config.score)),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))


class _Accumulator:
  """Collects the local rows of scored batches (the body of `Scorer._run`)."""

  def __init__(self, keep_maps: bool, keep_recon: int):
    self.keep_maps, self.keep_recon = keep_maps, keep_recon
    self.image, self.pixel, self.masks, self.moments = {}, {}, [], {}
    self.inputs, self.recons, self.num_inputs = [], [], 0

  def add(self, out: dict[str, Any], batch: dict[str, np.ndarray]) -> None:
    valid = batch['valid']
    for name, v in out['image'].items():
      self.image.setdefault(name, []).append(sharding.local_rows(v)[valid])
    for name, v in out['pixel'].items():
      maps = sharding.local_rows(v)[valid]
      m = self.moments.setdefault(name, [0.0, 0.0, 0])
      m[0] = m[0] + maps.astype(np.float64).sum(axis=0)
      m[1] = m[1] + np.square(maps.astype(np.float64)).sum(axis=0)
      m[2] += len(maps)
      if self.keep_maps:
        self.pixel.setdefault(name, []).append(maps)
    self.masks.append(batch['mask'][valid])
    if 'recon' in out and self.num_inputs < self.keep_recon:
      self.inputs.append(batch['image'][valid])
      self.recons.append(sharding.local_rows(out['recon'])[valid])
      self.num_inputs += int(valid.sum())

  def result(self, images_per_sec: Optional[float]) -> ScoredSplit:
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}
    scored = ScoredSplit(image=cat(self.image), pixel=cat(self.pixel), moments=self.moments,
                         mask=np.concatenate(self.masks), images_per_sec=images_per_sec)
    if self.inputs:
      scored.inputs = np.concatenate(self.inputs)[:self.keep_recon]
      scored.recons = np.concatenate(self.recons)[:self.keep_recon]
    return scored


class Scorer:
  """Scores splits with a train state as `config.score` says; made once per config and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh):
    sharding.check_batch_size(config.train.eval_batch_size, 'train.eval_batch_size', mesh)
    self.config, self.score, self.mesh = config, config.score, mesh
    self.local_batch = config.train.eval_batch_size // jax.process_count()
    self._steps = {}

  def _step(self, decode: bool):
    if decode not in self._steps:
      self._steps[decode] = make_eval_step(self.config, self.mesh, decode)
    return self._steps[decode]

  def split(self, state, data: input_pipeline.SplitData, decode: Optional[bool] = None,
            keep_maps: bool = True, keep_recon: int = 0) -> ScoredSplit:
    """This process's shard of a split, in order. decode: run the decoder (default: when the score
    needs it; reconstructions and their components need it); keep_maps: keep the per-pixel
    components (their moments are always kept); keep_recon: keep inputs and reconstructions of the
    first images."""
    decode = scoring.needs_decoder(self.score) if decode is None else decode
    batches = input_pipeline.eval_batches(data, self.config.dataset, self.local_batch)
    return self._run(state, batches, decode, keep_maps, keep_recon)

  def arrays(self, state, images: np.ndarray) -> ScoredSplit:
    """Images already at the model size (float32 [n, S, S, C] in [-1, 1], this process's rows),
    scored as `split` does with the decoder and maps. Every process must pass the same n."""
    b, s = self.local_batch, images.shape[1]

    def batches():
      for start in range(0, len(images), b):
        rows = images[start:start + b]
        pad = b - len(rows)
        yield {'image': np.concatenate([rows, np.zeros((pad,) + rows.shape[1:], rows.dtype)]),
               'mask': np.zeros((b, s, s), bool), 'valid': np.arange(b) < len(rows)}

    return self._run(state, batches(), decode=True, keep_maps=True, keep_recon=0)

  def _run(self, state, batches: Iterator[dict[str, np.ndarray]], decode: bool, keep_maps: bool,
           keep_recon: int) -> ScoredSplit:
    step_fn, acc = self._step(decode), _Accumulator(keep_maps, keep_recon)
    start, n_scored = None, 0
    for batch in batches:
      out = step_fn(state, sharding.global_batch({'image': batch['image']}, self.mesh))
      if start is None:
        jax.block_until_ready(out)  # Exclude compilation from the throughput.
        start = time.perf_counter()
      else:
        n_scored += int(batch['valid'].sum()) * jax.process_count()
      acc.add(out, batch)
    elapsed = time.perf_counter() - start if start is not None else 0.0
    return acc.result(n_scored / elapsed if n_scored else None)

  def statistics(self, state, normals: input_pipeline.SplitData) -> Optional[scoring.ScoreStats]:
    """The statistics the configured score standardises by, from held-out normal images (this
    process's shard); None when the score needs none."""
    if not scoring.needs_stats(self.score):
      return None
    ensemble = self.score.image == scoring.ENSEMBLE
    scored = self.split(state, normals, keep_maps=ensemble)
    stats = scored.stats()
    if ensemble:  # Its members' image scores on the normals: from the maps, standardised.
      whole = scored.gathered()
      stats = scoring.with_ensemble_stats(whole.image, whole.pixel, self.score, stats)
    return stats

  def final(self, scored: ScoredSplit, stats: Optional[scoring.ScoreStats]
            ) -> tuple[np.ndarray, np.ndarray]:
    """The configured image scores [n] and pixel maps [n, S, S] (scored with its maps)."""
    img, pix = scoring.final_scores(scored.image, scored.pixel, self.score, stats)
    return np.asarray(img), np.asarray(pix)

  def image_scores(self, scored: ScoredSplit, stats: Optional[scoring.ScoreStats]) -> np.ndarray:
    """The configured image scores [n]; needs the maps only when the score is taken from them."""
    if scoring.image_needs_maps(self.score):
      return self.final(scored, stats)[0]
    return np.asarray(scoring.image_scores(scored.image, self.score, stats))

  def evaluate(self, scored: ScoredSplit, data: input_pipeline.SplitData,
               stats: Optional[scoring.ScoreStats], reuse: Optional[Evaluation] = None
               ) -> Evaluation:
    """Scores, maps and metrics of a whole split (`scored` gathered, `data` the whole split).

    `reuse`: an earlier evaluation of the same split (training's, before its export). When its
    image scores and maps equal these to the bit, so do the native maps and the metrics (the same
    functions of them and of the masks): they are taken from it instead of computed again, which at
    a category's native size is most of an evaluation's time.
    """
    img, pix = self.final(scored, stats)
    if (reuse is not None and np.array_equal(reuse.scores, img)
        and np.array_equal(reuse.maps, pix)):
      logging.info('Native maps and metrics of %d images taken from the earlier evaluation',
                   len(img))
      return dataclasses.replace(reuse, scores=img, maps=pix)
    if self.score.native_resolution:
      masks = input_pipeline.native_masks(data)
      maps = [image_io.resize(pix[i], m.shape).astype(np.float32) for i, m in enumerate(masks)]
    else:
      maps, masks = list(pix.astype(np.float32)), list(scored.mask)
    metrics = None
    if np.unique(data.labels).size == 2:
      metrics = metrics_lib.per_defect_type(img, data.labels, data.defect_types, maps=maps,
                                            masks=masks, has_mask=data.has_mask)
    return Evaluation(scores=img, maps=pix, native_maps=maps, native_masks=masks, metrics=metrics)


def heldout_normals(data: dict[str, input_pipeline.SplitData], config: ml_collections.ConfigDict
                    ) -> input_pipeline.SplitData:
  """This process's normal images of the held-out split (`input_pipeline.heldout_split`); the
  training images when that split holds no normal image."""
  split = input_pipeline.heldout_split(config)
  normal = data[split].labels == 0
  if not sharding.any_process(normal.any()):
    logging.warning('the %s split has no normal image; score statistics from the training images',
                    split)
    return data['train']
  return data[split].subset(normal)
