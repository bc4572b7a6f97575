"""Choosing the score of a trained run without looking at any real defect (`score.select`).

With `score.select='synthetic'` the image score and the pixel map are chosen separately, on held-out
normal images: half of them (A) give the score statistics, the other half (B) is scored clean and
with synthetic anomalies drawn on it (synthetic.py). Among `score.image_candidates` the one with the
highest image AUROC (B clean against B anomalous) becomes the image score; among
`score.pixel_candidates` the one with the highest AU-PRO (against the anomalies' masks) becomes the
pixel map. Ties go to the earlier candidate. Test images and their labels are never seen.

Candidates: an image score is an image component ('recon', 'ssim', 'nll_max', 'nll_mean',
'combined') or 'map_max:KIND:NORMALIZE' / 'map_topk:KIND:NORMALIZE' (a statistic of the KIND map
under NORMALIZE); a pixel map is 'KIND:NORMALIZE' (KIND in scoring.PIXEL_MAPS, NORMALIZE in
scoring.NORMALIZE).

The choice is written to WORKDIR/score_selection.json by the first evaluation and read back by the
export and predict, so every output of a run uses the same score.
"""

import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from vivano_jax import atomic_files
from vivano_jax import config_checks
from vivano_jax import errors
from vivano_jax import input_pipeline
from vivano_jax import metrics as metrics_lib
from vivano_jax import scorer as scorer_lib
from vivano_jax import scoring
from vivano_jax import synthetic

FILENAME = 'score_selection.json'
def with_choice(config: ml_collections.ConfigDict, image: Optional[str] = None,
                pixel: Optional[str] = None) -> ml_collections.ConfigDict:
  """A copy of `config` whose score uses the given image and / or pixel candidate."""
  out = ml_collections.ConfigDict(config.to_dict())
  if pixel is not None:
    out.score.update(config_checks.parse_pixel_candidate(pixel))
  if image is not None:
    out.score.update(config_checks.parse_image_candidate(image))
  return out


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded split of n held-out images into (A: statistics, B: evaluation) index arrays."""
  perm = np.random.default_rng([seed, 2]).permutation(n)
  half = n // 2
  return np.sort(perm[:half]), np.sort(perm[half:])


def evaluate_candidates(stats_scored: scorer_lib.ScoredSplit, clean: scorer_lib.ScoredSplit,
                        anomalous: scorer_lib.ScoredSplit, masks: np.ndarray, config: ml_collections.ConfigDict
                        ) -> dict[str, dict[str, float]]:
  """{'image': {candidate: image AUROC}, 'pixel': {candidate: AU-PRO}}: B clean (normal) against B
  with anomalies.

  stats_scored: scored A (for the statistics); clean / anomalous: B, scored with maps; masks: bool
  [n, S, S] of the anomalies.
  """
  stats = stats_scored.stats()
  n = len(masks)
  labels = np.concatenate([np.zeros(n, int), np.ones(n, int)])
  all_masks = list(np.concatenate([np.zeros_like(masks), masks]))
  image = {k: np.concatenate([clean.image[k], anomalous.image[k]]) for k in clean.image}
  pixel = {k: np.concatenate([clean.pixel[k], anomalous.pixel[k]]) for k in clean.pixel}
  results = {'image': {}, 'pixel': {}}
  for cand in config.score.image_candidates:
    img, _ = scoring.final_scores(image, pixel, with_choice(config, image=cand).score, stats)
    results['image'][cand] = metrics_lib.image_auroc(np.asarray(img, np.float64), labels)
  for cand in config.score.pixel_candidates:
    _, pix = scoring.final_scores(image, pixel, with_choice(config, pixel=cand).score, stats)
    results['pixel'][cand] = metrics_lib.au_pro(list(np.asarray(pix, np.float32)), all_masks)
  return results


def choose(results: dict[str, float]) -> str:
  """The candidate with the highest value (the first of equals)."""
  best = max(results.values())
  return next(c for c, v in results.items() if v == best)


def check_enough_normals(n: int) -> None:
  """Selection splits the held-out normals into two halves, each with images to score."""
  if n < 4:
    raise errors.DataError(f'score.select: {n} held-out normal images; at least 4 are needed (set '
                           'dataset.validation_fraction)')


def select_score(state, heldout: input_pipeline.SplitData, config: ml_collections.ConfigDict,
                 mesh) -> dict[str, Any]:
  """Runs the selection on this process's held-out normals; returns the record saved to FILENAME:
  {'image', 'pixel' (the chosen candidates), 'image_auroc', 'au_pro' ({candidate: value}),
  'num_images' (the size of B)}."""
  if jax.process_count() > 1:
    raise errors.UsageError("score.select='synthetic' runs on one process; choose the score on one "
                            'host (vivano export) and copy score_selection.json')
  n = len(heldout)
  check_enough_normals(n)
  a, b = split_halves(n, config.seed)
  every = ml_collections.ConfigDict(config.to_dict())
  every.score.select = 'none'
  every.score.always_ssim = scoring.computes_ssim(config.score)  # Some candidate may read it.
  every.score.normalize = 'global'
  scorer = scorer_lib.Scorer(every, mesh)
  stats_scored = scorer.split(state, heldout.subset(a), decode=True, keep_maps=False)
  images = np.concatenate([batch['image'][batch['valid']] for batch in input_pipeline.eval_batches(
      heldout.subset(b), config.dataset, config.train.eval_batch_size)])
  rng = np.random.default_rng([config.seed, 3])
  anomalous, masks = synthetic.corrupt_batch(images, 1.0, rng)
  clean = scorer.arrays(state, images)
  bad = scorer.arrays(state, anomalous)
  results = evaluate_candidates(stats_scored, clean, bad, masks, config)
  return {'image': choose(results['image']), 'pixel': choose(results['pixel']),
          'image_auroc': results['image'], 'au_pro': results['pixel'], 'num_images': int(len(b))}


def resolve(config: ml_collections.ConfigDict, workdir: str, state=None,
            heldout: Optional[input_pipeline.SplitData] = None, mesh=None
            ) -> tuple[ml_collections.ConfigDict, Optional[dict[str, Any]]]:
  """The config whose score a run uses: `config` itself without selection; else the candidate in
  WORKDIR/FILENAME, chosen now (and saved) when the file is absent and a state is given."""
  config_checks.check_selection(config.score)
  if config.score.select == 'none':
    return config, None
  path = os.path.join(workdir, FILENAME)
  record = None
  if os.path.exists(path):
    record = atomic_files.read_json_object(path)
    if record.get('candidates_tried') != _tried(config):
      record = None  # Chosen among other candidates: choose again.
    elif not all(record.get(k) in _tried(config)[k] for k in ('image', 'pixel')):
      raise errors.DataError(f'{path}: corrupt (its image and pixel choices are not among the '
                             'candidates it lists); delete it to choose again')
  if record is None:
    if state is None:
      raise errors.DataError(
          f'{path}: missing; the score is chosen when the run is evaluated (main)')
    record = select_score(state, heldout, config, mesh)
    record['candidates_tried'] = _tried(config)
    if jax.process_index() == 0:
      atomic_files.write_json(path, record)
  return with_choice(config, image=record['image'], pixel=record['pixel']), record


def _tried(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
  return {'image': list(config.score.image_candidates),
          'pixel': list(config.score.pixel_candidates)}
