"""The tiny config's metrics, pinned: a refactor must not change what a config computes.

The numbers were recorded with `python -m vivano_jax.main --config=configs/tiny.py` (and the
overrides below) before the package was reorganised; any change to the model, the data order, the
training step or the scoring moves them far more than the tolerance, which only absorbs
floating-point differences between CPUs.
"""

import pytest

from vivano_jax import train

TOL = 1e-3

# configs/tiny.py as it is: digits one-class, reconstruction scores, no pixel ground truth.
DIGITS = {'image_auroc': 0.974864456797749}
# The same on textures/brick with the 128 px recipe's scoring: per-pixel standardised recon + NLL
# map on 10 % held-out normals, image score = the map's maximum.
TEXTURES = {'image_auroc': 0.7544, 'pixel_auroc': 0.9351984384035279, 'au_pro': 0.6531300885368161}


@pytest.mark.parametrize('case', ['digits', 'textures'])
def test_tiny_config_metrics_are_unchanged(tiny_config, tmp_path, case):
  config = tiny_config
  # Recorded with the nearest-upsampling decoder and the conv output layer, the defaults then
  # (sub-pixel upsampling and output are now).
  config.model.decoder_upsample, config.model.decoder_output = 'nearest', 'conv'
  expected = DIGITS
  if case == 'textures':
    config.dataset.name = 'textures/brick'
    config.dataset.validation_fraction = 0.1
    config.score.image, config.score.pixel, config.score.normalize = 'map_max', 'combined', 'pixel'
    expected = TEXTURES
  summary = train.train_and_evaluate(config, str(tmp_path))
  overall = summary['metrics']['overall']
  assert summary['checkpoint_step'] == config.train.num_steps
  for name, value in expected.items():
    assert overall[name] == pytest.approx(value, abs=TOL), name
