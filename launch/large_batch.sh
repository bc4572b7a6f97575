#!/usr/bin/env bash
# The large-batch study (sweeps/large_batch.py: batch 16 to 1024, AdamW / LAMB / LARS with their
# learning-rate rules, brick and Magnetic Tile, 3 seeds) and its throughput benchmark, ready to run.
# From the repository root, with the environment (venv) active:
#
#   launch/large_batch.sh cpu ROOT MAGNETIC_TILE_DIR [--config.a.b=v ...]
#       on this CPU, 8 simulated devices, one run after another (nice 5);
#   launch/large_batch.sh host ROOT MAGNETIC_TILE_DIR [--config.a.b=v ...]
#       on this machine's GPUs, every run on all of them (1, 2, 4, 8 or 16 GPUs: every batch and
#       microbatch of the sweep divides by 8), one run after another;
#   launch/large_batch.sh slurm ROOT MAGNETIC_TILE_DIR [--config.a.b=v ...]
#       a SLURM job array, one run per task, each task one node with GPUS_PER_NODE GPUs (default 8),
#       at most PARALLEL tasks at once (default 16); ROOT and the data on a shared filesystem;
#   launch/large_batch.sh scaling [bench_scaling.py flags]
#       images/s, step time, compute and communication on 1, 2, 4, 8 of this host's GPUs, weak
#       (64 images per GPU) and strong (global batch 512) scaling, the study's model in bfloat16;
#   launch/large_batch.sh gather ROOT
#       ROOT/results.{csv,md}, ROOT/results_over_seed.{csv,md} and ROOT/large_batch.png (image
#       AUROC and AU-PRO against the global batch, one line per optimizer and rule).
#
# DATA_DIR sets dataset.data_dir (tfds' prepared data; default: tfds' own, ~/tensorflow_datasets);
# PYTHON the interpreter (default: python). Every mode restarts where it stopped: finished runs are
# skipped, unfinished ones resume from their last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
SWEEP=sweeps/large_batch.py
export TF_CPP_MIN_LOG_LEVEL=2

usage() { sed -n '2,23p' "$0" >&2; exit 2; }
mode="${1:-}"
[[ -n "$mode" ]] || usage
shift

case "$mode" in
  scaling)
    exec "$PY" benchmarks/bench_scaling.py --platform=gpu --config=configs/magnetic_tile.py \
      --per_device_batch=64 --global_batch=512 --set=train.compute_dtype=bfloat16 --steps=10 "$@" ;;
  gather)
    [[ $# -ge 1 ]] || usage
    "$PY" -m vivano_jax.sweep gather --root="$1" --over=seed
    exec "$PY" -m vivano_jax.sweep plot --root="$1" --x=train.batch_size \
      --lines=train.optimizer,train.lr_scaling --panels=dataset.name --output="$1/large_batch.png" ;;
  cpu|host|slurm) ;;
  *) usage ;;
esac

[[ $# -ge 2 ]] || usage
root="$1" data="$2"
shift 2
args=(--sweep="$SWEEP" --root="$root" --config.dataset.manual_dir="$data"
      ${DATA_DIR:+--config.dataset.data_dir="$DATA_DIR"} "$@")

case "$mode" in
  cpu)
    XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8" JAX_PLATFORMS=cpu \
      exec nice -n 5 "$PY" -m vivano_jax.sweep run "${args[@]}" ;;
  host)
    exec "$PY" -m vivano_jax.sweep run "${args[@]}" ;;
  slurm)
    # Both datasets prepared once here, not by array tasks racing for them.
    "$PY" - "$data" "${DATA_DIR:-}" <<'EOF'
import sys
from vivano_jax import config_files, datasets
for name in ('folder', 'textures/brick'):
  config = config_files.load_config('configs/magnetic_tile.py')
  config.dataset.update(name=name, manual_dir=sys.argv[1], data_dir=sys.argv[2])
  datasets.get_builder(config.dataset)
  print(f'prepared {name}')
EOF
    n=$("$PY" -m vivano_jax.sweep run "${args[@]}" --count)
    echo "submitting $n runs of $SWEEP as a job array (ROOT $root)" >&2
    # slurm.sbatch's 'sweep' mode runs `sweep run --only=$SLURM_ARRAY_TASK_ID`; these options
    # override its #SBATCH lines (made for one multi-node run).
    exec sbatch --job-name=vivano-large-batch --nodes=1 --ntasks-per-node=1 \
      --gpus-per-node="${GPUS_PER_NODE:-8}" --time="${TIME:-04:00:00}" \
      --array="0-$((n - 1))%${PARALLEL:-16}" launch/slurm.sbatch sweep "${args[@]}" ;;
esac
