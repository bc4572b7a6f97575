"""ViV-Ano: Vision Transformer + VAE + Gaussian mixture density anomaly detection in JAX/Flax."""

__version__ = "0.1.0"
