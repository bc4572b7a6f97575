"""CIFAR-10 one-class (paper Table 2), all 10 classes, reduced config (configs/cifar10.py: 32 px,
patch 8, width 64, depth 2, 300 steps, reconstruction score). The class is chosen by dataset.name
(the sweep runner passes no config argument; the same as `--config=configs/cifar10.py:<class>`).
Below it reads the local copy next to the repository; without `--config.dataset.manual_dir` it
uses the tfds catalog.

  nice -n 5 python -m vivano_jax.sweep run --sweep=sweeps/cifar10.py --root=runs/cifar10 \\
      --config.dataset.data_dir=/tmp/tfds --config.dataset.manual_dir=../shared/data/cifar10
  python -m vivano_jax.sweep gather --root=runs/cifar10
"""

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


def get_sweep():
  return {'base_config': '../configs/cifar10.py',
          'grid': {'dataset.name': [f'cifar10_one_class/{c}' for c in CLASSES]}}
