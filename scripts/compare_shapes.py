"""Every objective on the shapes world at equal training time: held-out GenEval accuracy against training
minutes and against sampled images, the reward-hacking checks, several seeds where it matters.

    python scripts/compare_shapes.py                                   # all eleven (NFT, AWM, GRPO x 3 seeds), 12 min each, ~2.5 h on 2 cores
    python scripts/compare_shapes.py --objectives NFT GRPO --minutes 5 --seeds 0

Each run is ``scripts/train.py`` on a ``config/shapes.py`` experiment with ``config.max_minutes`` of
training (epochs, without its evaluations), one process on one core, ``--parallel`` runs side by side. The
trainer evaluates every ``eval_freq`` epochs (``--eval-images`` ODE images per held-out prompt, the EMA
weights); the curves are those evaluations, averaged over GenEval's six tags. After training, the last
checkpoint is scored once more with ``--final-images`` per prompt and the hacking checks of
``flow_grpo.shapes.evaluation`` (detector confidence, noise share, objects per image, layout spread, velocity
norm). Writes ``shapes_comparison.md`` and ``shapes_comparison.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from flow_grpo.launch import run_script  # noqa: E402
from flow_grpo.shapes.evaluation import HACKING_CHECKS, trainer_eval_curve  # noqa: E402

EXPERIMENTS = {"GRPO": "shapes_grpo", "GRPO-CFG1": "shapes_grpo_cfg1", "GRPO-Fast": "shapes_fast", "NFT": "shapes_nft", "AWM": "shapes_awm",
               "DPO": "shapes_dpo", "SFT": "shapes_sft", "GRPO-lr1e-3": "shapes_grpo_lr1e3", "MixGRPO": "shapes_mixgrpo",
               "DGPO": "shapes_dgpo", "GRPO+GARDO": "shapes_grpo_gardo", "NFT+GARDO": "shapes_nft_gardo"}
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
CHECKS = tuple(key for key, _ in HACKING_CHECKS)


def run_name(label: str, seed: int) -> str:
    return f"{label}_seed{seed}"


def train(label: str, seed: int, args) -> int:
    """One training run in ``<logdir>/<label>_seed<seed>`` (reused when ``--reuse`` and it finished)."""
    name = run_name(label, seed)
    if args.reuse and os.path.isfile(os.path.join(args.logdir, name, "summary.json")):
        return 0
    shutil.rmtree(os.path.join(args.logdir, name), ignore_errors=True)  # a fresh run in this folder
    argv = ["--config", os.path.join(REPO, "config", "shapes.py") + f":{EXPERIMENTS[label]}", f"--config.logdir={args.logdir}",
            f"--config.run_name={name}", f"--config.seed={seed}", f"--config.max_minutes={args.minutes}",
            "--config.num_epochs=100000", f"--config.sample.eval_images_per_prompt={args.eval_images}",
            "--config.save_freq=100000", "--config.num_checkpoint_limit=1", "--config.progress=false", *shlex.split(args.extra)]
    with open(os.path.join(args.logdir, f"{name}.log"), "w") as log:
        print(f"  training {name} ({args.minutes:g} min)", flush=True)
        code = run_script("train.py", argv, threads=args.threads, stdout=log)
    if code:
        print(f"error: {name} failed (exit {code}); its output is in {args.logdir}/{name}.log", file=sys.stderr)
    return code


def final_report(label: str, seed: int, backbone, test, args) -> dict:
    from flow_grpo.checkpoint import resolve_resume
    from flow_grpo.config_cli import parse_args
    from flow_grpo.backbones.trainable import load_trained_weights
    from flow_grpo.shapes.evaluation import held_out_report

    run_dir = os.path.join(args.logdir, run_name(label, seed))
    cached = os.path.join(run_dir, "final_report.json")
    if args.reuse and os.path.isfile(cached):
        with open(cached) as handle:
            return json.load(handle)
    config = parse_args(["--config", os.path.join(REPO, "config", "shapes.py") + f":{EXPERIMENTS[label]}", f"--config.seed={seed}",
                         *shlex.split(args.extra)])
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    config.seed = 42  # the held-out images of every run (and the base) from the same noise
    load_trained_weights(backbone.pipeline, resolve_resume("latest", os.path.join(run_dir, "checkpoints")))
    report, _, _ = held_out_report(backbone, test, args.final_images, config)
    report["guidance"] = config.sample.eval_guidance_scale
    images_per_epoch = config.sample.train_batch_size * config.sample.num_batches_per_epoch
    report.update(train_minutes=summary["train_seconds"] / 60, epochs_trained=summary["epochs"], optimizer_steps=summary["global_step"],
                  images_sampled=summary["epochs"] * images_per_epoch, images_per_epoch=images_per_epoch, **trainer_eval_curve(run_dir))
    with open(cached, "w") as handle:
        json.dump(report, handle)
    return report


def table(bases: dict[str, dict], results: dict[str, list[dict]]) -> str:
    """Per objective (seed means): accuracy by tag, run sizes, the hacking checks, and the checks that moved past
    their tolerance against the base of the same guidance (``hacking_flags``; reports cached before a check
    existed show nan for it)."""
    from flow_grpo.shapes.evaluation import hacking_flags

    lines = ["| objective | CFG | seeds | held-out overall | " + " | ".join(TAGS) + " | epochs | images | optimizer steps | "
             + " | ".join(label for _, label in HACKING_CHECKS) + " | checks moved vs base |",
             "|---" * (4 + len(TAGS) + 3 + len(CHECKS) + 1) + "|"]  # name, CFG, seeds, overall; tags; sizes; checks; moved
    base_at = {base["guidance"]: base for base in bases.values()}

    def row(name, runs, seeds):
        overall = [r["overall"] for r in runs]
        spread = f" +- {np.std(overall):.3f}" if len(runs) > 1 else ""
        tags = " | ".join(f"{np.mean([r['by_tag'][t] for r in runs]):.3f}" for t in TAGS)
        sizes = " | ".join(f"{np.mean([r.get(k, 0) for r in runs]):.0f}" for k in ("epochs_trained", "images_sampled", "optimizer_steps"))
        means = {k: float(np.mean([r.get(k, np.nan) for r in runs])) for k in CHECKS}
        checks = " | ".join(f"{means[k]:.3f}" for k in CHECKS)
        base = base_at.get(runs[0]["guidance"])
        moved = "-" if base is None or base is runs[0] else "; ".join(f.split(":")[0] for f in hacking_flags(base, means)) or "none"
        return f"| {name} | {runs[0]['guidance']:g} | {seeds} | **{np.mean(overall):.3f}**{spread} | {tags} | {sizes} | {checks} | {moved} |"

    for name, base in bases.items():
        lines.append(row(name, [base], "-"))
    for label, runs in results.items():
        lines.append(row(label, runs, len(runs)))
    return "\n".join(lines)


def plot(bases: dict[str, dict], results: dict[str, list[dict]], path: str) -> None:
    from flow_grpo.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, runs), color in zip(results.items(), colors):
        for i, run in enumerate(runs):
            images = [e * run["images_per_epoch"] for e in run["epochs"]]
            for ax, x in ((axes[0], run["minutes"]), (axes[1], images)):
                ax.plot(x, run["accuracy"], color=color, lw=1.2 if len(runs) == 1 else 0.9, alpha=0.9,
                        marker="o", ms=2.5, label=label if i == 0 else None)
    for ax, xlabel in ((axes[0], "training minutes (one core)"), (axes[1], "images sampled")):
        for (name, base), style in zip(bases.items(), ("--", ":")):
            ax.axhline(base["overall"], color="grey", ls=style, lw=1, label=name if ax is axes[0] else None)
        ax.set(xlabel=xlabel, ylabel="held-out GenEval accuracy (tag mean)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("shapes world: every objective from the shipped base (one line per seed)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--repeated", nargs="*", default=["NFT", "AWM", "GRPO"], help="objectives run with every seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the others run with the first")
    parser.add_argument("--minutes", type=float, default=12.0, help="training minutes per run (one core)")
    parser.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1), help="runs side by side")
    parser.add_argument("--eval-images", type=int, default=4, help="images per held-out prompt in the trainer's evaluations")
    parser.add_argument("--final-images", type=int, default=8, help="images per held-out prompt in the final report")
    parser.add_argument("--logdir", default=os.path.join(REPO, "logs", "compare_shapes"))
    parser.add_argument("--out", default=os.path.join(REPO, "docs"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--extra", default="", help='config overrides for every run, given with "=" (argparse takes a lone "--config..." for an option): '
                        '--extra="--config.eval_freq=50"')
    parser.add_argument("--reuse", action="store_true", help="keep runs (and reports) already in --logdir")
    args = parser.parse_args(argv)
    os.makedirs(args.logdir, exist_ok=True)

    jobs = [(label, seed) for label in args.objectives for seed in (args.seeds if label in args.repeated else args.seeds[:1])]
    print(f"{len(jobs)} runs of {args.minutes:g} min, {args.parallel} side by side", flush=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        codes = list(pool.map(lambda job: train(*job, args), jobs))
    if any(codes):
        return 1

    import torch

    from flow_grpo.geneval.metadata import read_metadata
    from flow_grpo.backbones import load_backbone
    from flow_grpo.shapes.evaluation import held_out_report
    from flow_grpo.config_cli import parse_args

    print("final held-out reports", flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    config = parse_args(["--config", os.path.join(REPO, "config", "shapes.py") + ":shapes_nft"])
    config.seed = 42  # the noise of every final report
    test = read_metadata(os.path.join(config.dataset, "test_metadata.jsonl"))
    backbone = load_backbone(config.pretrained.model, config.pretrained.family)
    pipeline = backbone.pipeline
    base_transformer = pipeline.transformer
    bases = {}
    for guidance in sorted({parse_args(["--config", os.path.join(REPO, "config", "shapes.py") + f":{EXPERIMENTS[label]}"]).sample.eval_guidance_scale
                            for label in args.objectives}):
        config.sample.eval_guidance_scale = guidance
        bases[f"base (CFG {guidance:g})"], _, _ = held_out_report(backbone, test, args.final_images, config)
        bases[f"base (CFG {guidance:g})"]["guidance"] = guidance
    results: dict[str, list[dict]] = {}
    for label, seed in jobs:
        pipeline.transformer = copy.deepcopy(base_transformer)  # a LoRA run loads into it, a full fine-tune replaces it
        results.setdefault(label, []).append(final_report(label, seed, backbone, test, args))

    os.makedirs(args.out, exist_ok=True)
    text = table(bases, results)
    print(text)
    with open(os.path.join(args.out, "shapes_comparison.md"), "w") as handle:
        handle.write("# Every objective on the shapes world at equal training time\n\n")
        handle.write(f"`python scripts/compare_shapes.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
                     f"{args.minutes:g} minutes of training per run on one core (runs {args.parallel} side by side on "
                     f"the 2-core machine), from the shipped base (`config/shapes.py`); held-out: the 60 test prompts x "
                     f"{args.final_images} ODE images (20 steps, each run at its own config's guidance, the base at each; the "
                     "same noise for every model), GenEval's rule, "
                     "overall = mean of the six tags. Curves: the trainer's evaluations "
                     f"({args.eval_images} images per prompt, EMA weights).\n\n")
        handle.write(text + "\n\n![comparison](shapes_comparison.png)\n")
    plot(bases, results, os.path.join(args.out, "shapes_comparison.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
