"""Digits one-class (scikit-learn's 8 x 8 handwritten digits, embedded), all 10 digits, with the
reduced MNIST model (configs/mnist.py: 32 px, patch 8, width 64, depth 2, 300 steps), image AUROC
by reconstruction error. The digit is chosen by dataset.name (the sweep runner passes no config
argument). About a minute a digit on 2 CPU cores.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/digits.py --root=runs/digits \\
      --config.dataset.data_dir=/tmp/tfds
  python -m vivano_jax.sweep gather --root=runs/digits
"""


def get_sweep():
  return {'base_config': '../configs/mnist.py',
          'grid': {'dataset.name': [f'digits/{d}' for d in range(10)]}}
