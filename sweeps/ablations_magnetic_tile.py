"""Ablations on Magnetic Tile (configs/magnetic_tile_plain.py, 128 px, 600 steps), each at seeds 0,
1, 2.

The reference run (ViT, VAE, K = 10, position-conditioned, recon scores) is
configs/magnetic_tile_plain.py itself: the runs named 'seed=S'. Architecture runs (encoder, VAE vs
AE, the l2-CAE baseline = CNN encoder + deterministic AE + reconstruction scores) score by the
reconstruction error; mixture runs (K, condition) score by the paper's NLL (image: max patch NLL,
pixels: NLL map), since with density.stop_gradient=True the head's gradients reach the autoencoder
only through the shared global-norm gradient clip (which Adam's per-parameter scaling nearly
cancels).

Runs that differ from the reference only in score.* (NLL, combined, smoothing off) train exactly
as the reference does; to only rescore, copy the reference's checkpoints/ into the run's workdir
before running it (main then skips training and evaluates):

  mkdir -p "ROOT/image=nll_max,pixel=nll,seed=0" && cp -r ROOT/seed=0/checkpoints "$_"

The Magnetic Tile folder (MVTec layout) is the user's to give, here the copy next to the
repository. `sweeps/ablations_brick.py` runs the same list on textures/brick.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/ablations_magnetic_tile.py \\
      --root=runs/ablations_magnetic_tile --config.dataset.data_dir=/tmp/tfds \\
      --config.dataset.manual_dir=../shared/data/magnetic_tile
  python -m vivano_jax.sweep gather --root=runs/ablations_magnetic_tile --over=seed
"""

NLL = {'score.image': 'nll_max', 'score.pixel': 'nll'}  # The paper's scores.
SEEDS = (0, 1, 2)


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
      # Scores only (same training as the reference): see the docstring.
      {'score.image': 'combined', 'score.pixel': 'combined'},
      {'score.smoothing_sigma': 0.0},
      dict(NLL, **{'score.smoothing_sigma': 0.0}),
  ]
  # Seed 0 first, then 1, 2: run index = seed position * len(runs) + position in the list.
  runs = [dict(r, seed=seed) for seed in SEEDS for r in runs]
  return {'base_config': '../configs/magnetic_tile_plain.py', 'runs': runs}
