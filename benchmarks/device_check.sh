#!/usr/bin/env bash
# One accelerator check in at most 8 minutes, every figure printed (not a test):
#   1. install the CUDA extra (skipped when it cannot be reached; the installed jax is used then);
#   2. print the devices;
#   3. `vivano benchmark` of the paper's model at 512 px in float32 and bfloat16: batch 16, then
#      doubling while it fits (the last batch that runs is the largest that fits);
#   4. train configs/default.py for 200 steps and print its summary (needs TensorFlow and tfds for
#      the input pipeline; said and skipped when they are missing).
#
#   benchmarks/device_check.sh            on the machine with the accelerator
#   benchmarks/device_check.sh --dry-run  on a CPU (JAX_PLATFORMS=cpu): the same steps at 64 px,
#                                         batches 8 and 16, 2 timed steps, 4 training steps
#
# Each step has its own time limit, so a hang in one still leaves the others' figures. OUT (default
# a temporary folder) receives the benchmark JSON files and the training workdir.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if (( DRY )); then
  export JAX_PLATFORMS=cpu
  SIZE=64; STEPS=2; TRAIN_STEPS=4; BATCHES=(8 16)
else
  SIZE=512; STEPS=10; TRAIN_STEPS=200; BATCHES=(16 32 64 128 256 512)
fi

section() { echo; echo "== [${SECONDS}s] $*"; }

section "install the CUDA extra"
if (( DRY )); then
  echo "dry run: skipped"
else
  timeout 150 "$PY" -m pip install -q -e ".[cuda12]" \
    || echo "could not install the cuda12 extra (no registry?): using the installed jax"
fi

section "devices"
timeout 60 "$PY" -c 'import jax; print("jax", jax.__version__, "backend", jax.default_backend()); print(jax.devices())'

for dtype in float32 bfloat16; do
  for batch in "${BATCHES[@]}"; do
    section "benchmark: paper model, ${SIZE} px, batch ${batch}, ${dtype}"
    if ! timeout 90 "$PY" -m vivano_jax.benchmark --config=configs/paper.py --sizes="${SIZE}" \
        --steps="${STEPS}" --warmup=2 --config.train.batch_size="${batch}" \
        --config.train.eval_batch_size="${batch}" --config.train.compute_dtype="${dtype}" \
        --output="${OUT}/bench_${dtype}_${batch}.json"; then
      echo "batch ${batch} did not run (out of memory or time): the largest that fits in ${dtype} is the one before"
      break
    fi
  done
done

section "train configs/default.py for ${TRAIN_STEPS} steps"
if timeout 30 "$PY" -c 'import tensorflow, tensorflow_datasets' 2>/dev/null; then
  timeout 240 "$PY" -m vivano_jax.main --config=configs/default.py --workdir="${OUT}/default" \
    --config.dataset.data_dir="${OUT}/tfds" --config.train.num_steps="${TRAIN_STEPS}" \
    --config.export.at_end=False
else
  echo "skipped: TensorFlow / tfds (the input pipeline) are not installed here"
fi

section "done; outputs in ${OUT}"
