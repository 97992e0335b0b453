#!/usr/bin/env bash
# Flow-GRPO-Fast on several nodes; same environment as grpo.sh.
exec "$(dirname "$0")/grpo.sh" "${1:-config/grpo.py:geneval_sd3_fast_nocfg}" "${@:2}"
