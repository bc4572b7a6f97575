"""ViV-Ano: ViT encoder -> VAE over patch tokens -> conv decoder, plus a mixture density head.

x [B, H, W, C] in [-1, 1]
  -> encoder tokens [B, h, w, D] and a class token [B, D]              (encoder.py)
  -> per-patch posterior, latent grid z [B, h, w, d_z], KL [B, h, w]  (bottleneck.py)
  -> reconstruction [B, H, W, C] in [-1, 1]                            (decoder.py)
  -> per-patch mixture NLL of the patch code [B, h, w]                 (mixture.py)
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vivano_jax.model import bottleneck
from vivano_jax.model import decoder as decoder_lib
from vivano_jax.model import encoder as encoder_lib
from vivano_jax.model import mixture

Array = jax.Array


class ViVAno(nn.Module):
  """The full model. Every size comes from the config (see `create_model`)."""
  image_channels: int
  image_size: int = 128
  encoder_kind: str = 'vit'
  patch_size: int = 16
  width: int = 192
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 384
  cnn_base_features: int = 32
  latent_dim: int = 32
  variational: bool = True
  decoder_features: Sequence[int] = (64, 32, 16, 8)
  decoder_norm: str = 'batch'
  num_components: int = 10
  density_hidden: int = 128
  density_layers: int = 2
  density_condition: str = 'position'
  density_target: str = 'latent'
  density_stop_gradient: bool = True
  density_min_scale: float = 1e-3
  position_embed_dim: int = 64
  remat: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    if self.density_target not in mixture.TARGETS:
      raise ValueError(f'density.target must be one of {mixture.TARGETS}, got {self.density_target!r}')
    if self.density_condition not in mixture.CONDITIONS:
      raise ValueError(
          f'density.condition must be one of {mixture.CONDITIONS}, got {self.density_condition!r}')
    self.encoder = encoder_lib.make_encoder(
        self.encoder_kind, patch_size=self.patch_size, width=self.width, depth=self.depth,
        num_heads=self.num_heads, mlp_dim=self.mlp_dim, remat=self.remat,
        cnn_base_features=self.cnn_base_features, dtype=self.dtype)
    self.bottleneck = bottleneck.VAEBottleneck(self.latent_dim, self.variational)
    self.decoder = decoder_lib.ConvDecoder(tuple(self.decoder_features), self.image_channels,
                                           norm=self.decoder_norm, dtype=self.dtype)
    target_dim = self.latent_dim if self.density_target == 'latent' else self.width
    self.density = mixture.MixtureDensityHead(self.num_components, target_dim, self.density_hidden,
                                              self.density_layers, self.density_min_scale)
    grid = self.image_size // self.patch_size
    self.density_position_embedding = self.param(
        'density_position_embedding', nn.initializers.normal(1.0), (grid, grid, self.position_embed_dim))

  def __call__(self, x: Array, train: bool = False, decode: bool = True) -> dict[str, Array]:
    """x: [B, H, W, C] in [-1, 1].

    Returns a dict of float32 arrays:
      recon [B, H, W, C] (only when decode), z / mean / logvar [B, h, w, d_z], kl [B, h, w] (nats),
      nll [B, h, w] (nats, the mixture NLL of each patch's code).
    With decode=False the decoder is skipped: scoring by the NLL alone needs no reconstruction.
    """
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'input is {x.shape[1]}x{x.shape[2]}, the model expects dataset.image_size='
                       f'{self.image_size}')
    if x.shape[-1] != self.image_channels:
      raise ValueError(f'input has {x.shape[-1]} channels, the model expects dataset.channels='
                       f'{self.image_channels}')
    tokens, class_token = self.encoder(x.astype(self.dtype), train=train)
    post = self.bottleneck(tokens, train=train)
    out = dict(post)
    if decode:
      out['recon'] = self.decoder(post['z'], train=train)
    out['nll'] = self.patch_nll(tokens.astype(jnp.float32), class_token.astype(jnp.float32),
                                post['mean'])
    return out

  def patch_nll(self, tokens: Array, class_token: Array, latent_mean: Array) -> Array:
    """Mixture NLL of every patch's code: [B, h, w]."""
    if self.density_stop_gradient:
      # Only what comes from the encoder and the VAE is cut off; the head's own position embedding
      # is part of the density model and learns with it.
      tokens, class_token, latent_mean = jax.tree.map(jax.lax.stop_gradient,
                                                      (tokens, class_token, latent_mean))
    target = latent_mean if self.density_target == 'latent' else tokens
    cond = mixture.density_condition(self.density_condition, tokens, class_token,
                                     self.density_position_embedding)
    log_w, means, scales = self.density(cond)
    return mixture.mixture_nll(target, log_w, means, scales)


def compute_dtype(name: str):
  """`train.compute_dtype` -> a jnp dtype ('float32' or 'bfloat16')."""
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  if name not in dtypes:
    raise ValueError(f'train.compute_dtype must be one of {sorted(dtypes)}, got {name!r}')
  return dtypes[name]


def create_model(config: ml_collections.ConfigDict) -> ViVAno:
  """The model described by `config.model`, `config.density` and `config.dataset.channels`."""
  m, d = config.model, config.density
  return ViVAno(
      image_channels=config.dataset.channels,
      image_size=config.dataset.image_size,
      encoder_kind=m.encoder,
      patch_size=m.patch_size,
      width=m.width,
      depth=m.depth,
      num_heads=m.num_heads,
      mlp_dim=m.mlp_dim,
      cnn_base_features=m.cnn_base_features,
      latent_dim=m.latent_dim,
      variational=m.variational,
      decoder_features=decoder_lib.decoder_features(m.patch_size, m.decoder_base_features,
                                                    m.decoder_min_features),
      decoder_norm=m.decoder_norm,
      num_components=d.num_components,
      density_hidden=d.hidden_dim,
      density_layers=d.num_layers,
      density_condition=d.condition,
      density_target=d.target,
      density_stop_gradient=d.stop_gradient,
      density_min_scale=d.min_scale,
      position_embed_dim=d.position_embed_dim,
      remat=m.remat,
      dtype=compute_dtype(config.train.compute_dtype),
  )
