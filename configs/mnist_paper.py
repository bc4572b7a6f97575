"""MNIST one-class (paper Section 4.2, Table 1) with the paper's recipe: one digit is normal,
trained on its training images; the test set is all 10,000 test digits, the other 9 digits
anomalous.

Select the normal digit with the config argument: `--config=configs/mnist_paper.py:3` (default 0).
As in Section 4.2 the 28 x 28 digits are upscaled to 512 x 512 and replicated to 3 channels; model
and training as Section 4.1: patch 64, ViT width 512, depth 6, 8 heads, MLP 1024, batch 16, learning
rate 1e-5, 200 epochs; image score = reconstruction error (Section 4.4: on MNIST and CIFAR-10
the paper detects 'using only the reconstruction loss'). No augmentation (the paper describes
none, and a flipped or rotated digit can be another digit). Hours per digit on a GPU, not for a CPU:
`configs/mnist.py` is the reduced variant. `configs/cifar10_paper.py` is this config with a CIFAR-10
class in place of the digit.

Data: `dataset.manual_dir` empty = the tfds catalog `mnist` (downloaded and prepared by tfds); for
the local copies next to the repository pass `--config.dataset.manual_dir=../shared/data/mnist`
(local copies, data README).
"""

from vivano_jax import config_defaults
from vivano_jax.datasets.one_class import mnist_digit


def get_config(arg=None):
  config = config_defaults.paper_config()
  config.dataset.name = f'mnist_one_class/{mnist_digit(arg)}'
  # Section 4.4: on MNIST and CIFAR-10 'anomaly detection was performed using only the
  # reconstruction loss, without determining the anomaly location' (the NLL is for MVTec AD).
  config.score.image = 'recon'
  config.score.pixel = 'recon'
  return config
