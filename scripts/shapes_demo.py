"""The main demo: the shapes world (GenEval on a laptop CPU) trained by RL from the shipped base, evaluated on
held-out prompts before and after, beside the world's ceiling.

    python scripts/shapes_demo.py                               # make demo: the best objective, ~15 min on 2 cores
    python scripts/shapes_demo.py --experiment shapes_grpo      # any config/shapes.py experiment
    python scripts/shapes_demo.py --epochs 224                  # train longer
    python scripts/shapes_demo.py --minutes 5                   # or for a time (its result depends on the machine)
    python scripts/shapes_demo.py --config.train.learning_rate=3e-4   # any config override

1. the ceiling: scenes that satisfy every held-out prompt, decoded by the base's VAE and scored like generated
   images (what a perfect model of this world reaches), and the base model on the 60 held-out prompts
   (``--eval-images`` per prompt, ODE, fixed seeds);
2. training with ``scripts/train.py`` (the trainer SD3.5 runs use), ``--epochs`` epochs (112 by default: the
   README's table, to the digit, on any machine; the minutes it took are printed), by default under
   ``accelerate launch`` with one single-threaded process per core (this model is too small for a matmul to use
   two threads well), the config's per-epoch totals kept (per-process batches divided);
3. the trained (EMA) weights on the same prompts and seeds;
4. the per-tag table (ceiling, base, trained), the reward-hacking checks (detector confidence, noise share,
   objects per image, layout spread, colour drift where no colour is named, off-palette pixels, object sizes,
   velocity norm; ``flow_grpo.shapes.evaluation``) and the verdict on them (each trained check against the
   base's, with its tolerance: "clean" or the checks that moved), ``plots/demo_curves.png`` (held-out accuracy and batch
   reward against training minutes), ``plots/before_after.png`` (the same prompts and seeds, base left, trained
   right) and ``demo_summary.json`` in the run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_EXPERIMENT = "shapes_nft"
# the README's run: 112 epochs in 2 processes (14,336 images, 448 optimizer steps) end at 0.601 held-out
DEFAULT_EPOCHS = 112


def grid(before, after, jobs, metadata, per_prompt: int, path: str) -> None:
    from flow_grpo.shapes.evaluation import prompt_grid

    prompt_grid([("base", before), ("RL", after)], jobs, metadata, per_prompt, path)


def table(ceiling: dict, before: dict, after: dict, guided: dict | None = None) -> str:
    """Per tag and hacking check: the ceiling, the base, the trained model; ``guided``: the base at CFG 4.5 when
    the run samples without guidance (the level CFG-free training has to reach)."""
    from flow_grpo.shapes.evaluation import report_table

    extra = [("base, CFG 4.5", guided)] if guided else []
    return report_table([("ceiling", ceiling), ("base", before), *extra, ("trained", after)])


def curves(run_dir: str, before: dict, after: dict, images_per_prompt: int, path: str) -> None:
    """Held-out accuracy (the trainer's evaluations, tag-averaged as the table's overall) and batch reward
    against training minutes."""
    from flow_grpo.plots import _pyplot
    from flow_grpo.runlog import read_metrics
    from flow_grpo.shapes.evaluation import trainer_eval_curve

    plt = _pyplot()
    minutes, elapsed, reward = [], 0.0, []
    for row in read_metrics(os.path.join(run_dir, "metrics.jsonl")):
        elapsed += row.get("epoch_time_s", 0.0) / 60
        if "reward_mean" in row:
            minutes.append(elapsed)
            reward.append(row["reward_mean"])
    evals = trainer_eval_curve(run_dir)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    if evals["minutes"]:
        axes[0].plot(evals["minutes"], evals["accuracy"], marker="o", ms=3,
                     label=f"trainer's eval (EMA weights, {images_per_prompt} image(s) per prompt)")
    axes[0].axhline(before["overall"], color="grey", ls="--", lw=1, label=f"base {before['overall']:.3f}")
    axes[0].axhline(after["overall"], color="tab:green", ls="--", lw=1, label=f"trained {after['overall']:.3f}")
    axes[0].set(title="held-out GenEval accuracy (mean of the six tags)", xlabel="training minutes")
    axes[0].legend(fontsize=7)
    axes[1].plot(minutes, reward, lw=1)
    axes[1].set(title="batch reward (partial score)", xlabel="training minutes")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_process_batches(config, processes: int) -> list[str]:
    """Overrides that split the config's per-epoch sample and train batches over ``processes``."""
    from flow_grpo.config_cli import ConfigError

    sizes = {"sample.train_batch_size": config.sample.train_batch_size, "train.batch_size": config.train.batch_size}
    for key, size in sizes.items():
        if size % processes:
            raise ConfigError(f"config.{key} = {size} does not split over {processes} processes; pass --processes 1")
    return [f"--config.{key}={size // processes}" for key, size in sizes.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--logdir", default=os.path.join(REPO, "logs", "shapes_demo"))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="training epochs (default: the README's run)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="stop after this much training time instead (the trainer's max_minutes; 0: the epochs decide)")
    parser.add_argument("--eval-images", type=int, default=8, help="images per held-out prompt")
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                        help="training processes (accelerate launch, one thread each); 1: plain python")
    args, overrides = parser.parse_known_args(argv)

    from diffusers import AutoencoderKL

    from flow_grpo.checkpoint import resolve_resume
    from flow_grpo.config_cli import ConfigError, parse_args
    from flow_grpo.geneval.metadata import read_metadata
    from flow_grpo.launch import run_script
    from flow_grpo.runlog import unique_run_dir
    from flow_grpo.backbones import load_backbone
    from flow_grpo.backbones.trainable import load_trained_weights
    from flow_grpo.shapes.evaluation import hacking_flags, held_out_report, vae_ceiling

    spec = os.path.join(REPO, "config", "shapes.py") + f":{args.experiment}"
    try:
        config = parse_args(["--config", spec, f"--config.logdir={args.logdir}", *overrides])
        split = per_process_batches(config, args.processes) if args.processes > 1 else []
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not os.path.isdir(config.pretrained.model):
        print(f"error: the shapes base {config.pretrained.model!r} is missing; make it with scripts/pretrain_shapes.py", file=sys.stderr)
        return 2
    test = read_metadata(os.path.join(config.dataset, "test_metadata.jsonl"))
    started = time.time()

    print(f"[1/3] the ceiling and the base model: {len(test)} held-out prompts x {args.eval_images} images")
    backbone = load_backbone(config.pretrained.model, config.pretrained.family)
    ceiling = vae_ceiling(AutoencoderKL.from_pretrained(os.path.join(config.pretrained.model, "vae")).eval(), test,
                          n=args.eval_images, seed=config.seed)
    before, before_images, jobs = held_out_report(backbone, test, args.eval_images, config)
    guided = None
    if config.sample.eval_guidance_scale <= 1:  # a CFG-free run: the base with guidance is the level to reach
        guided_config = parse_args(["--config", spec, *overrides, "--config.sample.eval_guidance_scale=4.5"])
        guided, _, _ = held_out_report(backbone, test, args.eval_images, guided_config)
    at_cfg = f" (at CFG 4.5: {guided['overall']:.3f})" if guided else ""
    print(f"      ceiling {ceiling['overall']:.3f}, base {before['overall']:.3f}{at_cfg} ({time.time() - started:.0f}s)")

    length = f"{args.minutes:g} min (at most {args.epochs} epochs)" if args.minutes else f"{args.epochs} epochs"
    print(f"[2/3] training {length}: {spec} ({args.processes} process{'es' if args.processes > 1 else ''})")
    train_started = time.time()
    # a folder that holds no run yet: the trainer takes it as it is, so the demo reads this run's results
    run_dir = unique_run_dir(args.logdir, config.run_name)
    # --epochs (or --minutes) bounds the run, not the config's epoch count; a --config.num_epochs given to the demo wins
    train_args = ["--config", spec, f"--config.logdir={args.logdir}", f"--config.max_minutes={args.minutes}",
                  f"--config.num_epochs={args.epochs}", *overrides,
                  *split, f"--config.run_name={os.path.basename(run_dir)}"]
    # several processes: one thread each (this model is too small for a matmul to use two threads well)
    if run_script("train.py", train_args, processes=args.processes, threads=1 if args.processes > 1 else 0):
        return 1
    train_time = time.time() - train_started
    with open(os.path.join(run_dir, "summary.json")) as handle:
        trainer_summary = json.load(handle)
    assert os.path.abspath(trainer_summary["run_dir"]) == os.path.abspath(run_dir), (trainer_summary["run_dir"], run_dir)

    print("[3/3] the trained model (EMA weights) on the same prompts and seeds")
    checkpoint = resolve_resume("latest", os.path.join(run_dir, "checkpoints"))
    load_trained_weights(backbone.pipeline, checkpoint)
    after, after_images, _ = held_out_report(backbone, test, args.eval_images, config)
    os.makedirs(os.path.join(run_dir, "plots"), exist_ok=True)
    grid(before_images, after_images, jobs, test, min(4, args.eval_images), os.path.join(run_dir, "plots", "before_after.png"))
    curves(run_dir, before, after, config.sample.eval_images_per_prompt, os.path.join(run_dir, "plots", "demo_curves.png"))
    summary = {
        "experiment": args.experiment,
        "ceiling": ceiling,
        "before": before,
        "base_cfg_4.5": guided,
        "after": after,
        "train_minutes": trainer_summary.get("train_seconds", 0.0) / 60,
        "train_wall_clock_s": train_time,
        "total_wall_clock_s": time.time() - started,
        "optimizer_steps": trainer_summary["global_step"],
        "epochs": trainer_summary["epochs"],
        "images_sampled": trainer_summary["epochs"] * config.sample.train_batch_size * config.sample.num_batches_per_epoch,
        "checkpoint": checkpoint,
        "train_processes": args.processes,
        "hacking_flags": hacking_flags(before, after),
    }
    with open(os.path.join(run_dir, "demo_summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print()
    print(table(ceiling, before, after, guided))
    flags = summary["hacking_flags"]
    print("\nreward-hacking checks against the base: " + ("clean" if not flags else "MOVED: " + "; ".join(flags)))
    print(f"\n{args.experiment}: {summary['train_minutes']:.1f} min of training ({summary['epochs']} epochs, "
          f"{summary['images_sampled']} images sampled, {trainer_summary['global_step']} optimizer steps) in "
          f"{args.processes} process(es); {summary['total_wall_clock_s'] / 60:.1f} min in all")
    print(f"run folder: {run_dir} (plots/before_after.png, plots/demo_curves.png, plots/curves.png, demo_summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
