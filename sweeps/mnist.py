"""MNIST one-class (paper Table 1), all 10 digits, reduced config (configs/mnist.py: 32 px, patch 8,
width 64, depth 2, 300 steps, reconstruction score). The digit is chosen by dataset.name (the sweep
runner passes no config argument; the same as `--config=configs/mnist.py:<digit>`). Below it reads
the local copy next to the repository (approximate training images, see its README); without
`--config.dataset.manual_dir` it uses the tfds catalog.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/mnist.py --root=runs/mnist \\
      --config.dataset.data_dir=/tmp/tfds --config.dataset.manual_dir=../shared/data/mnist
  python -m vivano_jax.sweep gather --root=runs/mnist
"""


def get_sweep():
  return {'base_config': '../configs/mnist.py',
          'grid': {'dataset.name': [f'mnist_one_class/{d}' for d in range(10)]}}
