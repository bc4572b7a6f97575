"""The recipe study: configs/magnetic_tile_plain.py's recipe (config_defaults.plain_128px_config
says what it is), the same trained with synthetic anomalies, and the l2-CAE baseline, on Magnetic
Tile and the three embedded textures, at seeds 0, 1 and 2.

  recipe     configs/magnetic_tile_plain.py as it is (train.synthetic_anomalies=0, written out);
             rescored with the reconstruction error alone (the previous default) it is the
             reference: copy its checkpoints/ into a new workdir and run main there with
             --config.score.image=recon --config.score.pixel=recon --config.score.normalize=global
             (main then skips training and evaluates);
  synthetic  trained with synthetic anomalies on half of the inputs, scored the same;
  l2-CAE     the baseline of the paper's Tables 1-2: CNN encoder, deterministic AE, reconstruction
             scores (Magnetic Tile only).

Runs are listed seed 0 first, Magnetic Tile first, so a partial sweep still gives every dataset at
one seed. Two runs at a time fit a 2-core machine (`--print_commands | xargs -P 2`). The Magnetic
Tile folder (MVTec layout) is the user's to give, here the copy next to the repository; the textures
runs set dataset.manual_dir empty themselves, so the folder reaches only the Magnetic Tile runs.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/recipe.py --root=runs/recipe \\
      --config.dataset.data_dir=/tmp/tfds --config.dataset.manual_dir=../shared/data/magnetic_tile
  python -m vivano_jax.sweep gather --root=runs/recipe --over=seed
"""

SEEDS = (0, 1, 2)
DATASETS = ('folder', 'textures/brick', 'textures/grass', 'textures/gravel')
RECIPE = {'train.synthetic_anomalies': 0.0}
SYNTHETIC = {'train.synthetic_anomalies': 0.5}
RECON = {'score.image': 'recon', 'score.pixel': 'recon', 'score.normalize': 'global'}
L2_CAE = dict(RECIPE, **RECON, **{'model.encoder': 'cnn', 'model.variational': False})


def dataset_fields(name: str) -> dict[str, str]:
  """A run's dataset fields: an embedded texture also gets an empty dataset.manual_dir, so that
  the Magnetic Tile folder given on the command line stays with the 'folder' runs (a run's own
  values win over the command line's)."""
  return {'dataset.name': name} | ({} if name == 'folder' else {'dataset.manual_dir': ''})


def get_sweep():
  runs = []
  for seed in SEEDS:
    for name in DATASETS:
      data = dict(dataset_fields(name), seed=seed)
      runs += [dict(data, **SYNTHETIC), dict(data, **RECIPE)]
      if name == 'folder':
        runs.append(dict(data, **L2_CAE))
  return {'base_config': '../configs/magnetic_tile_plain.py', 'runs': runs}
