"""Choosing the score on held-out normals with synthetic anomalies (no test labels)."""

import json

import numpy as np
import pytest

from tests.conftest import load_config
from vivano_jax import score_selection


def test_candidates_parse_and_bad_ones_are_clear_errors():
  assert score_selection.parse_candidate('map_max:combined:pixel') == {
      'image': 'map_max', 'pixel': 'combined', 'normalize': 'pixel'}
  for bad in ('map_max:combined', 'max:recon:global', 'recon:edges:global', 'recon:recon:local'):
    with pytest.raises(ValueError, match='score.candidates'):
      score_selection.parse_candidate(bad)
  config = load_config('tiny')
  config.score.select = 'best'
  with pytest.raises(ValueError, match='score.select'):
    score_selection.check_config(config.score)
  config.score.select = 'synthetic'
  config.score.candidates = ()
  with pytest.raises(ValueError, match='score.candidates'):
    score_selection.check_config(config.score)


def test_halves_are_disjoint_and_cover():
  a, b = score_selection.split_halves(11, seed=0)
  assert len(a) == 5 and len(b) == 6
  assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))


def _scored(recon_maps, nll_maps):
  image = {'recon': recon_maps.mean(axis=(1, 2)), 'nll_max': nll_maps.max(axis=(1, 2)),
           'nll_mean': nll_maps.mean(axis=(1, 2))}
  return {'image': image, 'pixel': {'recon': recon_maps, 'nll': nll_maps}}


def test_the_candidate_that_finds_the_anomalies_is_chosen():
  rng = np.random.default_rng(0)
  n, s = 12, 16
  masks = np.zeros((n, s, s), bool)
  for i in range(n):
    r, c = rng.integers(2, s - 4, size=2)
    masks[i, r:r + 3, c:c + 3] = True
  noise = lambda: rng.uniform(0, 1, size=(n, s, s))
  # The reconstruction error lights up exactly the anomalies; the NLL is noise everywhere.
  clean = _scored(noise(), noise())
  bad = _scored(noise() + 5.0 * masks, noise())
  stats_maps = noise()
  stats_scored = _scored(stats_maps, noise())
  stats_scored['pixel_moments'] = {
      k: (v.sum(0), np.square(v).sum(0), n) for k, v in stats_scored['pixel'].items()}
  config = load_config('tiny')
  config.score.candidates = ('nll_max:nll:global', 'map_max:recon:global', 'map_max:recon:pixel')
  results = score_selection.evaluate_candidates(stats_scored, clean, bad, masks, config)
  assert results['nll_max:nll:global']['image_auroc'] < 0.8
  assert results['map_max:recon:global']['image_auroc'] == 1.0
  assert results['map_max:recon:global']['au_pro'] > 0.9
  assert score_selection.choose(results) in ('map_max:recon:global', 'map_max:recon:pixel')
  # Ties go to the earlier candidate.
  tie = {'a': {'mean': 0.5}, 'b': {'mean': 0.7}, 'c': {'mean': 0.7}}
  assert score_selection.choose(tie) == 'b'


def test_resolve_reads_the_saved_choice(tmp_path):
  config = load_config('tiny')
  assert score_selection.resolve(config, str(tmp_path)) == (config, None)
  config.score.select = 'synthetic'
  with pytest.raises(ValueError, match='score_selection.json'):
    score_selection.resolve(config, str(tmp_path))
  record = {'chosen': 'map_topk:combined:pixel', 'candidates': {},
            'candidates_tried': list(config.score.candidates)}
  (tmp_path / score_selection.FILENAME).write_text(json.dumps(record))
  resolved, got = score_selection.resolve(config, str(tmp_path))
  assert (resolved.score.image, resolved.score.pixel, resolved.score.normalize) == (
      'map_topk', 'combined', 'pixel')
  assert got['chosen'] == record['chosen']
  assert config.score.image == 'recon'  # The caller's config is not changed.
  # A choice among other candidates is not reused.
  config.score.candidates = ('recon:recon:global',)
  with pytest.raises(ValueError, match='score_selection.json'):
    score_selection.resolve(config, str(tmp_path))
