"""Ablations on Magnetic Tile (configs/magnetic_tile.py, 128 px, 600 steps), each at seeds 0, 1 and 2.

The reference run (ViT, VAE, K = 10, position-conditioned, recon scores) is configs/magnetic_tile.py
itself: the 'base' run. Architecture runs (encoder, VAE vs AE, the l2-CAE baseline = CNN encoder +
deterministic AE + reconstruction scores) score by the reconstruction error; mixture runs (K,
condition) score by the paper's NLL (image: max patch NLL, pixels: NLL map), since with
density.stop_gradient=True the head cannot change the reconstruction scores.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/ablations_magnetic_tile.py \\
      --root=runs/ablations_magnetic_tile --config.dataset.data_dir=/tmp/tfds
  python -m vivano_jax.sweep gather --root=runs/ablations_magnetic_tile
"""

NLL = {'score.image': 'nll_max', 'score.pixel': 'nll'}
SEEDS = (0, 1, 2)
PER_SEED = 12  # Runs per seed: run index = seed position * PER_SEED + position in the list.


def get_sweep():
  runs = [  # In order of importance within a seed.
      {},  # Reference.
      {'model.encoder': 'cnn', 'model.variational': False},  # l2-CAE.
      {'model.encoder': 'cnn'},
      {'model.variational': False},
      dict(NLL),  # Reference with the paper's scores.
      dict(NLL, **{'density.num_components': 1}),
      dict(NLL, **{'density.condition': 'none'}),
      dict(NLL, **{'density.num_components': 32}),
      dict(NLL, **{'density.condition': 'self'}),
      dict(NLL, **{'density.condition': 'class_token'}),
      dict(NLL, **{'density.num_components': 4}),
      dict(NLL, **{'density.num_components': 150}),
  ]
  assert len(runs) == PER_SEED
  runs = [dict(r, seed=seed) for seed in SEEDS for r in runs]  # Seed 0 first, then 1, 2.
  return {'base_config': '../configs/magnetic_tile.py', 'runs': runs}
