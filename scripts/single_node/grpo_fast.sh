#!/usr/bin/env bash
# Flow-GRPO-Fast (CPS window of 3 in the first 5 steps, no CFG) on one node; same environment as grpo.sh.
exec "$(dirname "$0")/grpo.sh" "${1:-config/grpo.py:geneval_sd3_fast_nocfg}" "${@:2}"
