"""Every objective on the four-modes toy world, over several seeds: GRPO, GRPO-Guard, FlowRL (reward
maximisation vs reward-distribution matching), the forward-process objectives NFT, AWM, DPO and SFT
(whose known risk is a loss of diversity), and the newer ones: Flow-GRPO-Fast against MixGRPO's sliding
window (and its DPM-Solver), DGPO, and GARDO beside the plain objective it modifies.

Every run has the same base, epochs, samples per epoch and optimizer; ``config.train.objective`` (and its own
keys, config/toy.py) differ: the policy-gradient objectives train on SDE rollouts, the forward-process ones
on ODE rollouts in groups of 16. Reports the held-out mean reward and the number of modes holding at least 10%
of the samples, and writes a table and a plot:

    python scripts/compare_objectives.py [--seeds 0 1 2] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

from flow_grpo.launch import run_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [
    ("GRPO", "four_modes_grpo", []),
    ("GRPO-Guard", "four_modes_grpo_guard", []),
    ("FlowRL, tb_coef 15", "four_modes_flowrl", []),
    ("FlowRL, tb_coef 3", "four_modes_flowrl", ["--config.train.flowrl.tb_coef=3"]),
    ("FlowRL, tb_coef 1", "four_modes_flowrl", ["--config.train.flowrl.tb_coef=1"]),
    ("FlowRL, tb_coef 0.1", "four_modes_flowrl", ["--config.train.flowrl.tb_coef=0.1"]),
    ("NFT", "four_modes_nft", []),
    ("AWM", "four_modes_awm", []),
    ("DPO", "four_modes_dpo", []),
    ("SFT", "four_modes_sft", []),
    ("GRPO-Fast", "four_modes_fast", []),
    ("MixGRPO", "four_modes_mixgrpo", []),
    ("MixGRPO-Flash", "four_modes_mixgrpo", ["--config.sample.ode_solver=dpm2"]),
    ("DGPO", "four_modes_dgpo", []),
    ("GRPO, KL 0.005", "four_modes_grpo", ["--config.train.beta=0.005"]),
    ("GRPO+GARDO, KL 0.005", "four_modes_grpo_gardo", []),
    ("GRPO+GARDO without diversity", "four_modes_grpo_gardo", ["--config.train.gardo.diversity=false"]),
    ("NFT+GARDO", "four_modes_nft_gardo", []),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(REPO, "docs"))
    parser.add_argument("--logdir", default=os.path.join(REPO, "logs", "compare_objectives"))
    parser.add_argument("--reuse", action="store_true", help="keep runs that already have a summary.json in --logdir")
    args = parser.parse_args()
    results = {}
    for label, name, overrides in VARIANTS:
        for seed in args.seeds:
            run_name = f"{label.replace(' ', '_').replace(',', '')}_seed{seed}"
            argv = ["--config", os.path.join(REPO, "config", "toy.py") + f":{name}", f"--config.logdir={args.logdir}",
                    f"--config.run_name={run_name}", f"--config.seed={seed}", "--config.progress=false", *overrides]
            finished = os.path.isfile(os.path.join(args.logdir, run_name, "summary.json"))
            if not (args.reuse and finished):
                shutil.rmtree(os.path.join(args.logdir, run_name), ignore_errors=True)  # a fresh run in this folder
                if run_script("train_toy.py", argv):
                    return 1
            with open(os.path.join(args.logdir, run_name, "summary.json")) as handle:
                results.setdefault(label, []).append(json.load(handle))
    os.makedirs(args.out, exist_ok=True)
    lines = [
        "| objective | eval reward (mean +- std over seeds) | modes covered (of 4) per seed | share of samples in a mode | training s per run |",
        "|---|---|---|---|---|",
    ]
    base = results[VARIANTS[0][0]][0]
    lines.append(f"| base model | {base['eval_reward_before']:.3f} | {base['modes_covered_before']:.0f} | {base['in_mode_share_before']:.3f} | |")
    for label, runs in results.items():
        rewards = [r["eval_reward_after"] for r in runs]
        covered = [f"{r['modes_covered_after']:.0f}" for r in runs]
        inside = np.mean([r["in_mode_share_after"] for r in runs])
        seconds = np.mean([r["total_time_s"] - r["pretrain_time_s"] for r in runs])
        lines.append(f"| {label} | {np.mean(rewards):.3f} +- {np.std(rewards):.3f} | {', '.join(covered)} | {inside:.3f} | {seconds:.0f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "objectives_comparison.md"), "w") as handle:
        handle.write("# Every objective on four equally good modes\n\n")
        handle.write(f"`python scripts/compare_objectives.py --seeds {' '.join(map(str, args.seeds))}`: the four-modes toy world "
                     "(config/toy.py:four_modes_*), 60 epochs of 256 samples x 10 steps each (SDE for GRPO, GRPO-Guard, FlowRL and "
                     "GARDO's GRPO; an SDE window of 2 steps for GRPO-Fast and MixGRPO; ODE for NFT, AWM, DPO, DGPO, SFT and "
                     "GARDO's NFT), same base and optimizer; a mode is covered when it holds at least 10% of 4,096 held-out ODE "
                     "samples; training seconds exclude the base's pretraining (2 cores, with other work beside).\n\n")
        handle.write(table + "\n\n![comparison](objectives_comparison.png)\n\n![samples](objectives_samples.png)\n")
    plot(results, args, os.path.join(args.out, "objectives_comparison.png"))
    scatter(args, os.path.join(args.out, "objectives_samples.png"))
    return 0


def scatter(args, path):
    """Held-out samples after fine-tuning, first seed, one panel per objective (base first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = args.seeds[0]
    panels = []
    for label, _, _ in VARIANTS:
        run = os.path.join(args.logdir, f"{label.replace(' ', '_').replace(',', '')}_seed{seed}")
        samples = np.load(os.path.join(run, "samples", "eval_samples.npz"), allow_pickle=False)
        if not panels:
            panels.append(("base", samples["before"]))
        panels.append((label, samples["after"]))
    columns = -(-len(panels) // 2)
    fig, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 5.6), layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, points) in zip(axes.flat, panels):
        ax.scatter(points[:1024, 0], points[:1024, 1], s=1, alpha=0.5)
        for x in (-1.5, 1.5):
            for y in (-1.5, 1.5):
                ax.add_patch(plt.Circle((x, y), 0.75, fill=False, color="red", lw=0.7))
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"held-out samples after fine-tuning (seed {seed}); red: the four reward modes", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for ax, key, title in ((axes[0], "eval_reward_after", "held-out mean reward"), (axes[1], "modes_covered_after", "modes covered (>= 10% of samples)")):
        values = [[r[key] for r in results[label]] for label in labels]
        ax.bar(range(len(labels)), [np.mean(v) for v in values], yerr=[np.std(v) for v in values], color="tab:blue", alpha=0.8, capsize=3)
        for i, v in enumerate(values):
            ax.scatter([i] * len(v), v, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[1].set_ylim(0, 4.2)
    fig.suptitle(f"four-modes world, seeds {', '.join(map(str, args.seeds))}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
