"""The full model: the parts of this package joined into one Flax module, built from the config.

`ViVAno` takes `config.model`'s fields under their config names, the `config.density` section as a
dict, the input size and the compute dtype, and sets none of them itself: the config
(vivano_jax/config_defaults.py) is the one place a size or a default is written down, and a config
field the model does not take is an error rather than silently unused.

Its parameters: 'encoder', 'bottleneck', 'decoder', 'density' (the mixture head),
'density_position_embedding' [h, w, E] and, with `model.segmenter_features` > 0, 'segmenter' (the
discriminative head, model/segmenter.py). Training draws the VAE's samples from the 'latent' rng
stream.
"""

import math
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vivano_jax import errors
from vivano_jax.model import bottleneck
from vivano_jax.model import decoder as decoder_lib
from vivano_jax.model import encoder as encoder_lib
from vivano_jax.model import mixture
from vivano_jax.model import segmenter as segmenter_lib

Array = jax.Array

# The `config.density` fields ViVAno reads itself; the others are the mixture head's attributes.
_DENSITY_OWN_FIELDS = ('condition', 'target', 'stop_gradient', 'position_embed_dim')


class ViVAno(nn.Module):
  """ViT (or CNN) encoder -> VAE over patch tokens -> conv decoder, plus the mixture density head.

  Attributes (meanings in vivano_jax/config_defaults.py; `create_model` fills them):
    encoder ... remat: the fields of `config.model`, same names.
    density: the `config.density` section as a dict (kept as a FrozenDict).
    image_size, image_channels: `config.dataset.image_size` and `config.dataset.channels`.
    dtype: computation dtype, from `config.train.compute_dtype` (parameters stay float32).
  """
  encoder: str
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  cnn_base_features: int
  latent_dim: int
  variational: bool
  decoder_base_features: int
  decoder_min_features: int
  decoder_norm: str
  decoder_upsample: str
  decoder_output: str
  remat: bool
  segmenter_features: int
  segmenter_resolution: str
  density: Mapping[str, Any]
  image_size: int
  image_channels: int
  dtype: Any

  def __post_init__(self):
    # A module must hash (jit hashes it inside the train state's apply_fn), and a dict does not.
    object.__setattr__(self, 'density', flax.core.FrozenDict(self.density))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, train: bool = False, decode: bool = True) -> dict[str, Array]:
    """x: [B, H, W, C] in [-1, 1].

    Returns a dict of float32 arrays:
      recon [B, H, W, C] (only when decode), z / mean / logvar [B, h, w, d_z], kl [B, h, w] (nats),
      nll [B, h, w] (nats, the mixture NLL of each patch's code), seg_logits [B, H, W] (only when
      decode and the model has a segmenter: the discriminative head's anomaly logits).
    With decode=False the decoder is skipped: scoring by the NLL alone needs no reconstruction.
    """
    self._check(x)
    # The submodules are named explicitly: their names, not the attributes of the same name, are
    # the parameter tree that checkpoints hold.
    encoder = encoder_lib.make_encoder(
        self.encoder, patch_size=self.patch_size, width=self.width, depth=self.depth,
        num_heads=self.num_heads, mlp_dim=self.mlp_dim, remat=self.remat,
        cnn_base_features=self.cnn_base_features, dtype=self.dtype, name='encoder')
    tokens, class_token = encoder(x.astype(self.dtype), train=train)
    post = bottleneck.VAEBottleneck(self.latent_dim, self.variational, name='bottleneck')(
        tokens, train=train)
    out = dict(post)
    if decode:
      features = decoder_lib.decoder_features(self.patch_size, self.decoder_base_features,
                                              self.decoder_min_features)
      decoder = decoder_lib.ConvDecoder(features, self.image_channels, self.decoder_norm,
                                        self.decoder_upsample, self.decoder_output,
                                        dtype=self.dtype, name='decoder')
      out['recon'] = decoder(post['z'], train=train)
      if self.segmenter_features:
        segmenter = segmenter_lib.Segmenter(self.segmenter_features, self.segmenter_resolution,
                                            dtype=self.dtype, name='segmenter')
        out['seg_logits'] = segmenter(x, jax.lax.stop_gradient(out['recon']), train=train)
    out['nll'] = self._patch_nll(tokens.astype(jnp.float32), class_token.astype(jnp.float32),
                                 post['mean'])
    return out

  def _check(self, x: Array):
    """The config's choices the parts would only reject late, and the input's size."""
    _check_choice('density.target', self.density['target'], mixture.TARGETS)
    _check_choice('density.condition', self.density['condition'], mixture.CONDITIONS)
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'input is {x.shape[1]}x{x.shape[2]}, the model expects dataset.image_size='
                       f'{self.image_size}')
    if x.shape[-1] != self.image_channels:
      raise ValueError(f'input has {x.shape[-1]} channels, the model expects dataset.channels='
                       f'{self.image_channels}')

  def _patch_nll(self, tokens: Array, class_token: Array, latent_mean: Array) -> Array:
    """Mixture NLL of every patch's code [B, h, w]; creates the head and its position embedding."""
    d = self.density
    target_dim = self.latent_dim if d['target'] == 'latent' else self.width
    head_fields = {k: v for k, v in d.items() if k not in _DENSITY_OWN_FIELDS}
    head = mixture.MixtureDensityHead(target_dim=target_dim, **head_fields, name='density')
    grid = self.image_size // self.patch_size
    position_embedding = self.param('density_position_embedding', nn.initializers.normal(1.0),
                                    (grid, grid, d['position_embed_dim']))
    if d['stop_gradient']:
      # Only what comes from the encoder and the VAE is cut off; the head's own position embedding
      # is part of the density model and learns with it.
      tokens, class_token, latent_mean = jax.tree.map(jax.lax.stop_gradient,
                                                      (tokens, class_token, latent_mean))
    target = latent_mean if d['target'] == 'latent' else tokens
    cond = mixture.density_condition(d['condition'], tokens, class_token, position_embedding)
    log_w, means, scales = head(cond)
    return mixture.mixture_nll(target, log_w, means, scales)


def _check_choice(field: str, value: Any, choices: tuple[str, ...]):
  if value not in choices:
    raise errors.UsageError(f'{field} must be one of {", ".join(choices)}; got {value!r}')


# Sizes that must be positive ints (num_layers may be 0: a linear head).
_SIZE_FIELDS = (('model', ('patch_size', 'width', 'depth', 'num_heads', 'mlp_dim',
                           'cnn_base_features', 'latent_dim', 'decoder_base_features',
                           'decoder_min_features')),
                ('density', ('num_components', 'hidden_dim', 'position_embed_dim')))


def check_sizes(config: ml_collections.ConfigDict) -> None:
  """A zero or negative size would build a model with an empty layer, or none, without error; the
  parts' choices (encoder, decoder, density head) are checked too."""
  for section, names in _SIZE_FIELDS:
    for name in names:
      value = config[section].get(name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.UsageError(f'{section}.{name} must be a positive int, got {value!r}')
  features = config.model.get('segmenter_features')
  if isinstance(features, bool) or not isinstance(features, int) or features < 0:
    raise errors.UsageError(f'model.segmenter_features must be an int >= 0, got {features!r}')
  resolution = config.model.get('segmenter_resolution')
  _check_choice('model.segmenter_resolution', resolution, segmenter_lib.RESOLUTIONS)
  grid, size = segmenter_lib.input_multiple(resolution), config.dataset.image_size
  if features and size % grid:
    raise errors.UsageError(f'model.segmenter_features > 0 needs dataset.image_size divisible by '
                            f'{grid} (model.segmenter_resolution={resolution!r}), got {size}')
  layers = config.density.get('num_layers')
  if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
    raise errors.UsageError(f'density.num_layers must be an int >= 0, got {layers!r}')
  # The choices the parts check when the model is first traced, checked before any data is read.
  for field, choices in (('model.encoder', ('vit', 'cnn')), ('model.decoder_norm', ('batch', 'none')),
                         ('model.decoder_upsample', ('subpixel', 'nearest')),
                         ('model.decoder_output', decoder_lib.OUTPUTS),
                         ('density.target', mixture.TARGETS),
                         ('density.condition', mixture.CONDITIONS)):
    section, name = field.split('.')
    _check_choice(field, config[section].get(name), choices)
  scale = config.density.get('min_scale')
  if (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
      or scale <= 0):
    raise errors.UsageError(f'density.min_scale must be a finite number > 0, got {scale!r}')


def compute_dtype(name: str):
  """`train.compute_dtype` -> a jnp dtype ('float32' or 'bfloat16')."""
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  _check_choice('train.compute_dtype', name, tuple(dtypes))
  return dtypes[name]


def create_model(config: ml_collections.ConfigDict) -> ViVAno:
  """The model described by `config.model`, `config.density`, the dataset's image size and channels
  and `train.compute_dtype`. Every field of `config.model` is passed as is: a field ViVAno does not
  take is a TypeError here, not a setting that is quietly ignored."""
  check_sizes(config)
  return ViVAno(**config.model, density=config.density.to_dict(),
                image_size=config.dataset.image_size, image_channels=config.dataset.channels,
                dtype=compute_dtype(config.train.compute_dtype))
