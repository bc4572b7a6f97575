"""The large-batch study: global batch 16 to 1024 on a fixed budget of 20 epochs, each batch with a
learning-rate scaling rule and an optimizer, on textures/brick and Magnetic Tile with the recipe
configs/magnetic_tile_plain.py (128 px, patch 16, width 128, depth 3), at seeds 0, 1 and 2.

Methods (optimizer, train.lr_scaling, learning rate at the base batch 16):
  adamw none    1e-3   the recipe's rate at every batch: the baseline;
  adamw sqrt    1e-3   lr * sqrt(B / 16): the gradient-noise rule for Adam-type updates;
  adamw linear  1e-3   lr * B / 16 (Goyal et al. 2017);
  lamb  sqrt    1e-2   layer-wise trust ratio over Adam directions (You et al. 2020);
  lars  linear  0.1    layer-wise trust ratio over momentum SGD (You et al. 2017), trust
                       coefficient 0.1: the two layer-wise rates move a kernel by 1 % of its norm
                       a step at batch 16. They are starting points measured on nothing but a
                       200-step tiny-config probe (the loss falls at least as fast as AdamW's at
                       1e-3); the sweep measures them, it did not tune them.
The warmup (the recipe's 50 steps at batch 16) follows the rule: ceil(50 * 16 / B) steps, the same
number of images (optimizer.scaled_hyperparameters). At batch 16 every rule is the identity, so
AdamW runs there once ('none'). Every run's config.json records the rate and warmup it trained
with ('effective'), and `gather` shows them as columns.

The budget is 20 epochs (train.num_epochs; steps = 20 * ceil(train images / B)): about 860 steps of
16 on Magnetic Tile (685 train images after the 10 % held out), 460 on brick (360); at B = 1024,
20 steps. A batch larger than the training set repeats images within the batch, so there the
budget is more than 20 epochs of images. Batches above 256 are accumulated (train.grad_accum_steps
= B / 256: microbatches of 256, 32 per device), which bounds activation memory on GPUs (on a CPU
the microbatches are unrolled: same speed as one batch, not less memory); BatchNorm statistics
are then per microbatch.

sweeps/large_batch_segmenter.py is the same study on the segmenter recipe
(configs/magnetic_tile.py).

The runs are meant for 8 devices (every batch and microbatch divides by 8): on a CPU, simulate them
with XLA_FLAGS (the runs inherit it); on a GPU host, the runs use all its GPUs
(launch/large_batch.sh has both, and the SLURM job array). Runs are listed seed 0 first, then
Magnetic Tile before brick, method by method, batch by batch: 33 runs per dataset and seed, 198 in
all, each training on about the same number of images. On 2 CPU cores that is about a day (a
brick run of batch 16-256 takes 2.5-5 minutes); time a batch first with
benchmarks/bench_scaling.py, and start with seed 0 (runs 0 to 65: `--only`, or stop the sweep
after run 65; it restarts where it stopped). The Magnetic Tile folder is the user's to give; it
reaches the brick runs too, which do not read it.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 nice -n 5 python -m vivano_jax.sweep run \\
      --sweep=sweeps/large_batch.py --root=runs/large_batch --config.dataset.data_dir=/tmp/tfds \\
      --config.dataset.manual_dir=../shared/data/magnetic_tile
  python -m vivano_jax.sweep gather --root=runs/large_batch --over=seed
  python -m vivano_jax.sweep plot --root=runs/large_batch --x=train.batch_size \\
      --lines=train.optimizer,train.lr_scaling --panels=dataset.name --output=large_batch.png
"""

SEEDS = (0, 1, 2)
DATASETS = ('folder', 'textures/brick')
BATCHES = (16, 32, 64, 128, 256, 512, 1024)
BASE_BATCH = 16  # configs/magnetic_tile_plain.py's batch: its rate and warmup are given at it.
EPOCHS = 20
MAX_MICROBATCH = 256  # Larger global batches are accumulated in microbatches of this size.
METHODS = (  # (train.optimizer, train.lr_scaling, train.learning_rate at BASE_BATCH).
    ('adamw', 'none', 1e-3),
    ('adamw', 'sqrt', 1e-3),
    ('adamw', 'linear', 1e-3),
    ('lamb', 'sqrt', 1e-2),
    ('lars', 'linear', 0.1),
)
FIXED = {
    'train.base_batch_size': BASE_BATCH,
    'train.num_steps': 0,  # The budget is in epochs.
    'train.num_epochs': EPOCHS,
    'train.trust_coefficient': 0.1,  # LARS only; the other runs record it unused.
}


def grad_accum_steps(batch_size: int) -> int:
  return max(1, batch_size // MAX_MICROBATCH)


def get_sweep():
  runs = []
  for seed in SEEDS:
    for name in DATASETS:
      for optimizer, rule, lr in METHODS:
        for batch in BATCHES:
          if batch == BASE_BATCH and rule != 'none' and optimizer == 'adamw':
            continue  # The same run as AdamW 'none' at the base batch.
          runs.append({'dataset.name': name, 'train.optimizer': optimizer,
                       'train.lr_scaling': rule, 'train.learning_rate': lr,
                       'train.batch_size': batch, 'train.grad_accum_steps': grad_accum_steps(batch),
                       'seed': seed})
  return {'base_config': '../configs/magnetic_tile_plain.py', 'runs': runs, 'fixed': dict(FIXED)}
