"""The shapes-world demo: Flow-GRPO on the shipped base, evaluated before and after on held-out prompts.

It is meant to become the main demo once GRPO improves this base within a CPU budget; it does not yet (the
docs/shapes_world.md, "Why GRPO does not improve this base yet", has the runs and the measured reason).

    python scripts/shapes_demo.py                          # config/shapes.py:shapes_grpo
    python scripts/shapes_demo.py --experiment shapes_fast  # Flow-GRPO-Fast
    python scripts/shapes_demo.py --config.num_epochs=10    # any config override
    python scripts/shapes_demo.py --processes 1             # one training process (default: one per core)

1. evaluates the base model on the 60 held-out test prompts (``--eval-images`` per prompt, ODE, fixed seeds);
2. trains with ``scripts/train_sd3.py`` (the same trainer and code path as SD3.5 runs), by default under
   ``accelerate launch`` with one single-threaded process per core: this model is too small for a matmul
   to use two threads well (2 processes x 1 thread: 10.8 s per shapes_grpo epoch; 1 process x 2 threads:
   13.9 s, on 2 cores). The per-epoch totals of the config stay the same (the per-process batch sizes are
   divided);
3. evaluates the final EMA weights (LoRA or full fine-tune) on the same prompts and seeds;
4. prints the per-tag table and the reward-hacking checks, and writes ``plots/before_after.png`` (the same
   prompts and seeds, base left, fine-tuned right), the trainer's curves and ``demo_summary.json`` into the run
   folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def grid(before, after, jobs, metadata, per_prompt: int, path: str) -> None:
    from flow_grpo.images import image_grid

    chosen, seen_tags = [], {}
    for i, item in enumerate(metadata):  # two prompts per tag
        if seen_tags.get(item["tag"], 0) < 2:
            seen_tags[item["tag"]] = seen_tags.get(item["tag"], 0) + 1
            chosen.append(i)
    cells, labels = [], []
    for i in chosen:
        rows = [j for j, (p, k) in enumerate(jobs) if p == i and k < per_prompt]
        cells += [before[j] for j in rows] + [after[j] for j in rows]
        labels.append(metadata[i]["prompt"])
    columns = [f"base {k}" for k in range(per_prompt)] + [f"RL {k}" for k in range(per_prompt)]
    image_grid(cells, cols=2 * per_prompt, row_labels=labels, col_labels=columns, cell=64).save(path)


def table(before: dict, after: dict) -> str:
    lines = ["| tag | base | fine-tuned |", "|---|---|---|"]
    for tag in before["by_tag"]:
        lines.append(f"| {tag} | {before['by_tag'][tag]:.3f} | {after['by_tag'][tag]:.3f} |")
    lines.append(f"| **overall** | **{before['overall']:.3f}** | **{after['overall']:.3f}** |")
    lines.append("| | | |")
    for key, label in (("detector_confidence", "detector confidence"), ("noise_share", "noise pixel share"),
                       ("objects_per_image", "objects per image"), ("layout_spread", "layout spread (px)")):
        lines.append(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |")
    return "\n".join(lines)


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
    parser.add_argument("--experiment", default="shapes_grpo")
    parser.add_argument("--logdir", default=os.path.join(REPO, "logs", "shapes_demo"))
    parser.add_argument("--eval-images", type=int, default=8, help="images per test prompt")
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                        help="training processes (accelerate launch, one thread each); 1: plain python")
    args, overrides = parser.parse_known_args(argv)

    from flow_grpo.checkpoint import resolve_resume
    from flow_grpo.config_cli import ConfigError, parse_args
    from flow_grpo.geneval.metadata import read_metadata
    from flow_grpo.geneval.scoring import CONFIDENCE_THRESHOLD, COUNTING_THRESHOLD
    from flow_grpo.launch import run_script
    from flow_grpo.lora import load_lora
    from flow_grpo.runlog import unique_run_dir
    from flow_grpo.sd3.pipeline import load_sd3_pipeline
    from flow_grpo.shapes.evaluation import evaluate_images, sample_images

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

    def evaluate(pipeline):
        images, jobs = sample_images(
            pipeline, test, args.eval_images, config.sample.eval_num_steps, config.sample.eval_guidance_scale,
            seed=config.seed, resolution=config.resolution, max_sequence_length=config.max_sequence_length,
        )
        options = dict(config.reward_options).get("geneval", {})
        result = evaluate_images(images, jobs, test, options.get("confidence", CONFIDENCE_THRESHOLD),
                                 options.get("counting_confidence", COUNTING_THRESHOLD))
        return result, images, jobs

    print(f"[1/3] evaluating the base model: {len(test)} held-out prompts x {args.eval_images} images")
    pipeline = load_sd3_pipeline(config.pretrained.model)
    pipeline.set_progress_bar_config(disable=True)
    before, before_images, jobs = evaluate(pipeline)
    print(f"      base overall {before['overall']:.3f} ({time.time() - started:.0f}s)")

    print(f"[2/3] training: {spec} ({args.processes} process{'es' if args.processes > 1 else ''})")
    train_started = time.time()
    # a folder that holds no run yet: the trainer takes it as it is, so the demo reads this run's results
    run_dir = unique_run_dir(args.logdir, config.run_name)
    train_args = ["--config", spec, f"--config.logdir={args.logdir}", *overrides, *split,
                  f"--config.run_name={os.path.basename(run_dir)}"]
    # several processes: one thread each (this model is too small for a matmul to use two threads well)
    if run_script("train_sd3.py", train_args, processes=args.processes, threads=1 if args.processes > 1 else 0):
        return 1
    train_time = time.time() - train_started
    with open(os.path.join(run_dir, "summary.json")) as handle:
        trainer_summary = json.load(handle)
    assert os.path.abspath(trainer_summary["run_dir"]) == os.path.abspath(run_dir), (trainer_summary["run_dir"], run_dir)

    print("[3/3] evaluating the fine-tuned model (EMA weights) on the same prompts and seeds")
    checkpoint = resolve_resume("latest", os.path.join(run_dir, "checkpoints"))
    if os.path.isdir(os.path.join(checkpoint, "transformer")):  # a full fine-tune
        from diffusers import SD3Transformer2DModel

        pipeline.transformer = SD3Transformer2DModel.from_pretrained(os.path.join(checkpoint, "transformer"))
    else:
        load_lora(pipeline, checkpoint)
    after, after_images, _ = evaluate(pipeline)
    os.makedirs(os.path.join(run_dir, "plots"), exist_ok=True)
    grid(before_images, after_images, jobs, test, min(4, args.eval_images), os.path.join(run_dir, "plots", "before_after.png"))
    summary = {
        "experiment": args.experiment,
        "before": before,
        "after": after,
        "train_wall_clock_s": train_time,
        "total_wall_clock_s": time.time() - started,
        "optimizer_steps": trainer_summary["global_step"],
        "epochs": trainer_summary["epochs"],
        "checkpoint": checkpoint,
        "threads": torch.get_num_threads(),
        "train_processes": args.processes,
    }
    with open(os.path.join(run_dir, "demo_summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print()
    print(table(before, after))
    print(f"\ntraining {train_time / 60:.1f} min ({trainer_summary['global_step']} optimizer steps, {trainer_summary['epochs']} epochs); "
          f"total {summary['total_wall_clock_s'] / 60:.1f} min; trained in {args.processes} process(es), "
          f"evaluated on {torch.get_num_threads()} threads")
    print(f"run folder: {run_dir} (plots/before_after.png, plots/curves.png, demo_summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
