"""Choosing the score of a trained run without looking at any real defect (`score.select`).

With `score.select='synthetic'` each candidate of `score.candidates` ('image:pixel:normalize', e.g.
'map_max:combined:pixel') is tried on held-out normal images: half of them (A) give the score
statistics, the other half (B) is scored clean and with synthetic anomalies drawn on it
(synthetic.py). The candidate with the highest mean of image AUROC and AU-PRO on B (clean vs
anomalous) is chosen; ties go to the earlier candidate. Test images and their labels are never seen.

The choice is written to WORKDIR/score_selection.json by the first evaluation and read back by the
export and predict, so every output of a run uses the same score.
"""

import json
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from vivano_jax import atomic_files
from vivano_jax import input_pipeline
from vivano_jax import metrics as metrics_lib
from vivano_jax import scoring
from vivano_jax import synthetic

FILENAME = 'score_selection.json'
SELECT = ('none', 'synthetic')


def parse_candidate(text: str) -> dict[str, str]:
  """'image:pixel:normalize' -> {'image', 'pixel', 'normalize'}; a clear error when malformed."""
  parts = str(text).split(':')
  if len(parts) != 3:
    raise ValueError(f"score.candidates: {text!r} is not 'image:pixel:normalize'")
  image, pixel, normalize = parts
  if image not in scoring.IMAGE_SCORES or pixel not in scoring.PIXEL_MAPS or (
      normalize not in scoring.NORMALIZE):
    raise ValueError(f'score.candidates: {text!r}: image must be one of {scoring.IMAGE_SCORES}, '
                     f'pixel one of {scoring.PIXEL_MAPS}, normalize one of {scoring.NORMALIZE}')
  return {'image': image, 'pixel': pixel, 'normalize': normalize}


def with_candidate(config: ml_collections.ConfigDict, candidate: str) -> ml_collections.ConfigDict:
  """A copy of `config` whose score uses `candidate`."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.score.update(parse_candidate(candidate))
  return out


def check_config(score: ml_collections.ConfigDict) -> None:
  if score.select not in SELECT:
    raise ValueError(f'score.select must be one of {SELECT}, got {score.select!r}')
  if score.select != 'none':
    if not score.candidates:
      raise ValueError("score.select='synthetic' needs at least one entry in score.candidates")
    for c in score.candidates:
      parse_candidate(c)


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded split of n held-out images into (A: statistics, B: evaluation) index arrays."""
  perm = np.random.default_rng([seed, 2]).permutation(n)
  half = n // 2
  return np.sort(perm[:half]), np.sort(perm[half:])


def evaluate_candidates(stats_scored: dict[str, Any], clean: dict[str, Any], anomalous: dict[str, Any],
                        masks: np.ndarray, config: ml_collections.ConfigDict
                        ) -> dict[str, dict[str, float]]:
  """Image AUROC, AU-PRO and their mean per candidate: B clean (normal) against B with anomalies.

  stats_scored: scored A (as train.score_split, for the statistics); clean / anomalous: {'image':
  {component: [n]}, 'pixel': {component: [n, S, S]}} of B; masks: bool [n, S, S] of the anomalies.
  """
  from vivano_jax import train  # pylint: disable=g-import-not-at-top  (train imports this module)
  stats = train.score_stats(stats_scored)
  n = len(masks)
  labels = np.concatenate([np.zeros(n, int), np.ones(n, int)])
  all_masks = np.concatenate([np.zeros_like(masks), masks])
  results = {}
  for cand in config.score.candidates:
    c = with_candidate(config, cand)
    image = {k: np.concatenate([clean['image'][k], anomalous['image'][k]]) for k in clean['image']}
    pixel = {k: np.concatenate([clean['pixel'][k], anomalous['pixel'][k]]) for k in clean['pixel']}
    img, pix = scoring.final_scores(image, pixel, c.score, stats)
    img, pix = np.asarray(img, np.float64), np.asarray(pix, np.float32)
    auroc = metrics_lib.image_auroc(img, labels)
    pro = metrics_lib.au_pro(list(pix), list(all_masks))
    results[cand] = {'image_auroc': auroc, 'au_pro': pro, 'mean': (auroc + pro) / 2}
  return results


def choose(results: dict[str, dict[str, float]]) -> str:
  """The candidate with the highest mean (the first of equals)."""
  best = max(results.values(), key=lambda r: r['mean'])['mean']
  return next(c for c, r in results.items() if r['mean'] == best)


def select_score(state, heldout: input_pipeline.SplitData, config: ml_collections.ConfigDict,
                 mesh) -> dict[str, Any]:
  """Runs the selection on this process's held-out normals; returns the record saved to FILENAME:
  {'chosen', 'candidates': {candidate: metrics}, 'num_images': size of B}."""
  from vivano_jax import train  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    raise ValueError("score.select='synthetic' runs on one process; choose the score on one host "
                     '(main --mode=export) and copy score_selection.json')
  n = len(heldout)
  if n < 4:
    raise ValueError(f'score.select: {n} held-out normal images; at least 4 are needed (set '
                     'dataset.validation_fraction)')
  a, b = split_halves(n, config.seed)
  every = ml_collections.ConfigDict(config.to_dict())
  every.score.select = 'none'
  every.score.normalize = 'global'
  stats_scored = train.score_split(state, heldout.subset(a), every, mesh, decode=True,
                                   keep_maps=False)
  images = np.concatenate([batch['image'][batch['valid']] for batch in input_pipeline.eval_batches(
      heldout.subset(b), config.dataset, config.train.eval_batch_size)])
  rng = np.random.default_rng([config.seed, 3])
  anomalous, masks = synthetic.corrupt_batch(images, 1.0, rng)
  clean = train.score_arrays(state, images, every, mesh)
  bad = train.score_arrays(state, anomalous, every, mesh)
  results = evaluate_candidates(stats_scored, clean, bad, masks, config)
  return {'chosen': choose(results), 'candidates': results, 'num_images': int(len(b))}


def resolve(config: ml_collections.ConfigDict, workdir: str, state=None,
            heldout: Optional[input_pipeline.SplitData] = None, mesh=None
            ) -> tuple[ml_collections.ConfigDict, Optional[dict[str, Any]]]:
  """The config whose score a run uses: `config` itself without selection; else the candidate in
  WORKDIR/FILENAME, chosen now (and saved) when the file is absent and a state is given."""
  check_config(config.score)
  if config.score.select == 'none':
    return config, None
  path = os.path.join(workdir, FILENAME)
  record = None
  if os.path.exists(path):
    with open(path) as f:
      record = json.load(f)
    if record.get('candidates_tried') != list(config.score.candidates):
      record = None  # Chosen among other candidates: choose again.
  if record is None:
    if state is None:
      raise ValueError(f'{path}: missing; the score is chosen when the run is evaluated (main)')
    record = select_score(state, heldout, config, mesh)
    record['candidates_tried'] = list(config.score.candidates)
    if jax.process_index() == 0:
      atomic_files.write_json(path, record)
  return with_candidate(config, record['chosen']), record
