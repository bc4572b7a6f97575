"""Every configuration field, with its meaning. Files in `configs/` start from `base_config()`.

A run is reproducible from its config alone: `main.py` saves it as `config.json` in the workdir.
"""

import copy
from typing import Any

import ml_collections

from vivano_jax import errors


def base_config() -> ml_collections.ConfigDict:
  """The small CPU configuration on the embedded `textures/brick` data."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Parameters, latent samples and data order.
  config.dataset = _dataset()
  config.model = _model()
  config.density = _density()
  config.loss = _loss()
  config.score = _score()
  config.train = _train()
  config.export = _export()
  return config


def _dataset() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'textures/brick'  # '<builder>/<config>', see vivano_jax/datasets.
  c.data_dir = ''  # tfds data dir; '' = tfds default (~/tensorflow_datasets).
  c.manual_dir = ''  # Root of local files for builders that read them (mvtec_ad, folder).
  c.image_size = 128  # Model input S x S (images resized to it).
  c.channels = 1  # Model input channels (images converted: gray <-> RGB).
  c.validation_fraction = 0.0  # Held-out normals carved from train (when no val split).
  c.validation_seed = 0
  c.num_threads = 2  # tf.data decoding threads per process.
  # Training images are decoded and resized once and kept in memory when they fit in this many MiB
  # (float32 at the model size); else they are decoded per sample.
  c.cache_max_mib = 2048
  c.augment = ml_collections.ConfigDict(dict(hflip=True, vflip=True, rot90=True))
  # mvtec_ad: refuse a copy whose file counts differ from the official ones (False builds it
  # anyway, with a warning per short folder).
  c.check_counts = True
  return c


def _model() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.encoder = 'vit'  # 'vit' (the paper) or 'cnn' (ablation).
  c.patch_size = 16  # P; the decoder needs a power of two.
  c.width = 192  # D.
  c.depth = 4  # L.
  c.num_heads = 4
  c.mlp_dim = 384
  c.cnn_base_features = 32  # Only for encoder='cnn'.
  c.latent_dim = 32  # d_z per patch.
  c.variational = True  # VAE (True) or deterministic autoencoder.
  c.decoder_base_features = 64  # Channels of the first x2 stage, halved per stage...
  c.decoder_min_features = 8  # ...but never below this.
  c.decoder_norm = 'batch'  # 'batch' (paper: BatchNorm + ReLU) | 'none'.
  # 'subpixel': a 3x3 conv at the low resolution, then depth-to-space (= a stride-2 transposed
  # conv, ICNR-initialised); 'nearest': nearest upsampling, then a 3x3 conv at the high resolution.
  # Same quality over 3 seeds on brick and Magnetic Tile; sub-pixel scores 20 % faster at 512 px.
  c.decoder_upsample = 'subpixel'
  # 'subpixel': the last x2 stage is the output layer (a conv at half resolution into 4 x C
  # channels, depth-to-space, tanh), so nothing runs at the full resolution but the tanh;
  # 'conv': the last stage's BatchNorm + ReLU and a 3x3 conv to the image at the full resolution.
  # Same quality over 3 seeds on brick and Magnetic Tile (RESULTS.md 1i); the paper's 512 px
  # train step is 1.4-1.6x faster with 'subpixel' (BENCHMARKS.md).
  c.decoder_output = 'subpixel'
  c.remat = False  # Rematerialise encoder blocks (less memory, more compute).
  # > 0: a discriminative head (model/segmenter.py, DRAEM's), a U-Net of this many channels at
  # full resolution reading the input beside its reconstruction, trained to segment the synthetic
  # anomalies of `train.synthetic_anomalies` (which must be > 0); its map is the score
  # component 'seg'. 0: none (the paper's model).
  c.segmenter_features = 0
  # 'full': its first level at the input's resolution; 'half': on 2 x 2 blocks of pixels stacked
  # into channels, one logit per pixel still (model/segmenter.py): a 1.9x faster train step at
  # 128 px, level on Magnetic Tile and brick, far worse on grass and gravel (RESULTS.md 1h).
  c.segmenter_resolution = 'full'
  return c


def _density() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_components = 10  # K Gaussians.
  c.hidden_dim = 128
  c.num_layers = 2
  c.condition = 'position'  # 'position' | 'none' | 'class_token' | 'self' (model/mixture.py).
  c.target = 'latent'  # 'latent' (VAE mean per patch) | 'token' (encoder token).
  c.stop_gradient = True  # The head does not shape the representation.
  c.min_scale = 1e-3  # Floor of the mixture scales.
  c.position_embed_dim = 64
  return c


def _loss() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.recon_weight = 1.0
  # beta, per input value: the KL of a patch is divided by the P * P * C values it covers
  # (model/losses.py), so the weight means the same at every patch size. 0.25 at patch 16, gray,
  # is 1e-3 nats per patch.
  c.kl_weight = 0.25
  c.nll_weight = 1.0  # lambda.
  c.ssim_weight = 0.0  # Weight of mean(1 - SSIM(x, x_hat)) beside the MSE (VT-ADL's loss).
  c.seg_weight = 1.0  # Weight of the segmenter's focal loss (gamma 2, per pixel; with a segmenter).
  return c


def _score() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # The paper scores by the mixture NLL ('nll_max' / 'nll'). On the default data the reconstruction
  # error detects and localises far better (README, RESULTS.md), so it is the default here.
  # Every kind is described in vivano_jax/scoring.py.
  c.image = 'recon'  # 'nll_max' (paper) | 'nll_mean' | 'recon' | 'ssim' | 'seg_max' | 'combined'
  #                   | 'map_max' | 'map_topk' (from the final pixel map) | 'ensemble'.
  c.pixel = 'recon'  # 'nll' (paper) | 'recon' | 'ssim' | 'seg' | 'combined'.
  c.combine = ('nll', 'recon')  # Components summed by 'combined' (each standardised).
  c.normalize = 'global'  # 'global' | 'pixel' (per-position standardisation of maps).
  c.topk_fraction = 0.01  # 'map_topk': the mean of this fraction of highest pixels.
  # 'ensemble': these image scores, each standardised on the held-out normals, summed (an image
  # component or 'MAP:KIND:NORMALIZE', as in image_candidates below; scoring.py).
  c.ensemble = ('seg_max', 'map_max:combined:pixel')
  c.image_map = ''  # The map 'map_*' image scores use: '' = score.pixel, a pixel kind or 'a+b'.
  c.image_normalize = ''  # ...and its normalisation: '' = score.normalize.
  c.smoothing_sigma = 4.0  # Gaussian smoothing of pixel maps, pixels; 0 = off.
  # Test-time shifts S: the NLL map from S x S passes shifted by P / S pixels, S times finer.
  c.shifts = 1
  # Test-time views: 'none' | 'augment' (those dataset.augment trains with) | 'flips' (4 mirrored
  # views) | 'dihedral' (8: flips and quarter turns); the model's maps averaged over them
  # (score_maps.averaged_views). Not with shifts > 1.
  c.tta = 'none'
  # 'synthetic': choose the image score among `image_candidates` and the pixel map among
  # `pixel_candidates` on held-out normals with synthetic anomalies (vivano_jax/score_selection.py,
  # which gives the candidates' syntax); 'none': the fields above as they are.
  c.select = 'none'
  c.image_candidates = ('recon', 'ssim', 'nll_max', 'combined', 'map_max:recon:global',
                                   'map_max:recon:pixel', 'map_max:combined:pixel',
                                   'map_topk:combined:pixel')
  c.pixel_candidates = ('recon:global', 'ssim:global', 'nll:global', 'combined:global',
                                   'recon:pixel', 'combined:pixel')
  c.native_resolution = True  # Pixel metrics at the masks' native size (MVTec protocol).
  # The 'ssim' components are computed only when a score above (or a candidate) reads them; True:
  # always, to export them beside the others (scoring.computes_ssim).
  c.always_ssim = False
  return c


def _train() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.batch_size = 32  # Global batch; must divide by the number of devices x grad_accum_steps.
  c.num_steps = 800  # > 0: train this many steps; else num_epochs * steps per epoch.
  c.num_epochs = 0
  c.learning_rate = 1e-3  # Peak, after linear warmup; cosine decay to 0 after it.
  c.schedule = 'warmup_cosine'  # 'warmup_cosine' | 'constant' (learning_rate throughout).
  c.warmup_steps = 100  # Only for 'warmup_cosine'.
  # learning_rate and warmup_steps scaled from the global batch base_batch_size (B0) to batch_size
  # (B): 'none' (as given) | 'linear' (lr * B / B0, Goyal et al. 2017) | 'sqrt' (lr * sqrt(B / B0),
  # for Adam-type updates); under either rule warmup_steps * B0 / B, rounded up (warmup over the
  # same number of images). optimizer.scaled_hyperparameters computes them; config.json records
  # what a run used under 'effective'.
  c.lr_scaling = 'none'
  c.base_batch_size = 0  # B0; a positive int under a scaling rule.
  # 'adamw' | 'lamb' (Adam directions, layer-wise trust ratio) | 'lars' (momentum SGD, layer-wise
  # trust ratio): the last two for large batches (optimizer.py).
  c.optimizer = 'adamw'
  c.weight_decay = 1e-4  # On weight matrices and kernels only (LAMB's, LARS's trust ratio too).
  c.momentum = 0.9  # 'lars' only.
  c.trust_coefficient = 1e-3  # 'lars' only: eta in eta * |w| / |g + weight_decay * w|.
  c.grad_clip_norm = 1.0  # Global norm of each part (autoencoder, density head); 0 = off.
  # Fraction of training inputs given a synthetic anomaly, the clean image staying the target
  # (denoising; vivano_jax/synthetic.py). 0 = plain reconstruction, as the paper.
  c.synthetic_anomalies = 0.0
  # What they are drawn with: contents among synthetic.KINDS ('shift', 'paste', 'move', 'noise'),
  # shapes among synthetic.SHAPES ('blob', 'rect'), and the (min, max) fraction of the image a
  # shape covers.
  c.synthetic_kinds = ('shift', 'paste')
  c.synthetic_shapes = ('blob',)
  c.synthetic_area = (0.002, 0.04)
  # Microbatches per step: on accelerators the memory of batch / this; on CPUs unrolled, the
  # speed of one batch but not less memory (train_step.train_step).
  c.grad_accum_steps = 1
  c.compute_dtype = 'float32'  # 'float32' | 'bfloat16' (parameters stay float32).
  c.log_every_steps = 50
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 3
  c.eval_batch_size = 32  # Global; must divide by the number of devices.
  c.num_tensorboard_images = 8
  return c


def _export() -> ml_collections.ConfigDict:
  """Export of scores, maps, thresholds and the HTML report (export.py; vivano export)."""
  c = ml_collections.ConfigDict()
  c.at_end = True  # main --mode=train exports after training.
  c.splits = ('test',)  # Each to WORKDIR/export/<split>/.
  c.threshold_quantile = 0.99  # Of held-out normal image scores (thresholds.py).
  c.threshold = 'quantile'  # Decision threshold used: 'quantile' | 'f1'.
  c.max_overlays = -1  # Overlay PNGs per split: -1 all, n: n most + n least anomalous.
  c.report_images = 4  # Most and least anomalous test images shown in the report.
  c.display_images = 16  # Held-out normals whose maps fix the heatmap colour scale.
  return c


def paper_config() -> ml_collections.ConfigDict:
  """The paper's recipe. Where the paper is explicit, it is followed:
    * Section 4.1: 512 px, patch 64, batch 16, learning rate 1e-5 (one rate, so held constant:
      `train.schedule='constant'`), 200 epochs; Section 4.2: 3 channels;
    * Section 3.1: ViT as eqs. 1-6; the decoder's convolutions with BatchNorm and ReLU, tanh out;
    * Section 3.2: softmax weights, softplus scales, linear means;
    * Section 4.3: image score = the maximum per-patch NLL; pixel map = the per-patch NLL upsampled
      bilinearly to the image size, not smoothed (`score.smoothing_sigma=0`).
  Where it is silent, these are our choices:
    * ViT width 512, depth 6, 8 heads, MLP 1024 (Section 3.1 gives the equations, not the sizes): a
      ViT-Small-like encoder for a 64-token sequence;
    * the decoder's layout (Section 3.1 names its layers, not their number or how they upsample):
      log2(64) = 6 x2 stages of 256 channels halved per stage, each a sub-pixel convolution (the
      stride-2 transposed convolution of the PyTorch code the paper builds on, computed without its
      zero-dilated input), the last of them the output layer (`model.decoder_output`), so no pass
      runs at 512 px but the tanh;
    * optimizer Adam (no weight decay, no gradient clipping): the optimizer of the PyTorch code the
      paper builds on, with nothing the paper does not mention added to it;
    * no augmentation: the paper mentions none;
    * latent size, mixture size K, the KL and NLL weights and the density's condition keep
      `base_config()`'s values (vivano_jax/model/mixture.py says which reading of p(y | x) they
      implement).
  """
  config = base_config()
  config.dataset.image_size = 512
  config.dataset.channels = 3
  config.dataset.augment = ml_collections.ConfigDict(dict(hflip=False, vflip=False, rot90=False))
  config.model.update(dict(patch_size=64, width=512, depth=6, num_heads=8, mlp_dim=1024,
                           decoder_base_features=256))
  config.score.image = 'nll_max'
  config.score.pixel = 'nll'
  config.score.smoothing_sigma = 0.0
  config.train.update(dict(batch_size=16, eval_batch_size=16, learning_rate=1e-5,
                           schedule='constant', weight_decay=0.0, grad_clip_norm=0.0, num_steps=0,
                           num_epochs=200, checkpoint_every_steps=2000))
  return config


def small_128px_config() -> ml_collections.ConfigDict:
  """The reduced 2-core CPU recipe for photographs (Magnetic Tile, MVTec AD): 128 px, patch 16 (the
  paper's 8 x 8 patch grid), ViT width 128, depth 3, 4 heads, MLP 256, latent 32, decoder 64
  channels, 1200 steps of batch 16 at learning rate 1e-3; with the segmenter (DRAEM's
  discriminative head, 16 channels) trained on synthetic anomalies drawn on half of the inputs.

  As measured over Magnetic Tile and the textures (RESULTS.md, sections 1 and 1e):
    * the segmenter: the reconstruction error and the mixture NLL miss most Magnetic Tile defects
      (image AUROC 0.63), where the head learns which differences between an image and its
      reconstruction are not normal (0.70-0.76); 1200 steps rather than 600 (the head learns
      more slowly than the autoencoder);
    * 10 % of the training images are held out (`dataset.validation_fraction`): their maps and
      scores give the statistics of normal images;
    * pixel map: the reconstruction error, the mixture NLL and the segmenter's map, each
      standardised per pixel position by those statistics, summed ('combined',
      `score.normalize='pixel'`): no one of them localises best everywhere (the NLL on grass, the
      head on Magnetic Tile and gravel), and the sum is never far from the best;
    * image score: 'ensemble' of the head's maximum and the maximum of the per-pixel standardised
      reconstruction error + NLL, each standardised on the held-out normals: the head alone is
      best on Magnetic Tile and gravel but raises false alarms on brick and grass, where the
      other score is best; the sum keeps each dataset within a few points of its better part;
    * test-time views (`score.tta='augment'`): the maps averaged over the flips and quarter turns
      training augments with (8 views for Magnetic Tile and the textures), which lifted every
      metric measured on the same checkpoints (RESULTS.md section 1g) for 8 passes of the model
      in evaluation (about half a minute at 128 px).
  The autoencoder itself is trained as the paper's: it reconstructs the clean image.
  `plain_128px_config` is the same without the segmenter (the recipe before it).
  """
  config = plain_128px_config()
  config.model.segmenter_features = 16
  # Every figure of this recipe (RESULTS.md 1e-1h) was measured with the conv output layer. The
  # sub-pixel one was level within the seed spread on Magnetic Tile (RESULTS.md 1i) but put its
  # AU-PRO mean just under the 0.70 target; at 128 px, with the segmenter, it saves 13 % a step.
  config.model.decoder_output = 'conv'
  config.score.update(dict(image='ensemble', ensemble=('seg_max', 'map_max:recon+nll:pixel'),
                           pixel='combined', normalize='pixel', combine=('recon', 'nll', 'seg'),
                           tta='augment'))
  config.train.update(dict(num_steps=1200, checkpoint_every_steps=600, synthetic_anomalies=0.5))
  return config


def plain_128px_config() -> ml_collections.ConfigDict:
  """`small_128px_config` without the segmenter, as RESULTS.md sections 1-1d measured it: 600 steps,
  pixel map = reconstruction error + mixture NLL, each standardised per pixel position on the
  held-out normals (10 % of the training images), image score = the map's maximum."""
  config = base_config()
  config.dataset.validation_fraction = 0.1
  config.score.update(dict(image='map_max', pixel='combined', normalize='pixel',
                           combine=('recon', 'nll')))
  config.dataset.image_size = 128
  config.model.update(dict(patch_size=16, width=128, depth=3, num_heads=4, mlp_dim=256,
                           latent_dim=32, decoder_base_features=64))
  config.train.update(dict(batch_size=16, eval_batch_size=32, num_steps=600, warmup_steps=50,
                           checkpoint_every_steps=300))
  return config


def small_32px_config() -> ml_collections.ConfigDict:
  """The reduced 2-core CPU recipe for the one-class benchmarks (MNIST, CIFAR-10, digits): 32 px,
  patch 8 (4 x 4 grid), width 64, depth 2, 4 heads, MLP 128, latent 16, 300 steps of batch 32; no
  augmentation, 1 px map smoothing (4 px would blur a 32 px image away), metrics only at the end."""
  config = base_config()
  config.dataset.image_size = 32
  config.dataset.augment = ml_collections.ConfigDict(dict(hflip=False, vflip=False, rot90=False))
  config.model.update(dict(patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128,
                           latent_dim=16, decoder_base_features=32))
  config.density.hidden_dim = 64
  config.density.position_embed_dim = 16
  config.score.smoothing_sigma = 1.0
  # 1e-3 nats per 8 x 8 gray patch, the weight these were measured at.
  config.loss.kl_weight = 0.064
  config.train.batch_size = 32
  config.train.eval_batch_size = 250
  config.train.num_steps = 300
  config.train.warmup_steps = 30
  config.train.checkpoint_every_steps = 300
  config.train.num_tensorboard_images = 4
  config.export.at_end = False  # Metrics only; `vivano export` writes maps on demand.
  return config


# Fields added with one behaviour and whose default changed later: a config.json written before
# the field existed trained with this value, not with today's default. Runs from before
# score.always_ssim computed the 'ssim' components always: their exports keep them.
FORMER_DEFAULTS = {('model', 'decoder_upsample'): 'nearest', ('model', 'decoder_output'): 'conv',
                   ('score', 'always_ssim'): True}


def completed(saved: dict[str, Any], path: str = 'config.json') -> dict[str, Any]:
  """A config.json's dict with every field it lacks: its FORMER_DEFAULTS value where the default
  has changed since the field was added, else today's default (keys beyond the config kept).
  A section (model, train, ...) that is not an object is a DataError naming `path`."""
  base = base_config().to_dict()
  for section, value in saved.items():
    if isinstance(base.get(section), dict) and not isinstance(value, dict):
      raise errors.DataError(f'{path}: corrupt (section {section!r} is not an object: {value!r})')
  saved = copy.deepcopy(saved)
  for (section, name), former in FORMER_DEFAULTS.items():
    if name not in saved.setdefault(section, {}):
      saved[section][name] = former

  def merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
      base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base

  return merge(base, saved)
