#!/usr/bin/env bash
# Flow-GRPO on several nodes. Run the same command on every node, with from the environment:
#   MASTER_ADDR   address of node 0 (reachable from every node)      - required
#   MASTER_PORT   a free port on node 0                               - default 29500
#   NODE_RANK     this node's index, 0 .. NUM_NODES - 1               - required
#   NUM_NODES     number of nodes                                     - required
#   GPUS_PER_NODE processes per node                                  - default: GPUs visible here
# Usage: bash scripts/multi_node/grpo.sh [CONFIG] [--config.key=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG="${1:-config/grpo.py:geneval_sd3}"
shift || true
fail() { echo "multi_node/grpo.sh: $*" >&2; exit 2; }
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
[ -n "${MASTER_ADDR:-}" ] || fail "set MASTER_ADDR to the address of node 0"
[ -n "${NODE_RANK:-}" ] || fail "set NODE_RANK to this node's index (0 on the master)"
[ -n "${NUM_NODES:-}" ] || fail "set NUM_NODES to the number of nodes"
MASTER_PORT="${MASTER_PORT:-29500}"
for name in NODE_RANK NUM_NODES MASTER_PORT; do
    is_int "${!name}" || fail "$name must be a non-negative integer, got '${!name}'"
done
GPUS_PER_NODE="${GPUS_PER_NODE:-$(python -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)}"
is_int "$GPUS_PER_NODE" || fail "GPUS_PER_NODE must be a non-negative integer, got '$GPUS_PER_NODE'"
[ "$NUM_NODES" -ge 1 ] || fail "NUM_NODES must be at least 1"
[ "$NODE_RANK" -lt "$NUM_NODES" ] || fail "NODE_RANK ($NODE_RANK) must be smaller than NUM_NODES ($NUM_NODES)"
[ "$GPUS_PER_NODE" -ge 1 ] || fail "no GPU visible on this node (GPUS_PER_NODE=$GPUS_PER_NODE)"
echo "node $NODE_RANK/$NUM_NODES, $GPUS_PER_NODE processes, master $MASTER_ADDR:$MASTER_PORT, $CONFIG"
exec accelerate launch --config_file "${ACCELERATE_CONFIG:-scripts/accelerate_configs/multi_node.yaml}" \
    --num_machines "$NUM_NODES" --num_processes $((NUM_NODES * GPUS_PER_NODE)) --machine_rank "$NODE_RANK" \
    --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
    scripts/train.py --config "$CONFIG" "$@"
