"""The toy demo: Flow-GRPO on the three toy worlds, then a before/after table.

    python scripts/toy_demo.py [--logdir logs/toy_demo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from flow_grpo.launch import run_script
from flow_grpo.runlog import unique_run_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = [
    ("line_shapes", ["right_shape_share"]),
    ("moons_unlearn", ["lower_moon_share", "off_moon_share"]),
    ("moons_fidelity", ["mean_arc_distance", "off_moon_share"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default=os.path.join(REPO, "logs", "toy_demo"))
    args = parser.parse_args()
    lines = []
    for name, extra in EXPERIMENTS:
        started = time.time()
        print(f"\n=== {name} ===")
        run_dir = unique_run_dir(args.logdir, name)  # a folder that holds no run yet: the trainer takes it as is
        code = run_script("train_toy.py", ["--config", os.path.join(REPO, "config", "toy.py") + f":{name}",
                                           f"--config.logdir={args.logdir}", f"--config.run_name={os.path.basename(run_dir)}"])
        if code:
            return code
        with open(os.path.join(run_dir, "summary.json")) as handle:
            summary = json.load(handle)
        cells = [
            f"{summary['eval_reward_before']:.3f} -> {summary['eval_reward_after']:.3f}",
            "; ".join(f"{key} {summary[key + '_before']:.3f} -> {summary[key + '_after']:.3f}" for key in extra),
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {time.time() - started:.0f} s | {os.path.basename(run_dir)} |")
    print("\n| experiment | held-out eval reward | world metrics | wall-clock | run folder |")
    print("|---|---|---|---|---|")
    for line in lines:
        print(line)
    print(f"\nplots: {args.logdir}/<run>/plots/ (curves, advantages, samples before vs after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
