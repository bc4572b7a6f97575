"""Choosing the score on held-out normals with synthetic anomalies (no test labels)."""

import json

import numpy as np
import pytest

from tests.conftest import load_config
from vivano_jax import config_checks
from vivano_jax import score_selection
from vivano_jax import scorer


def test_candidates_parse_and_bad_ones_are_clear_errors():
  assert config_checks.parse_image_candidate('map_max:combined:pixel') == {
      'image': 'map_max', 'image_map': 'combined', 'image_normalize': 'pixel'}
  assert config_checks.parse_image_candidate('nll_max') == {
      'image': 'nll_max', 'image_map': '', 'image_normalize': ''}
  assert config_checks.parse_pixel_candidate('ssim:global') == {'pixel': 'ssim',
                                                                  'normalize': 'global'}
  for bad in ('map_max', 'map_max:combined', 'max', 'recon:recon:global', 'map_topk:edges:pixel'):
    with pytest.raises(ValueError, match='score.image_candidates'):
      config_checks.parse_image_candidate(bad)
  for bad in ('recon', 'nll_max:global', 'recon:local', 'recon:pixel:x'):
    with pytest.raises(ValueError, match='score.pixel_candidates'):
      config_checks.parse_pixel_candidate(bad)
  config = load_config('tiny')
  config.score.select = 'best'
  with pytest.raises(ValueError, match='score.select'):
    config_checks.check_selection(config.score)
  config.score.select = 'synthetic'
  config.score.pixel_candidates = ()
  with pytest.raises(ValueError, match='score.pixel_candidates'):
    config_checks.check_selection(config.score)


def test_halves_are_disjoint_and_cover():
  a, b = score_selection.split_halves(11, seed=0)
  assert len(a) == 5 and len(b) == 6
  assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))


def _scored(recon_maps, nll_maps):
  image = {'recon': recon_maps.mean(axis=(1, 2)), 'nll_max': nll_maps.max(axis=(1, 2)),
           'nll_mean': nll_maps.mean(axis=(1, 2))}
  pixel = {'recon': recon_maps, 'nll': nll_maps}
  return scorer.ScoredSplit(image=image, pixel=pixel, mask=np.zeros(recon_maps.shape, bool),
                            moments={k: (v.sum(0), np.square(v).sum(0), len(v))
                                     for k, v in pixel.items()})


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
  config = load_config('tiny')
  config.score.image_candidates = ('nll_max', 'map_max:recon:global', 'map_max:recon:pixel')
  config.score.pixel_candidates = ('nll:global', 'recon:global')
  results = score_selection.evaluate_candidates(stats_scored, clean, bad, masks, config)
  assert results['image']['nll_max'] < 0.8
  assert results['image']['map_max:recon:global'] == 1.0
  assert results['pixel']['recon:global'] > 0.9 > results['pixel']['nll:global']
  assert score_selection.choose(results['image']) == 'map_max:recon:global'
  assert score_selection.choose(results['pixel']) == 'recon:global'
  # Ties go to the earlier candidate.
  assert score_selection.choose({'a': 0.5, 'b': 0.7, 'c': 0.7}) == 'b'


def test_resolve_reads_the_saved_choice(tmp_path):
  config = load_config('tiny')
  assert score_selection.resolve(config, str(tmp_path)) == (config, None)
  config.score.select = 'synthetic'
  with pytest.raises(ValueError, match='score_selection.json'):
    score_selection.resolve(config, str(tmp_path))
  record = {'image': 'map_topk:combined:pixel', 'pixel': 'ssim:global',
            'candidates_tried': {'image': list(config.score.image_candidates),
                                 'pixel': list(config.score.pixel_candidates)}}
  (tmp_path / score_selection.FILENAME).write_text(json.dumps(record))
  resolved, got = score_selection.resolve(config, str(tmp_path))
  s = resolved.score
  assert (s.image, s.image_map, s.image_normalize, s.pixel, s.normalize) == (
      'map_topk', 'combined', 'pixel', 'ssim', 'global')
  assert got == record
  assert config.score.image == 'recon'  # The caller's config is not changed.
  # A choice among other candidates is not reused.
  config.score.image_candidates = ('recon',)
  with pytest.raises(ValueError, match='score_selection.json'):
    score_selection.resolve(config, str(tmp_path))
