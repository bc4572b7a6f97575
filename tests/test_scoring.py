"""Scoring against scipy / TensorFlow references and hand-made cases."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from vivano_jax import score_maps
from vivano_jax import score_stats
from vivano_jax import scoring


@pytest.mark.parametrize('sigma', [0.8, 2.0, 4.0])
def test_gaussian_blur_matches_scipy(sigma):
  x = np.random.default_rng(0).normal(size=(2, 24, 17)).astype(np.float32)
  got = np.asarray(score_maps.gaussian_blur(jnp.asarray(x), sigma))
  ref = np.stack([ndimage.gaussian_filter(m, sigma, mode='reflect', truncate=4.0) for m in x])
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_gaussian_blur_smooths_the_last_two_axes_of_stacked_planes():
  x = np.random.default_rng(1).normal(size=(2, 3, 24, 17)).astype(np.float32)
  got = np.asarray(score_maps.gaussian_blur(jnp.asarray(x), 2.0))
  ref = ndimage.gaussian_filter(x, (0, 0, 2.0, 2.0), mode='reflect', truncate=4.0)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_gaussian_blur_off_and_kernel_is_normalised():
  x = jnp.ones((1, 5, 5))
  np.testing.assert_array_equal(np.asarray(score_maps.gaussian_blur(x, 0.0)), 1.0)
  np.testing.assert_allclose(float(score_maps.gaussian_kernel1d(3.0).sum()), 1.0, rtol=1e-6)


def test_bilinear_upsampling_matches_tensorflow_half_pixel():
  patch = np.random.default_rng(1).normal(size=(2, 4, 4)).astype(np.float32)
  got = np.asarray(score_maps.upsample(jnp.asarray(patch), 32, 32))
  ref = tf.image.resize(patch[..., None], (32, 32), method='bilinear', antialias=False).numpy()[..., 0]
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_components_max_patch_nll_and_reconstruction_error():
  nll = jnp.asarray([[[1.0, 5.0], [2.0, 3.0]], [[0.0, -1.0], [4.0, 2.0]]])
  images = jnp.zeros((2, 8, 8, 1))
  recon = jnp.concatenate([jnp.zeros((1, 8, 8, 1)), jnp.full((1, 8, 8, 1), 0.5)])
  image, pixel = scoring.score_components({'nll': nll, 'recon': recon}, images, smoothing_sigma=0.0)
  np.testing.assert_allclose(np.asarray(image['nll_max']), [5.0, 4.0])
  np.testing.assert_allclose(np.asarray(image['recon']), [0.0, 0.25])
  assert pixel['nll'].shape == (2, 8, 8) and pixel['recon'].shape == (2, 8, 8)
  # The upsampled map keeps the patch ordering: patch (0, 1) is the most anomalous of image 0.
  m = np.asarray(pixel['nll'][0])
  assert m[1, 6] > m[6, 1]
  image_nll_only, pixel_nll_only = scoring.score_components({'nll': nll}, images, 0.0)
  assert 'recon' not in image_nll_only and 'recon' not in pixel_nll_only


def _score(**kw):
  from vivano_jax import config_defaults  # pylint: disable=g-import-not-at-top
  score = config_defaults.base_config().score
  score.update(kw)
  return score


def test_combined_score_standardises_components():
  comps = {'nll_max': jnp.asarray([10.0, 14.0]), 'recon': jnp.asarray([0.1, 0.2])}
  pix = {'nll': jnp.zeros((2, 2, 2)), 'recon': jnp.ones((2, 2, 2))}
  stats = {'nll_max': (10.0, 2.0), 'recon': (0.1, 0.05), 'pixel_nll': (0.0, 1.0),
           'pixel_recon': (1.0, 1.0)}
  img, px = scoring.final_scores(comps, pix, _score(image='combined', pixel='combined'), stats)
  np.testing.assert_allclose(np.asarray(img), [0.0, 2.0 + 2.0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(px), 0.0)
  img, _ = scoring.final_scores(comps, pix, _score(image='nll_max', pixel='nll'))
  np.testing.assert_allclose(np.asarray(img), [10.0, 14.0])
  with pytest.raises(ValueError, match='statistics'):
    scoring.final_scores(comps, pix, _score(image='combined', pixel='nll'))
  with pytest.raises(ValueError, match='score.image'):
    scoring.final_scores(comps, pix, _score(image='mean', pixel='nll'))
  with pytest.raises(ValueError, match='score.combine'):
    scoring.final_scores(comps, pix, _score(combine=('recon', 'edges')), stats)
  with pytest.raises(ValueError, match='score.normalize'):
    scoring.final_scores(comps, pix, _score(normalize='robust'), stats)
  assert scoring.needs_decoder(_score(image='nll_max', pixel='nll')) is False
  assert scoring.needs_decoder(_score(image='nll_max', pixel='recon')) is True
  assert scoring.needs_decoder(_score(image='map_max', pixel='nll')) is False
  assert scoring.needs_decoder(_score(image='combined', pixel='nll', combine=('nll', 'ssim')))
  assert not scoring.needs_stats(_score(image='recon', pixel='recon'))
  assert scoring.needs_stats(_score(image='map_max', pixel='recon', normalize='pixel'))


@pytest.mark.parametrize('channels', [1, 3])
def test_ssim_map_matches_skimage(channels):
  from skimage.metrics import structural_similarity  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, size=(2, 24, 20, channels)).astype(np.float32)
  y = np.clip(x + rng.normal(scale=0.3, size=x.shape), -1, 1).astype(np.float32)
  got = np.asarray(score_maps.ssim_map(jnp.asarray(x), jnp.asarray(y)))
  assert got.shape == (2, 24, 20)
  for i in range(2):
    per_channel = [structural_similarity(x[i, ..., c], y[i, ..., c], data_range=2.0,
                                         gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, full=True)[1]
                   for c in range(channels)]
    np.testing.assert_allclose(got[i], np.mean(per_channel, axis=0), rtol=1e-4, atol=1e-4)
  # Identical images: SSIM 1 everywhere.
  np.testing.assert_allclose(np.asarray(score_maps.ssim_map(jnp.asarray(x), jnp.asarray(x))), 1.0,
                             atol=1e-5)


def test_map_scores_against_numpy():
  maps = np.random.default_rng(0).normal(size=(3, 10, 10)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(scoring.map_score(maps, 'map_max', 0.01)),
                             maps.reshape(3, -1).max(1))
  # 5 % of 100 pixels: the mean of the 5 highest.
  ref = np.sort(maps.reshape(3, -1), axis=1)[:, -5:].mean(1)
  np.testing.assert_allclose(np.asarray(scoring.map_score(maps, 'map_topk', 0.05)), ref, rtol=1e-6)
  # A fraction below one pixel still takes one: the maximum.
  np.testing.assert_allclose(np.asarray(scoring.map_score(maps, 'map_topk', 1e-6)),
                             maps.reshape(3, -1).max(1))
  img, px = scoring.final_scores({'recon': jnp.zeros(3)}, {'recon': jnp.asarray(maps)},
                                 _score(image='map_topk', pixel='recon', topk_fraction=0.05))
  np.testing.assert_allclose(np.asarray(img), ref, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(px), maps)


def test_per_pixel_statistics_and_normalisation():
  rng = np.random.default_rng(1)
  normal = rng.normal(size=(50, 6, 6)) * np.linspace(0.5, 3.0, 36).reshape(6, 6) + 2.0
  image = {'recon': normal.mean(axis=(1, 2))}
  moments = {'recon': (normal.sum(0), np.square(normal).sum(0), len(normal))}
  stats = score_stats.stats_from_moments(image, moments)
  np.testing.assert_allclose(stats['recon'], (image['recon'].mean(), image['recon'].std()))
  np.testing.assert_allclose(stats['pixel_recon'], (normal.mean(), normal.std()), rtol=1e-9)
  # Per position, shrunk towards all positions as if 10 more maps had the global mean and variance.
  w = 50 / (50 + score_stats.PRIOR_MAPS)
  mean = w * normal.mean(0) + (1 - w) * normal.mean()
  std = np.sqrt(w * normal.var(0) + (1 - w) * normal.var())
  np.testing.assert_allclose(stats['map_recon'][0], mean, rtol=1e-5)
  np.testing.assert_allclose(stats['map_recon'][1], std, rtol=1e-4)
  test = rng.normal(size=(2, 6, 6)).astype(np.float32)
  _, px = scoring.final_scores({'recon': jnp.zeros(2)}, {'recon': jnp.asarray(test)},
                               _score(pixel='recon', normalize='pixel'), stats)
  np.testing.assert_allclose(np.asarray(px), (test - mean) / std, rtol=1e-4, atol=1e-5)
  # Many maps: the per-position statistics themselves; one map: std near the global one.
  big = rng.normal(size=(4000, 2, 2)) * np.array([[1.0, 4.0], [1.0, 1.0]])
  s = score_stats.stats_from_moments({}, {'x': (big.sum(0), np.square(big).sum(0), len(big))})
  np.testing.assert_allclose(s['map_x'][1], big.std(0), rtol=0.01)
  one = big[:1]
  s = score_stats.stats_from_moments({}, {'x': (one.sum(0), np.square(one).sum(0), 1)})
  assert np.all(s['map_x'][1] > 0.9 * np.sqrt(10 / 11) * one.std())
  # Combined with per-pixel normalisation: the sum of the per-pixel z-scores.
  moments['nll'] = (2 * normal.sum(0), 4 * np.square(normal).sum(0), len(normal))
  stats = score_stats.stats_from_moments(image, moments)
  _, px = scoring.final_scores({'recon': jnp.zeros(2)},
                               {'recon': jnp.asarray(test), 'nll': jnp.asarray(2 * test)},
                               _score(pixel='combined', normalize='pixel', image='recon'), stats)
  np.testing.assert_allclose(np.asarray(px), 2 * (test - mean) / std, rtol=1e-4, atol=1e-4)


def test_stats_file_round_trip(tmp_path):
  stats = {'recon': (0.5, 0.1), 'pixel_recon': (0.2, 0.3),
           'map_recon': (np.full((4, 4), 0.2, np.float32), np.full((4, 4), 0.3, np.float32))}
  path = str(tmp_path / 'score_stats.npz')
  score_stats.save_stats(path, stats)
  back = score_stats.load_stats(path)
  assert sorted(back) == sorted(stats)
  assert back['recon'] == (0.5, 0.1)
  np.testing.assert_array_equal(back['map_recon'][1], stats['map_recon'][1])
  assert score_stats.scalar_stats(stats) == {'recon': (0.5, 0.1), 'pixel_recon': (0.2, 0.3)}


def test_image_score_from_another_map_than_the_output():
  rng = np.random.default_rng(2)
  normal = rng.normal(size=(40, 4, 4)) * np.linspace(0.5, 2.0, 16).reshape(4, 4)
  stats = score_stats.stats_from_moments({'recon': normal.mean(axis=(1, 2))}, {
      'recon': (normal.sum(0), np.square(normal).sum(0), len(normal))})
  test = rng.normal(size=(3, 4, 4)).astype(np.float32)
  w = 40 / (40 + score_stats.PRIOR_MAPS)
  z = (test - (w * normal.mean(0) + (1 - w) * normal.mean())) / np.sqrt(
      w * normal.var(0) + (1 - w) * normal.var())
  score = _score(image='map_max', pixel='recon', normalize='global', image_normalize='pixel')
  img, px = scoring.final_scores({'recon': jnp.zeros(3)}, {'recon': jnp.asarray(test)}, score, stats)
  np.testing.assert_array_equal(np.asarray(px), test)  # The output map: raw.
  np.testing.assert_allclose(np.asarray(img), z.reshape(3, -1).max(1), rtol=1e-4)  # Its score: z.
  assert scoring.needs_stats(score) and scoring.needs_decoder(score)
  score = _score(image='map_max', pixel='nll', image_map='recon')
  assert scoring.needs_decoder(score) and not scoring.needs_stats(score)
  with pytest.raises(ValueError, match='score.image_map'):
    scoring.final_scores({}, {}, _score(image_map='edges'), stats)


def _patch_means(images, patch):
  """A stand-in for the model's per-patch NLL: the mean of each P x P patch, [B, h, w]."""
  b, height, width, c = images.shape
  x = images.reshape(b, height // patch, patch, width // patch, patch, c)
  return jnp.mean(x, axis=(2, 4, 5))


@pytest.mark.parametrize('shifts', [2, 4])
def test_shifted_nll_scores_every_offset_of_the_patch_grid(shifts):
  patch, size = 8, 32
  images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  fine = score_maps.shifted_nll(lambda x: _patch_means(x, patch), jnp.asarray(images),
                             _patch_means(jnp.asarray(images), patch), patch, shifts)
  assert fine.shape == (2, size // patch * shifts, size // patch * shifts)
  # Reference: the mean of the P x P window starting at (i, j) * P / S of the image with its bottom
  # and right borders reflected (numpy's 'reflect', the border pixel not repeated).
  padded = np.pad(images, ((0, 0), (0, patch), (0, patch), (0, 0)), mode='reflect')
  step = patch // shifts
  for i in range(fine.shape[1]):
    for j in range(fine.shape[2]):
      window = padded[:, i * step:i * step + patch, j * step:j * step + patch]
      np.testing.assert_allclose(fine[:, i, j], window.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('shifts', [1, 2, 4])
def test_upsampled_shifted_grid_is_linear_between_patch_centres(shifts):
  patch, size = 8, 32
  grid = np.random.default_rng(1).normal(size=(1, 4 * shifts, 4 * shifts)).astype(np.float32)
  up = np.asarray(score_maps.upsample(jnp.asarray(grid), size, size, shifts))
  # Value j sits at the centre of the patch starting at pixel j * P / S, i.e. at pixel coordinate
  # j * P / S + P / 2 - 0.5; linear in between, the edge value beyond (np.interp), per axis.
  centres = np.arange(grid.shape[1]) * patch / shifts + patch / 2 - 0.5
  pixels = np.arange(size)
  rows = np.stack([np.interp(pixels, centres, grid[0, :, j]) for j in range(grid.shape[2])], 1)
  expected = np.stack([np.interp(pixels, centres, rows[i]) for i in range(size)], 0)
  np.testing.assert_allclose(up[0], expected, rtol=1e-5, atol=1e-5)


def test_shifts_must_divide_the_patch():
  scoring.check_shifts(4, 16)
  with pytest.raises(ValueError, match=r'score\.shifts=3 must divide model\.patch_size=16'):
    scoring.check_shifts(3, 16)


@pytest.mark.parametrize('shifts', [0, -2])
def test_bad_shifts_name_the_field(shifts):
  with pytest.raises(ValueError, match=r'score\.shifts must be a positive integer'):
    scoring.check_config(_score(shifts=shifts))


def _numpy_views(x, tta):
  turned = lambda k, mirrored: np.rot90(x, k, axes=(1, 2))[:, :, ::-1 if mirrored else 1]
  return {'none': [x], 'flips': [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]],
          'dihedral': [turned(k, m) for k in range(4) for m in (False, True)]}[tta]


@pytest.mark.parametrize('tta', ['none', 'flips', 'dihedral'])
def test_test_time_views_are_the_flips_and_quarter_turns(tta):
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
  views = score_maps.tta_views(tta)
  got = [np.asarray(score_maps.to_view(jnp.asarray(x), v)) for v in views]
  want = _numpy_views(x, tta)
  assert len(got) == len(want) == {'none': 1, 'flips': 4, 'dihedral': 8}[tta]
  for w in want:  # Each numpy view exactly once.
    assert sum(np.array_equal(g, w) for g in got) == 1
  for v, g in zip(views, got):
    np.testing.assert_array_equal(score_maps.from_view(jnp.asarray(g), v), x)


@pytest.mark.parametrize('augment,want', [
    ((), 'none'), (('hflip', 'vflip'), 'flips'), (('rot90', 'hflip'), 'dihedral'),
    (('rot90', 'vflip'), 'dihedral'), (('rot90', 'hflip', 'vflip'), 'dihedral')])
def test_augment_views_are_the_group_training_augments_with(augment, want):
  flags = {k: k in augment for k in ('hflip', 'vflip', 'rot90')}
  assert score_maps.tta_views('augment', flags) == score_maps.tta_views(want)


@pytest.mark.parametrize('flag,numpy_view', [
    ('hflip', lambda x: x[:, :, ::-1]), ('vflip', lambda x: x[:, ::-1]),
    ('rot90', lambda x: np.rot90(x, 1, axes=(1, 2)))])
def test_one_augmentation_gives_the_views_it_generates(flag, numpy_view):
  # One flip: the image and its mirror; quarter turns alone: the 4 turns, never a mirror.
  x = np.random.default_rng(2).normal(size=(1, 5, 5)).astype(np.float32)
  views = score_maps.tta_views('augment', {flag: True})
  got = [np.asarray(score_maps.to_view(jnp.asarray(x), v)) for v in views]
  want = [x, numpy_view(x)]
  while flag == 'rot90' and len(want) < 4:
    want.append(numpy_view(want[-1]))
  assert len(got) == len(want)
  for w in want:
    assert sum(np.array_equal(g, w) for g in got) == 1


@pytest.mark.parametrize('tta', ['none', 'flips', 'dihedral'])
def test_averaged_views_of_a_position_weighting_in_closed_form(tta):
  # apply(x) = x * w for a weight w[i, j] = i * j that no view leaves alone: every view is turned
  # back, so the average is x * (the views' mean of w) = x * (h - 1) / 2 * (w - 1) / 2 under the
  # flips (each corner's product once) and the dihedral group; no views: x * w.
  size = 6
  x = np.random.default_rng(1).normal(size=(2, size, size)).astype(np.float32)
  weight = np.outer(np.arange(size), np.arange(size)).astype(np.float32)
  apply = lambda images: {'seg_logits': images * weight, 'nll': 2 * images * weight,
                          'recon': (images * weight)[..., None], 'kl': images}
  out = score_maps.averaged_views(apply, jnp.asarray(x), score_maps.tta_views(tta))
  assert sorted(out) == ['nll', 'recon', 'seg_logits']  # The maps scoring reads, no other.
  mean_weight = weight if tta == 'none' else ((size - 1) / 2) ** 2
  np.testing.assert_allclose(out['seg_logits'], x * mean_weight, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['nll'], 2 * x * mean_weight, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['recon'][..., 0], x * mean_weight, rtol=1e-5, atol=1e-5)


def test_bad_tta_names_the_field():
  with pytest.raises(ValueError, match=r"score\.tta must be one of \('none', 'augment', 'flips', "):
    scoring.check_config(_score(tta='rot45'))
  with pytest.raises(ValueError, match=r"score\.tta='flips' cannot be combined with score\.shifts=2"):
    scoring.check_config(_score(tta='flips', shifts=2))


def test_ensemble_sums_members_standardised_on_the_normals():
  rng = np.random.default_rng(3)
  normal = rng.normal(size=(30, 4, 4)) * np.linspace(0.5, 2.0, 16).reshape(4, 4) + 1.0
  normal_seg = rng.uniform(size=(30, 4, 4))
  image = {'recon': normal.mean(axis=(1, 2)), 'seg_max': normal_seg.max(axis=(1, 2))}
  moments = {'recon': (normal.sum(0), np.square(normal).sum(0), len(normal)),
             'seg': (normal_seg.sum(0), np.square(normal_seg).sum(0), len(normal_seg))}
  score = _score(image='ensemble', pixel='seg', ensemble=('seg_max', 'map_max:recon:pixel'))
  stats = scoring.with_ensemble_stats(image, {'recon': normal, 'seg': normal_seg}, score,
                                      score_stats.stats_from_moments(image, moments))
  # By hand: each member's scores on the normals give its mean and std.
  w = 30 / (30 + score_stats.PRIOR_MAPS)
  mean_map = w * normal.mean(0) + (1 - w) * normal.mean()
  std_map = np.sqrt(w * normal.var(0) + (1 - w) * normal.var())
  z_max = lambda maps: ((maps - mean_map) / std_map).reshape(len(maps), -1).max(1)
  normal_member2 = z_max(normal)
  np.testing.assert_allclose(stats['ensemble:seg_max'], (image['seg_max'].mean(),
                                                         image['seg_max'].std()), rtol=1e-6)
  np.testing.assert_allclose(stats['ensemble:map_max:recon:pixel'],
                             (normal_member2.mean(), normal_member2.std()), rtol=1e-4)
  test, test_seg = rng.normal(size=(3, 4, 4)), rng.uniform(size=(3, 4, 4))
  img, px = scoring.final_scores({'recon': jnp.zeros(3), 'seg_max': jnp.asarray(test_seg.max((1, 2)))},
                                 {'recon': jnp.asarray(test), 'seg': jnp.asarray(test_seg)}, score,
                                 stats)
  want = ((test_seg.max((1, 2)) - image['seg_max'].mean()) / image['seg_max'].std()
          + (z_max(test) - normal_member2.mean()) / normal_member2.std())
  np.testing.assert_allclose(np.asarray(img), want, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(px), test_seg, rtol=1e-6)  # The output map: as asked.
  # Its needs follow its members.
  assert scoring.needs_stats(score) and scoring.needs_decoder(score)
  assert scoring.image_needs_maps(score)
  assert scoring.components_used(score) == {'seg', 'seg_max', 'recon'}
  assert not scoring.needs_decoder(_score(image='ensemble', pixel='nll',
                                          ensemble=('nll_max', 'map_max:nll:pixel')))


def test_a_map_of_named_components_is_their_standardised_sum():
  rng = np.random.default_rng(4)
  a, b, c = (rng.normal(size=(2, 3, 3)) for _ in range(3))
  pix = {'recon': jnp.asarray(a), 'nll': jnp.asarray(b), 'seg': jnp.asarray(c)}
  stats = {'pixel_recon': (1.0, 2.0), 'pixel_nll': (-1.0, 0.5), 'pixel_seg': (0.0, 1.0)}
  # 'recon+nll' sums those two, whatever score.combine holds (here all three, for the output map).
  score = _score(image='map_max', image_map='recon', pixel='combined',
                 combine=('recon', 'nll', 'seg'))
  fields = scoring.parse_image_spec('map_max:recon+nll:global', 'score.ensemble')
  score.update(fields)
  img, px = scoring.final_scores({}, pix, score, stats)
  z = (a - 1.0) / 2.0 + (b + 1.0) / 0.5
  np.testing.assert_allclose(np.asarray(img), z.reshape(2, -1).max(1), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(px), z + c, rtol=1e-5)
  assert scoring.components_used(score) == {'recon', 'nll', 'seg'}
  for bad in ('map_max:recon+recon:global', 'map_max:recon+edges:global'):
    with pytest.raises(ValueError, match='score.ensemble'):
      scoring.parse_image_spec(bad, 'score.ensemble')


@pytest.mark.parametrize('members,match', [((), 'distinct'), (('recon', 'recon'), 'distinct'),
                                           (('recon', 'edges'), "'edges'"),
                                           (('ensemble',), "'ensemble'"),
                                           (('map_max:recon',), "'map_max:recon'")])
def test_bad_ensemble_names_the_field(members, match):
  with pytest.raises(ValueError, match=f'score.ensemble.*{match}|{match}.*'):
    scoring.check_config(_score(image='ensemble', ensemble=members))
