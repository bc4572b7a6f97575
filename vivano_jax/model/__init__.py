"""The ViV-Ano model, one file per part, in the order data flows through it.

x [B, H, W, C] in [-1, 1]
  -> encoder tokens [B, h, w, D] and a class token [B, D]              (encoder.py)
  -> per-patch posterior, latent grid z [B, h, w, d_z], KL [B, h, w]  (bottleneck.py)
  -> reconstruction [B, H, W, C] in [-1, 1]                            (decoder.py)
  -> per-patch mixture NLL of the patch code [B, h, w]                 (mixture.py)
vivano.py joins the parts into one Flax module built from the config; losses.py is the training
objective over its outputs.

Callers need only `create_model(config)`, re-exported here with the module, the dtype helper and
`check_sizes(config)` (the sizes' checks create_model runs, for a config not yet built).
"""

from vivano_jax.model.vivano import check_sizes
from vivano_jax.model.vivano import compute_dtype
from vivano_jax.model.vivano import create_model
from vivano_jax.model.vivano import ViVAno

__all__ = ['ViVAno', 'check_sizes', 'compute_dtype', 'create_model']
