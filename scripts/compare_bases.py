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
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_models(items: list[str]) -> list[tuple[str, str]]:
    """``LABEL=PATH`` pairs, each PATH a pipeline folder (``model_index.json`` in it)."""
    models = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"error: --model {item!r}: expected LABEL=PATH, e.g. v1=models/shapes-sd3")
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise SystemExit(f"error: --model {label}: {path!r} is not a pipeline folder (no model_index.json in it)")
        models.append((label, path))
    if len({label for label, _ in models}) != len(models):
        raise SystemExit("error: two --model entries share a label")
    return models


def first_per_tag(metadata: list[dict], k: int) -> list[dict]:
    """The first ``k`` prompts of each tag, in their order (``k`` = 0: all of them)."""
    if k <= 0:
        return metadata
    counts: dict[str, int] = {}
    kept = []
    for item in metadata:
        counts[item["tag"]] = counts.get(item["tag"], 0) + 1
        if counts[item["tag"]] <= k:
            kept.append(item)
    return kept


def vae_digest(path: str) -> str:
    """A hash of the VAE's weights: models that share a VAE share a ceiling."""
    digest = hashlib.sha256()
    folder = os.path.join(path, "vae")
    for name in sorted(os.listdir(folder)):
        if name.endswith((".safetensors", ".bin")):
            with open(os.path.join(folder, name), "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()[:12]


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

    import torch
    from diffusers import AutoencoderKL

    from flow_grpo.backbones import load_backbone
    from flow_grpo.config_cli import parse_args
    from flow_grpo.geneval.metadata import read_metadata
    from flow_grpo.shapes.evaluation import held_out_report, prompt_grid, report_table, vae_ceiling

    if args.threads:
        torch.set_num_threads(args.threads)
    config = parse_args(["--config", os.path.join(REPO, "config", "shapes.py") + ":shapes_nft"])
    config.seed = args.seed
    if args.steps:
        config.sample.eval_num_steps = args.steps
    test = first_per_tag(read_metadata(os.path.join(config.dataset, "test_metadata.jsonl")), args.prompts_per_tag)
    started = time.time()

    ceilings, columns, reports, images = {}, [], {}, {guidance: [] for guidance in args.guidance}
    jobs = None
    for label, path in models:
        digest = vae_digest(path)
        if digest not in ceilings:
            vae = AutoencoderKL.from_pretrained(os.path.join(path, "vae")).eval()
            ceilings[digest] = (label, vae_ceiling(vae, test, n=args.images, seed=args.seed))
            columns.append((f"ceiling ({label}'s VAE)", ceilings[digest][1]))
        backbone = load_backbone(path, config.pretrained.family)
        for guidance in args.guidance:
            config.sample.eval_guidance_scale = guidance
            report, sampled, jobs = held_out_report(backbone, test, args.images, config)
            name = f"{label}, CFG {guidance:g}"
            reports[name] = {"model": path, "guidance": guidance, "vae": digest, **report}
            columns.append((name, report))
            images[guidance].append((label, sampled))
            print(f"{name}: overall {report['overall']:.3f} ({time.time() - started:.0f}s)", flush=True)

    os.makedirs(args.out, exist_ok=True)
    text = report_table(columns)
    print(text)
    with open(os.path.join(args.out, "bases.md"), "w") as handle:
        handle.write("# Shapes bases side by side\n\n")
        handle.write(f"`python scripts/compare_bases.py {' '.join(argv if argv is not None else sys.argv[1:])}`: the "
                     f"{len(test)} held-out prompts x {args.images} ODE images ({config.sample.eval_num_steps} steps, "
                     f"seed {args.seed}, the same noise for every model), GenEval's rule, overall = mean of the six tags; "
                     "the ceiling: rendered scenes that satisfy every prompt, through the VAE.\n\n")
        handle.write(text + "\n\n")
        for guidance in args.guidance:
            handle.write(f"![CFG {guidance:g}](bases_cfg{guidance:g}.png)\n")
    with open(os.path.join(args.out, "bases.json"), "w") as handle:
        json.dump({"ceilings": {digest: {"first_model": label, **report} for digest, (label, report) in ceilings.items()},
                   "reports": reports}, handle, indent=2)
    for guidance in args.guidance:
        prompt_grid(images[guidance], jobs, test, min(4, args.images), os.path.join(args.out, f"bases_cfg{guidance:g}.png"))
    print(f"wrote {args.out}/bases.md, bases.json and the grids ({time.time() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
