"""Shapes bases side by side: held-out GenEval accuracy per tag and the reward-hacking checks of each base
model, at each guidance scale, on the same prompts and seeds, beside the world's ceiling.

    python scripts/compare_bases.py --model v1=models/shapes-sd3 --model v2=logs/pretrain_v2/pipeline
    python scripts/compare_bases.py --model v2=PATH --guidance 4.5 --images 4

For each model folder (a ``scripts/pretrain_shapes.py`` output) and each ``--guidance``: ``--images`` ODE
images per held-out prompt (the shapes configs' eval steps, resolution and GenEval thresholds; seed
``--seed`` for every model, so the columns differ by the model only), scored by
``flow_grpo.shapes.evaluation.held_out_report``. The ceiling (rendered scenes that satisfy every prompt,
through the VAE) is given once per distinct VAE. Writes ``bases.md`` (the table), ``bases.json`` (every
report) and ``bases_cfg<g>.png`` (two prompts per tag, the first four images of each model) to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_models(items: list[str]) -> list[tuple[str, str]]:
    """``LABEL=PATH`` pairs, each PATH an SD3 pipeline folder with its VAE's weights: checked before any scoring."""
    from flow_grpo.backbones import detect_family

    models = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"error: --model {item!r}: expected LABEL=PATH, e.g. v1=models/shapes-sd3")
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise SystemExit(f"error: --model {label}: {path!r} is not a pipeline folder (no model_index.json in it)")
        family = detect_family(path)
        if family != "sd3":
            raise SystemExit(f"error: --model {label}: {path!r} is a {family} pipeline; the shapes bases are SD3")
        if not vae_weights(path):
            raise SystemExit(f"error: --model {label}: {path!r} has no VAE weights (vae/*.safetensors)")
        models.append((label, path))
    if len({label for label, _ in models}) != len(models):
        raise SystemExit("error: two --model entries share a label")
    return models


def vae_weights(path: str) -> list[str]:
    folder = os.path.join(path, "vae")
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith((".safetensors", ".bin")))


def vae_digest(path: str) -> str:
    """A hash of the VAE's weights: models that share a VAE share a ceiling."""
    digest = hashlib.sha256()
    for weights in vae_weights(path):
        with open(weights, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:12]


@dataclass
class Scored:
    """Every report of a comparison: table columns in order, reports by column name, grid columns per guidance."""

    columns: list[tuple[str, dict]] = field(default_factory=list)
    reports: dict[str, dict] = field(default_factory=dict)
    ceilings: dict[str, dict] = field(default_factory=dict)  # VAE digest -> the ceiling, with the first model using it
    grid_columns: dict[float, list[tuple[str, list]]] = field(default_factory=dict)
    jobs: list = field(default_factory=list)


def score_models(models: list[tuple[str, str]], guidances: list[float], images_per_prompt: int, test: list[dict], config) -> Scored:
    """Each model at each guidance (``held_out_report``, the config's seed and steps), and the ceiling of each
    distinct VAE first among its models' columns."""
    from flow_grpo.backbones import load_backbone
    from flow_grpo.shapes.evaluation import held_out_report, vae_ceiling

    scored, started = Scored(grid_columns={guidance: [] for guidance in guidances}), time.time()
    for label, path in models:
        backbone = load_backbone(path, "sd3")
        digest = vae_digest(path)
        if digest not in scored.ceilings:
            ceiling = vae_ceiling(backbone.pipeline.vae.eval(), test, n=images_per_prompt, seed=config.seed)
            scored.ceilings[digest] = {"first_model": label, **ceiling}
            scored.columns.append((f"ceiling ({label}'s VAE)", ceiling))
        for guidance in guidances:
            config.sample.eval_guidance_scale = guidance
            report, sampled, scored.jobs = held_out_report(backbone, test, images_per_prompt, config)
            name = f"{label}, CFG {guidance:g}"
            scored.reports[name] = {"model": path, "guidance": guidance, "vae": digest, **report}
            scored.columns.append((name, report))
            scored.grid_columns[guidance].append((label, sampled))
            print(f"{name}: overall {report['overall']:.3f} ({time.time() - started:.0f}s)", flush=True)
    return scored


def write_outputs(scored: Scored, out: str, command: str, test: list[dict], images_per_prompt: int, config) -> str:
    """``bases.md`` (the table), ``bases.json`` (every report) and one grid per guidance in ``out``."""
    from flow_grpo.shapes.evaluation import prompt_grid, report_table

    os.makedirs(out, exist_ok=True)
    text = report_table(scored.columns)
    with open(os.path.join(out, "bases.md"), "w") as handle:
        handle.write("# Shapes bases side by side\n\n")
        handle.write(f"`{command}`: the {len(test)} held-out prompts x {images_per_prompt} ODE images "
                     f"({config.sample.eval_num_steps} steps, seed {config.seed}, the same noise for every model), GenEval's "
                     "rule, overall = mean of the six tags; the ceiling: rendered scenes that satisfy every prompt, through "
                     "the VAE.\n\n")
        handle.write(text + "\n\n")
        for guidance in scored.grid_columns:
            handle.write(f"![CFG {guidance:g}](bases_cfg{guidance:g}.png)\n")
    with open(os.path.join(out, "bases.json"), "w") as handle:
        json.dump({"command": command, "ceilings": scored.ceilings, "reports": scored.reports}, handle, indent=2)
    for guidance, columns in scored.grid_columns.items():
        prompt_grid(columns, scored.jobs, test, min(4, images_per_prompt), os.path.join(out, f"bases_cfg{guidance:g}.png"))
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=PATH",
                        help="a base to score (repeat); default: v1=models/shapes-sd3")
    parser.add_argument("--guidance", type=float, nargs="+", default=[4.5, 1.0], help="CFG scales (1: no guidance)")
    parser.add_argument("--images", type=int, default=8, help="images per held-out prompt")
    parser.add_argument("--seed", type=int, default=42, help="the noise of every report")
    parser.add_argument("--prompts-per-tag", type=int, default=0, help="only the first K held-out prompts of each tag (0: all)")
    parser.add_argument("--steps", type=int, default=0, help="ODE steps per image (0: the shapes configs' eval steps)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(REPO, "logs", "compare_bases"))
    args = parser.parse_args(argv)
    models = parse_models(args.model or [f"v1={os.path.join(REPO, 'models', 'shapes-sd3')}"])
    guidances = list(dict.fromkeys(args.guidance))  # a repeated scale once

    import torch

    from flow_grpo.config_cli import parse_args
    from flow_grpo.geneval.metadata import read_metadata
    from flow_grpo.shapes.evaluation import first_per_tag

    if args.threads:
        torch.set_num_threads(args.threads)
    config = parse_args(["--config", os.path.join(REPO, "config", "shapes.py") + ":shapes_nft"])
    config.seed = args.seed
    if args.steps:
        config.sample.eval_num_steps = args.steps
    test = read_metadata(os.path.join(config.dataset, "test_metadata.jsonl"))
    test = [test[i] for i in first_per_tag(test, args.prompts_per_tag)]
    started = time.time()
    scored = score_models(models, guidances, args.images, test, config)
    command = "python scripts/compare_bases.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(write_outputs(scored, args.out, command, test, args.images, config))
    print(f"wrote {args.out}/bases.md, bases.json and the grids ({time.time() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
