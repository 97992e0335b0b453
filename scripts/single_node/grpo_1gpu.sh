#!/usr/bin/env bash
# One GPU: the _1gpu experiments keep the 32-GPU group count per epoch with more batches per epoch.
NUM_GPUS=1 exec "$(dirname "$0")/grpo.sh" "${1:-config/grpo.py:geneval_sd3_1gpu}" "${@:2}"
