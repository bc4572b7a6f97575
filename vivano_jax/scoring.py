"""Anomaly scores from model outputs (paper Section 4.3), pure jnp / numpy.

Components, computed per batch in the jitted eval step (`score_components`):
  pixel maps [B, H, W]: 'nll' (the per-patch mixture NLL [B, h, w] upsampled bilinearly to the image
    size, half-pixel centres as PyTorch's interpolate with align_corners=False), 'recon' (squared
    reconstruction error), 'ssim' (1 - SSIM between input and reconstruction; only when a score
    reads it or `score.always_ssim`, `computes_ssim`), 'seg' (the
    segmenter's anomaly probability, with `model.segmenter_features` > 0); each optionally smoothed
    with a Gaussian (`score.smoothing_sigma`);
  image scores [B]: 'nll_max' (the paper: the maximum per-patch NLL), 'nll_mean', 'recon' (mean squared
    error), 'ssim' (mean of 1 - SSIM), 'seg_max' (the maximum of the smoothed 'seg' map, DRAEM's
    image score).
With `score.tta` the model's maps are first averaged over mirrored and turned views of the image
(score_maps.averaged_views), and the components computed from the averages.

Final scores (`final_scores`, from `config.score`):
  score.pixel: one component, or 'combined': the sum of the components in `score.combine`, each
    standardised by its statistics on held-out normal images (`ScoreStats`), so none dominates by its
    units;
  score.normalize='pixel': every pixel map is first standardised per pixel position by the mean and
    standard deviation maps of the held-out normals (what is normal at the image border or on a
    product's edge is then discounted there only); 'global' uses one mean and std per component;
  score.image: one image component, 'combined' (the standardised sum of the image components of
    `score.combine`), or a statistic of a pixel map: 'map_max' or 'map_topk' (the mean of its highest
    `score.topk_fraction` of pixels), of the output map or of the one `score.image_map` and
    `score.image_normalize` name (which normalisation detects best need not localise best);
    or 'ensemble': several image scores (`score.ensemble`, each an image component or
    'MAP:KIND:NORMALIZE', `parse_image_spec`), each standardised by its mean and std over the
    held-out normal images, summed. Detectors that fail on different data then back each other
    up: an image is anomalous when it is far from normal by either, in units of normal spread.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivano_jax import errors
from vivano_jax import score_maps
from vivano_jax import score_stats

Array = jax.Array

COMPONENTS = ('nll', 'recon', 'ssim', 'seg')  # Pixel components; `score.combine` takes these names.
# Their image counterparts.
IMAGE_COMPONENT = {'nll': 'nll_max', 'recon': 'recon', 'ssim': 'ssim', 'seg': 'seg_max'}
DECODER_COMPONENTS = ('recon', 'ssim', 'seg', 'seg_max')  # Computed from the reconstruction.
MAP_SCORES = ('map_max', 'map_topk')
ENSEMBLE = 'ensemble'  # The sum of the standardised image scores of `score.ensemble`.
IMAGE_SCORES = ('nll_max', 'nll_mean', 'recon', 'ssim', 'seg_max', 'combined', ENSEMBLE) + MAP_SCORES
PIXEL_MAPS = COMPONENTS + ('combined',)
# Beside these, an image score's map ('MAP:KIND:NORMALIZE', `parse_image_spec`) may be a sum of
# named components, 'recon+nll': 'combined' over those instead of `score.combine`.
NORMALIZE = ('global', 'pixel')

def score_components(outputs: dict[str, Array], images: Array, smoothing_sigma: float,
                     shifts: int = 1, ssim: bool = True
                     ) -> tuple[dict[str, Array], dict[str, Array]]:
  """Image-level and pixel-level score components.

  Args:
    outputs: model outputs; 'recon' is optional (without it only NLL components are produced).
      'nll' is [B, h, w], or [B, h * S, w * S] from `shifted_nll` with S = shifts.
    images: [B, H, W, C] inputs in [-1, 1].
    smoothing_sigma: Gaussian sigma in pixels for the pixel maps (0 = none).
    ssim: compute the 'ssim' components (with a reconstruction); `computes_ssim` says when a run
      needs them.
  Returns:
    (image components {name: [B]}, pixel components {name: [B, H, W]}).
  """
  _, height, width, _ = images.shape
  nll = outputs['nll']
  image = {'nll_max': jnp.max(nll, axis=(1, 2)), 'nll_mean': jnp.mean(nll, axis=(1, 2))}
  blur = lambda maps: score_maps.gaussian_blur(maps, smoothing_sigma)
  pixel = {'nll': blur(score_maps.upsample(nll, height, width, shifts))}
  if 'recon' in outputs:
    err = score_maps.squared_error_map(images, outputs['recon'])
    image['recon'] = jnp.mean(err, axis=(1, 2))
    pixel['recon'] = blur(err)
  if 'recon' in outputs and ssim:
    dissim = 1.0 - score_maps.ssim_map(images, outputs['recon'])
    image['ssim'] = jnp.mean(dissim, axis=(1, 2))
    pixel['ssim'] = blur(dissim)
  if 'seg_logits' in outputs:
    pixel['seg'] = blur(jax.nn.sigmoid(outputs['seg_logits']))
    image['seg_max'] = jnp.max(pixel['seg'], axis=(1, 2))
  return image, pixel


ScoreStats = score_stats.ScoreStats  # {name: (mean, std)}: score_stats.py.


def check_config(score: ml_collections.ConfigDict) -> None:
  """One clear error for a bad `config.score` field."""
  if score.image not in IMAGE_SCORES:
    raise errors.UsageError(f'score.image must be one of {IMAGE_SCORES}, got {score.image!r}')
  if score.pixel not in PIXEL_MAPS:
    raise errors.UsageError(f'score.pixel must be one of {PIXEL_MAPS}, got {score.pixel!r}')
  if score.normalize not in NORMALIZE:
    raise errors.UsageError(f'score.normalize must be one of {NORMALIZE}, got {score.normalize!r}')
  if score.image_map and not _is_map_kind(score.image_map):
    raise errors.UsageError(f"score.image_map must be '', one of {PIXEL_MAPS} or components joined "
                            f"by '+', got {score.image_map!r}")
  if score.image_normalize not in ('',) + NORMALIZE:
    raise errors.UsageError(f"score.image_normalize must be '' or one of {NORMALIZE}, got "
                     f'{score.image_normalize!r}')
  combine = tuple(score.combine)
  if not combine or any(c not in COMPONENTS for c in combine) or len(set(combine)) != len(combine):
    raise errors.UsageError(f'score.combine must name distinct components of {COMPONENTS}, got {combine!r}')
  if not 0.0 < score.topk_fraction <= 1.0:
    raise errors.UsageError(f'score.topk_fraction must be in (0, 1], got {score.topk_fraction}')
  if not isinstance(score.shifts, int) or score.shifts < 1:
    raise errors.UsageError(f'score.shifts must be a positive integer, got {score.shifts!r}')
  score_maps.tta_views(score.tta)  # A UsageError naming the field for an unknown value.
  if score.tta != 'none' and score.shifts > 1:
    raise errors.UsageError(f'score.tta={score.tta!r} cannot be combined with score.shifts='
                            f"{score.shifts} (a mirrored view moves the shifted patch grid): set "
                            f"score.tta='none' to use shifts")
  if score.image == ENSEMBLE:
    members = tuple(score.ensemble)
    if not members or len(set(members)) != len(members):
      raise errors.UsageError(f'score.ensemble must name distinct image scores, got {members!r}')
    for member in members:
      parse_image_spec(member, 'score.ensemble')


def parse_image_spec(text: str, field: str) -> dict[str, str]:
  """An image score written as a string -> the score fields it sets (image, image_map,
  image_normalize): an image component ('recon', 'nll_max', 'combined', ...) or
  'MAP:KIND:NORMALIZE' (a statistic of the KIND map under NORMALIZE). `field` names the config
  field in the error."""
  parts = str(text).split(':')
  singles = [k for k in IMAGE_SCORES if k not in MAP_SCORES + (ENSEMBLE,)]
  if len(parts) == 1 and parts[0] in singles:
    return {'image': parts[0], 'image_map': '', 'image_normalize': ''}
  if (len(parts) == 3 and parts[0] in MAP_SCORES and _is_map_kind(parts[1])
      and parts[2] in NORMALIZE):
    return {'image': parts[0], 'image_map': parts[1], 'image_normalize': parts[2]}
  raise errors.UsageError(f'{field}: {text!r} is neither one of {singles} nor '
                          f"'MAP:KIND:NORMALIZE' with MAP in {MAP_SCORES}, KIND in "
                          f"{PIXEL_MAPS} or components joined by '+', NORMALIZE in {NORMALIZE}")


def _is_map_kind(kind: str) -> bool:
  parts = kind.split('+')
  if len(parts) == 1:
    return kind in PIXEL_MAPS
  return all(p in COMPONENTS for p in parts) and len(set(parts)) == len(parts)


def _map_components(kind: str, score: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The components a map of `kind` sums: `score.combine` for 'combined', 'a+b' -> (a, b)."""
  return tuple(score.combine) if kind == 'combined' else tuple(kind.split('+'))


def _member(score: ml_collections.ConfigDict, spec: str) -> ml_collections.ConfigDict:
  """`score` with the image score of ensemble member `spec`."""
  out = ml_collections.ConfigDict(score.to_dict())
  out.update(parse_image_spec(spec, 'score.ensemble'))
  return out


def check_shifts(shifts: int, patch_size: int) -> None:
  """Test-time shifts move the image by whole pixels: P / S must be one."""
  if shifts > 1 and patch_size % shifts:
    raise errors.UsageError(f'score.shifts={shifts} must divide model.patch_size={patch_size}')


def _standardise(x, stat) -> Any:
  mean, std = stat
  return (x - mean) / np.maximum(std, 1e-12)


def image_map_kind(score: ml_collections.ConfigDict) -> tuple[str, str]:
  """(pixel kind, normalize) of the map that 'map_*' image scores are taken from:
  `score.image_map` / `score.image_normalize`, each '' = the same as the output map's."""
  return score.image_map or score.pixel, score.image_normalize or score.normalize


def _pixel_maps(pixel_components: dict[str, Array], kind: str, normalize: str,
                score: ml_collections.ConfigDict, stats: Optional[ScoreStats]) -> Array:
  """Pixel maps [B, H, W] of `kind` ('combined', a component, or components joined by '+') under
  `normalize`."""
  names = _map_components(kind, score)
  for name in names:
    if name not in pixel_components:
      raise ValueError(f'the {kind!r} map needs the {name!r} component, which was not computed '
                       f'(have {sorted(pixel_components)})')
  if normalize == 'pixel':
    return sum(_standardise(pixel_components[n], stats[f'map_{n}']) for n in names)
  if len(names) == 1:
    return pixel_components[names[0]]
  return sum(_standardise(pixel_components[n], stats[f'pixel_{n}']) for n in names)


def map_score(maps: Array, kind: str, topk_fraction: float) -> Array:
  """An image score [B] from final pixel maps [B, H, W]: their maximum, or the mean of their highest
  ceil(topk_fraction * H * W) pixels."""
  flat = jnp.reshape(jnp.asarray(maps), (maps.shape[0], -1))
  if kind == 'map_max':
    return jnp.max(flat, axis=1)
  k = max(1, int(np.ceil(topk_fraction * flat.shape[1])))
  return jnp.mean(jax.lax.top_k(flat, k)[0], axis=1)


def final_scores(image_components: dict[str, Array], pixel_components: dict[str, Array],
                 score: ml_collections.ConfigDict, stats: Optional[ScoreStats] = None
                 ) -> tuple[Array, Array]:
  """(image scores [B], pixel maps [B, H, W]) for `config.score` (see the module doc)."""
  _check_stats(score, stats)
  pixel = _pixel_maps(pixel_components, score.pixel, score.normalize, score, stats)
  if score.image == ENSEMBLE:
    members = _member_scores(image_components, pixel_components, score, stats, pixel)
    return sum(_standardise(v, stats[f'{ENSEMBLE}:{m}']) for m, v in members.items()), pixel
  return _image_score(image_components, pixel_components, score, stats, pixel), pixel


def _image_score(image_components, pixel_components, score, stats, pixel) -> Array:
  """The image scores [B] of a score that is not an ensemble; `pixel` is its output map, reused
  when the image score is taken from the same map."""
  source = pixel
  if score.image in MAP_SCORES and image_map_kind(score) != (score.pixel, score.normalize):
    source = _pixel_maps(pixel_components, *image_map_kind(score), score, stats)
  return image_scores(image_components, score, stats, source)


def _member_scores(image_components, pixel_components, score, stats, pixel) -> dict[str, Array]:
  """{member: its image scores [B]} of `score.ensemble`, unstandardised; `pixel` as above."""
  return {m: _image_score(image_components, pixel_components, _member(score, m), stats, pixel)
          for m in score.ensemble}


def image_scores(image_components: dict[str, Array], score: ml_collections.ConfigDict,
                 stats: Optional[ScoreStats] = None, pixel_maps: Optional[Array] = None) -> Array:
  """Final image scores [B] for `config.score`. 'map_*' scores need `pixel_maps`, the maps of
  `image_map_kind(score)` (`final_scores` builds them)."""
  _check_stats(score, stats)
  if score.image == ENSEMBLE:
    raise ValueError("score.image='ensemble' is computed by final_scores, from the components")
  if score.image in MAP_SCORES:
    if pixel_maps is None:
      raise ValueError(f'score.image={score.image!r} needs pixel maps')
    return map_score(pixel_maps, score.image, score.topk_fraction)
  if score.image == 'combined':
    names = [IMAGE_COMPONENT[c] for c in score.combine]
    missing = [n for n in names if n not in image_components]
    if missing:
      raise ValueError(f'score.image=combined needs {missing}, which were not computed')
    return sum(_standardise(image_components[n], stats[n]) for n in names)
  if score.image not in image_components:
    raise ValueError(f'score.image={score.image!r} needs outputs that were not computed (have '
                     f'{sorted(image_components)})')
  return image_components[score.image]


def _check_stats(score: ml_collections.ConfigDict, stats: Optional[ScoreStats]) -> None:
  check_config(score)
  if needs_stats(score) and not stats:
    raise ValueError(f'score.image={score.image!r} / score.pixel={score.pixel!r} / score.normalize='
                     f'{score.normalize!r} need score statistics of held-out normal images')


def _maps_used(score: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(kind, normalize) of every pixel map the configured scores build."""
  used = [(score.pixel, score.normalize)]
  if score.image in MAP_SCORES:
    used.append(image_map_kind(score))
  if score.image == ENSEMBLE:
    for member in score.ensemble:
      used += _maps_used(_member(score, member))
  return used


def image_needs_maps(score: ml_collections.ConfigDict) -> bool:
  """Whether the image score is computed from pixel maps (they must be kept while scoring)."""
  return score.image in MAP_SCORES + (ENSEMBLE,)


def needs_stats(score: ml_collections.ConfigDict) -> bool:
  """Whether the configured scores standardise by statistics of held-out normal images."""
  return score.image in ('combined', ENSEMBLE) or any(
      norm == 'pixel' or len(_map_components(kind, score)) > 1 for kind, norm in _maps_used(score))


def needs_decoder(score: ml_collections.ConfigDict) -> bool:
  """Whether the configured scores need the reconstruction (else the decoder pass is skipped)."""
  return bool(components_used(score) & set(DECODER_COMPONENTS))


def computes_ssim(score: ml_collections.ConfigDict) -> bool:
  """Whether the scoring step computes the 'ssim' components: when a configured score reads them,
  when `score.select` may choose one of its candidates that does, or with `score.always_ssim`
  (to export them beside the others). Otherwise they are left out: the SSIM map blurs five moments
  of every channel, about a quarter of the scoring step with the decoder at 512 px."""
  if score.always_ssim or 'ssim' in components_used(score):
    return True
  if score.select == 'none':
    return False
  candidates = [parse_image_spec(c, 'score.image_candidates') for c in score.image_candidates] + [
      {'pixel': str(c).split(':')[0]} for c in score.pixel_candidates]  # 'KIND:NORMALIZE'.
  return any('ssim' in components_used(ml_collections.ConfigDict(score.to_dict() | fields))
             for fields in candidates)


def components_used(score: ml_collections.ConfigDict) -> set[str]:
  """The pixel and image components the configured scores read."""
  kinds = [kind for kind, _ in _maps_used(score)]
  images = [_member(score, m).image for m in score.ensemble] if score.image == ENSEMBLE else [
      score.image]
  kinds += [image for image in images if image not in MAP_SCORES]
  used = set()
  for kind in kinds:  # 'combined' and 'a+b' sum several components; any other name is one.
    used |= set(_map_components(kind, score))
  if 'combined' in images:
    used |= {IMAGE_COMPONENT[c] for c in score.combine}
  return used


def with_ensemble_stats(image_components: dict[str, np.ndarray],
                        pixel_components: dict[str, np.ndarray], score: ml_collections.ConfigDict,
                        stats: ScoreStats) -> ScoreStats:
  """`stats` and, for `score.image='ensemble'`, the mean and std of each member's image scores
  over the held-out normal images whose components are given (all of them, every process's)."""
  if score.image != ENSEMBLE:
    return stats
  pixel = _pixel_maps(pixel_components, score.pixel, score.normalize, score, stats)
  members = _member_scores(image_components, pixel_components, score, stats, pixel)
  values = {m: np.asarray(v, np.float64) for m, v in members.items()}
  return dict(stats) | {f'{ENSEMBLE}:{m}': (float(v.mean()), float(v.std()))
                        for m, v in values.items()}


def segmenter_fields(score: ml_collections.ConfigDict) -> list[str]:
  """The `config.score` fields (with their values) that read the segmenter's map or its maximum."""
  seg = {'seg', IMAGE_COMPONENT['seg']}
  reads = lambda kind: bool(set(_map_components(kind, score)) & seg)
  combine = f' with score.combine={tuple(score.combine)}'
  out = []
  if reads(score.pixel):
    out.append(f'score.pixel={score.pixel!r}' + (combine if score.pixel == 'combined' else ''))
  ensemble = score.image == ENSEMBLE
  for spec in (score.ensemble if ensemble else [score.image]):
    member = _member(score, spec) if ensemble else score
    kind = image_map_kind(member)[0]
    if (member.image in seg or (member.image == 'combined' and 'seg' in member.combine)
        or (member.image in MAP_SCORES and reads(kind) and kind != score.pixel)):
      name = f'score.ensemble member {spec!r}' if ensemble else f'score.image={spec!r}'
      sums = member.image == 'combined' or (member.image in MAP_SCORES and kind == 'combined')
      out.append(name + (combine if sums else ''))
  return out


def check_components(config: ml_collections.ConfigDict) -> None:
  """One clear error when `config.score` reads the segmenter's map and the model has none."""
  check_config(config.score)
  fields = segmenter_fields(config.score)
  if config.model.segmenter_features == 0 and fields:
    raise errors.UsageError(f"{'; '.join(fields)}: read the segmenter's map, and the model has "
                            'none (model.segmenter_features=0): set model.segmenter_features > 0 '
                            'or choose scores without the segmenter')
