"""The toy demo: Flow-GRPO on the three toy worlds, then a before/after table.

    python scripts/toy_demo.py [--logdir logs/toy_demo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_toy  # noqa: E402

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
        code = train_toy.main(["--config", os.path.join(REPO, "config", "toy.py") + f":{name}", f"--config.logdir={args.logdir}"])
        if code:
            return code
        run_dirs = sorted(
            (d for d in os.listdir(args.logdir) if d == name or d.startswith(name + "_2")),
            key=lambda d: os.path.getmtime(os.path.join(args.logdir, d)),
        )
        with open(os.path.join(args.logdir, run_dirs[-1], "summary.json")) as handle:
            summary = json.load(handle)
        cells = [
            f"{summary['eval_reward_before']:.3f} -> {summary['eval_reward_after']:.3f}",
            "; ".join(f"{key} {summary[key + '_before']:.3f} -> {summary[key + '_after']:.3f}" for key in extra),
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {time.time() - started:.0f} s | {run_dirs[-1]} |")
    print("\n| experiment | held-out eval reward | world metrics | wall-clock | run folder |")
    print("|---|---|---|---|---|")
    for line in lines:
        print(line)
    print(f"\nplots: {args.logdir}/<run>/plots/ (curves, advantages, samples before vs after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
