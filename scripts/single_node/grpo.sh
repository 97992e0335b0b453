#!/usr/bin/env bash
# Flow-GRPO (any family, any objective) on one node. Usage:
#   bash scripts/single_node/grpo.sh [CONFIG] [extra --config.key=value ...]
# CONFIG defaults to config/grpo.py:geneval_sd3; NUM_GPUS (default: all visible) and
# ACCELERATE_CONFIG (default: scripts/accelerate_configs/multi_gpu.yaml) come from the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG="${1:-config/grpo.py:geneval_sd3}"
shift || true
NUM_GPUS="${NUM_GPUS:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)}"
ACCELERATE_CONFIG="${ACCELERATE_CONFIG:-scripts/accelerate_configs/multi_gpu.yaml}"
if ! [[ "$NUM_GPUS" =~ ^[0-9]+$ ]] || [ "$NUM_GPUS" -lt 1 ]; then
    echo "NUM_GPUS must be a positive integer, got '$NUM_GPUS'" >&2; exit 2
fi
if [ "$NUM_GPUS" -eq 1 ]; then ACCELERATE_CONFIG=""; fi
exec accelerate launch ${ACCELERATE_CONFIG:+--config_file "$ACCELERATE_CONFIG"} --num_processes "$NUM_GPUS" \
    --main_process_port "${MAIN_PROCESS_PORT:-29501}" \
    scripts/train.py --config "$CONFIG" "$@"
