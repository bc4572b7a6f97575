#!/usr/bin/env bash
# One process of a multi-process (multi-host) vivano_jax run. Start it once per process, each with
# the same arguments; each runs `python -m vivano_jax.main` with the distributed flags added.
#
#   launch/multihost.sh [--coordinator_address=HOST:PORT] [--num_processes=N] [--process_id=I] \
#       --config=configs/paper.py --workdir=/shared/runs/paper [--config.a.b=v ...]
#
# Each of the three distributed settings comes from, first to last: its flag; COORDINATOR_ADDRESS,
# NUM_PROCESSES, PROCESS_ID; the scheduler (SLURM under srun: SLURM_NTASKS, SLURM_PROCID; Open MPI:
# OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK). One still unknown is left to
# jax.distributed.initialize, which finds the coordinator and process id itself on SLURM (first node
# of the step, a port made from the job id), Open MPI and Cloud TPU VMs. With one process no
# distributed flag is passed.
# The workdir must be on a filesystem every host sees (Orbax writes one checkpoint together).
# PYTHON chooses the interpreter (default: python).
set -euo pipefail

coordinator="${COORDINATOR_ADDRESS:-}"
num_processes="${NUM_PROCESSES:-${SLURM_NTASKS:-${OMPI_COMM_WORLD_SIZE:-}}}"
process_id="${PROCESS_ID:-${SLURM_PROCID:-${OMPI_COMM_WORLD_RANK:-}}}"
main_args=()
for arg in "$@"; do
  case "$arg" in
    --coordinator_address=*) coordinator="${arg#*=}" ;;
    --num_processes=*) num_processes="${arg#*=}" ;;
    --process_id=*) process_id="${arg#*=}" ;;
    --coordinator_address|--num_processes|--process_id)
      echo "multihost.sh: write $arg=VALUE (with '=')" >&2; exit 2 ;;
    *) main_args+=("$arg") ;;
  esac
done

# Under SLURM, jax.distributed.initialize gives each process only the GPU numbered SLURM_LOCALID: it
# assumes one process per GPU. With one process per node, that process must drive all of them.
tasks_per_node="${SLURM_STEP_TASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-}}"
tasks_per_node="${tasks_per_node%%(*}"  # '1(x4)' -> '1'
tasks_per_node="${tasks_per_node%%,*}"
if [[ -n "${SLURM_LOCALID:-}" && -z "${JAX_LOCAL_DEVICE_IDS:-}" && "$tasks_per_node" == 1 ]]; then
  num_gpus=0
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    IFS=, read -ra visible <<< "$CUDA_VISIBLE_DEVICES"
    num_gpus=${#visible[@]}
  elif command -v nvidia-smi > /dev/null; then
    num_gpus=$(nvidia-smi -L | grep -c '^GPU' || true)
  fi
  if (( num_gpus > 0 )); then
    JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((num_gpus - 1)))
    export JAX_LOCAL_DEVICE_IDS
  fi
fi

dist_args=()
if [[ -n "$num_processes" && "$num_processes" != 1 ]]; then
  dist_args+=("--num_processes=$num_processes")
  [[ -n "$process_id" ]] && dist_args+=("--process_id=$process_id")
  [[ -n "$coordinator" ]] && dist_args+=("--coordinator_address=$coordinator")
elif [[ -z "$num_processes" && -n "$coordinator" ]]; then
  dist_args+=("--coordinator_address=$coordinator")  # The rest found by jax (e.g. on TPU VMs).
fi

echo "multihost.sh on $(hostname): process ${process_id:-auto} of ${num_processes:-auto}," \
  "coordinator ${coordinator:-auto}" \
  "${JAX_LOCAL_DEVICE_IDS:+local devices $JAX_LOCAL_DEVICE_IDS}" >&2
exec "${PYTHON:-python}" -m vivano_jax.main ${dist_args[@]+"${dist_args[@]}"} \
  ${main_args[@]+"${main_args[@]}"}
