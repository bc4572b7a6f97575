"""MNIST one-class (paper Section 4.2, Table 1), reduced for a 2-core CPU (about 1-2 minutes a
digit).

Select the normal digit with the config argument: `--config=configs/mnist.py:3` (default 0). Trained
on that digit's training images; tested on all 10,000 test digits, the other 9 digits anomalous.

Differs from `configs/mnist_paper.py` (the paper's recipe), to fit 2 CPU cores:
  * 32 px, 1 channel instead of upscaling to 512 px, 3 channels (upscaling adds no information; at
    512 px one run would take hours here);
  * patch 8 (a 4 x 4 patch grid) instead of 64 (8 x 8), ViT width 64 instead of 512, depth 2 instead
    of 6, 4 heads instead of 8, MLP 128 instead of 1024, latent 16, decoder 32 channels;
  * 300 steps of batch 32 (about 1.6 epochs) at learning rate 1e-3 with warmup and cosine decay,
    instead of 200 epochs of batch 16 at 1e-5;
  * same image score as the paper variant: reconstruction error (Section 4.4).
No augmentation (a flipped or rotated digit can be another digit).

Data: `dataset.manual_dir` empty = the tfds catalog `mnist`; for the local copies next to the
repository pass `--config.dataset.manual_dir=../shared/data/mnist` (whose training images are an
approximate copy).
"""

from vivano_jax import config_defaults
from vivano_jax.datasets.one_class import mnist_digit


def get_config(arg=None):
  config = config_defaults.small_32px_config()
  config.dataset.name = f'mnist_one_class/{mnist_digit(arg)}'
  config.dataset.channels = 1
  return config
