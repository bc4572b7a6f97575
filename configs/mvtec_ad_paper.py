"""MVTec AD, one category, with the paper's recipe (Section 4.1, Tables 3 and 4): 512 px, 3 channels,
patch 64, ViT width 512, depth 6, 8 heads, MLP 1024, batch 16, learning rate 1e-5, 200 epochs;
scores by the mixture NLL (image: maximum patch NLL; pixels: the NLL map upsampled, Section 4.3).

Select the category with the config argument: `--config=configs/mvtec_ad_paper.py:bottle` (default
'bottle'); pass `--config.dataset.manual_dir=/path/to/mvtec_anomaly_detection`. Augmentation per
category (the paper gives none): the table in `configs/mvtec_ad.py`, repeated here so each file
stands alone. The paper gives no latent size, mixture size, warmup or loss weights: those keep the
defaults.
"""

from vivano_jax import config_defaults

CATEGORIES = ('carpet', 'grid', 'leather', 'tile', 'wood', 'bottle', 'cable', 'capsule', 'hazelnut',
              'metal_nut', 'pill', 'screw', 'toothbrush', 'transistor', 'zipper')
ALL, NONE = dict(hflip=True, vflip=True, rot90=True), dict(hflip=False, vflip=False, rot90=False)
# Only transforms that map a good part onto another good part (reasons in configs/mvtec_ad.py).
AUGMENT = {
    'carpet': ALL, 'grid': ALL, 'leather': ALL, 'tile': ALL, 'wood': ALL,
    'bottle': ALL, 'hazelnut': ALL,
    'cable': NONE, 'capsule': NONE, 'pill': NONE, 'transistor': NONE,
    'metal_nut': dict(hflip=False, vflip=False, rot90=True),
    'screw': dict(hflip=False, vflip=False, rot90=True),
    'toothbrush': dict(hflip=True, vflip=False, rot90=False),
    'zipper': dict(hflip=True, vflip=True, rot90=False),
}


def category(arg) -> str:
  name = arg if arg not in (None, '') else 'bottle'
  if name not in CATEGORIES:
    raise ValueError(f'MVTec AD category must be one of {CATEGORIES}, got {arg!r}')
  return name


def get_config(arg=None):
  name = category(arg)
  config = config_defaults.base_config()
  config.dataset.name = f'mvtec_ad/{name}'
  config.dataset.image_size = 512
  config.dataset.channels = 3
  config.dataset.augment.update(AUGMENT[name])
  config.model.patch_size = 64
  config.model.width = 512
  config.model.depth = 6
  config.model.num_heads = 8
  config.model.mlp_dim = 1024
  config.model.decoder_base_features = 256
  config.score.image = 'nll_max'  # Section 4.3: maximum per-patch NLL...
  config.score.pixel = 'nll'  # ...upsampled bilinearly to a heat map.
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.learning_rate = 1e-5
  config.train.num_steps = 0
  config.train.num_epochs = 200
  config.train.checkpoint_every_steps = 2000
  return config
