"""MVTec AD, one category, reduced for a 2-core CPU (about 11 minutes a category at 128 px).

Pass the data with `--config.dataset.manual_dir=` (MVTec AD cannot be downloaded automatically,
and is not on the development machine):
  * one category's folder, the one holding train/good/, test/ and ground_truth/ (e.g.
    `/data/mvtec_anomaly_detection/hazelnut`): the category is recognised by the folder's name, or
    else by its defect folders;
  * or the folder holding the extracted categories, with the category named in the config argument
    (`--config=configs/mvtec_ad.py:hazelnut`); without an argument it must hold only one category.
The category sets the training augmentation (below) unless a `dataset.augment` field is given.

Differs from `configs/mvtec_ad_paper.py` (the paper's Section 4.1 recipe), to fit 2 CPU cores:
  * 128 px instead of 512 (3 channels kept; grid, screw and zipper are grayscale photos, converted);
  * patch 16 instead of 64 (the same 8 x 8 patch grid), ViT width 128 instead of 512, depth 3
    instead of 6, 4 heads instead of 8, MLP 256 instead of 1024, decoder 64 channels with the
    conv output layer, with which this recipe was measured (RESULTS.md 1i);
  * 1200 steps of batch 16 at learning rate 1e-3 with warmup and cosine decay, instead of 200
    epochs at 1e-5.
Trained and scored with the recipe measured best over Magnetic Tile and the embedded textures
(`config_defaults.small_128px_config`; RESULTS.md sections 1 and 1e): the segmenter (DRAEM's
discriminative head) learns from synthetic anomalies drawn on half of the training inputs; 10 % of
the good training images are held out; pixel map = reconstruction error + mixture NLL + the
segmenter's map, each standardised per pixel position on the held-out normals (for aligned objects
this discounts what always differs at a place, such as a product's edges); image score = the
segmenter's maximum plus the maximum of the standardised error + NLL map, each standardised on the
held-out normals ('ensemble'): no single score was best on every dataset measured, and the sum stays
near the better one. Both are averaged over the flips and quarter turns the category trains with
(`score.tta='augment'`: 8 views for textures, bottle and hazelnut, none for a category whose pose
matters; RESULTS.md 1g: higher on every dataset measured). About 11 minutes a category at 128 px
on a quiet 2-core machine (measured on a stand-in of bottle's size, 292 RGB images of 900 px: data
and startup 21 s, training 9 min 6 s at 36 images/s, evaluation 31 s and export and report 55 s
with the test-time views; on one of cable's size, 374 images of 1024 px and 8 defect types, 11.0
minutes; BENCHMARKS.md). The paper's scores:
`--config.score.image=nll_max --config.score.pixel=nll --config.score.normalize=global`.
Augmentation per category: `AUGMENT` in vivano_jax/datasets/mvtec_ad.py (the paper variant has
none).
"""

import ml_collections

from vivano_jax import config_defaults
from vivano_jax.datasets.mvtec_ad import AUGMENT, category


def get_config(arg=None):
  name = category(arg)
  config = config_defaults.small_128px_config()
  config.dataset.channels = 3
  if name:
    config.dataset.name = f'mvtec_ad/{name}'
    config.dataset.augment.update(AUGMENT[name])
  else:  # The category in dataset.manual_dir, found when the run starts; its augmentation then
    # fills the fields left None (a field given on the command line is kept).
    config.dataset.name = 'mvtec_ad'
    for field in AUGMENT['bottle']:
      config.dataset.augment[field] = ml_collections.FieldReference(None, field_type=bool)
  return config
