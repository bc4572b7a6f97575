#!/usr/bin/env bash
# Training on every accelerator of this machine: one process; the global batch is split over all
# local devices (jit over a 1-D mesh), so nothing here depends on the number of GPUs.
#
#   pip install -e ".[cuda12]"   # once: jax 0.10.2 with CUDA 12 (CPU only: pip install -e .)
#   launch/single_host.sh --config=configs/paper.py --workdir=runs/paper [--config.a.b=v ...]
#
# CUDA_VISIBLE_DEVICES=0,1 limits the GPUs. train.batch_size (global) must divide by their number.
# TensorFlow (input pipeline only) is kept off the GPUs by vivano_jax.input_pipeline.
# PYTHON chooses the interpreter (default: python).
set -euo pipefail
if command -v nvidia-smi > /dev/null; then
  nvidia-smi -L >&2 || true
fi
exec "${PYTHON:-python}" -m vivano_jax.main "$@"
