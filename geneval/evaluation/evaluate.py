"""Evaluate a folder of GenEval images into ``results.jsonl`` (one line per image).

    python geneval/evaluation/evaluate.py out/geneval --outfile out/geneval/results.jsonl \
        --backend transformers --options '{"detector_model": "facebook/mask2former-swin-small-coco-instance",
                                           "clip_model": "openai/clip-vit-large-patch14"}'
    python geneval/evaluation/evaluate.py out/shapes --backend shapes

Each line: ``filename``, ``tag``, ``prompt``, ``correct`` (official rule), ``strict_correct`` (exact counts),
``score`` (partial credit), ``reason``, ``metadata`` (JSON text) and ``details`` (kept boxes per class).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from PIL import Image
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from flow_grpo.geneval.metadata import MetadataError, validate  # noqa: E402


def collect(imagedir: str) -> list[tuple[str, dict]]:
    """(image path, metadata) for every sample of every prompt folder, in order."""
    items = []
    for name in sorted(os.listdir(imagedir)):
        folder = os.path.join(imagedir, name)
        meta_path = os.path.join(folder, "metadata.jsonl")
        if not os.path.isfile(meta_path):
            continue
        with open(meta_path, encoding="utf-8") as handle:
            line = handle.readline()
        try:
            metadata = validate(json.loads(line), meta_path + ":1")
        except json.JSONDecodeError as error:
            raise MetadataError(f"{meta_path}:1: not valid JSON ({error.msg})") from None
        samples = os.path.join(folder, "samples")
        for image in sorted(os.listdir(samples)) if os.path.isdir(samples) else []:
            if image.endswith(".png"):
                items.append((os.path.join(samples, image), metadata))
    return items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("imagedir")
    parser.add_argument("--outfile", default="", help="default: <imagedir>/results.jsonl")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "mmdet", "shapes"])
    parser.add_argument("--options", default="{}", help="JSON options of the backend and thresholds")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)

    from flow_grpo.geneval.scorer import GenEvalScorer

    try:
        items = collect(args.imagedir)
        options = json.loads(args.options)
    except (MetadataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not items:
        print(f"error: no <index>/metadata.jsonl + samples/*.png under {args.imagedir!r}", file=sys.stderr)
        return 2
    try:
        scorer = GenEvalScorer(args.backend, **options)
    except OSError as error:  # a detector or CLIP model that is neither a local folder nor reachable on the hub
        print(f"error: cannot load the {args.backend} backend's models: {str(error).splitlines()[0]} -- point them at local "
              "copies with --options '{\"detector_model\": DIR, \"clip_model\": DIR}' (docs/rewards.md, GenEval)", file=sys.stderr)
        return 2
    outfile = args.outfile or os.path.join(args.imagedir, "results.jsonl")
    with open(outfile + ".tmp", "w", encoding="utf-8") as out:
        for start in tqdm(range(0, len(items), args.batch_size), desc="evaluating"):
            batch = items[start : start + args.batch_size]
            images = [Image.open(path).convert("RGB") for path, _ in batch]
            for (path, metadata), result in zip(batch, scorer(images, [m for _, m in batch])):
                out.write(json.dumps({
                    "filename": path, "tag": metadata["tag"], "prompt": metadata["prompt"],
                    "correct": result["correct"], "strict_correct": result["strict_correct"], "score": result["score"],
                    "reason": result["reason"], "metadata": json.dumps(metadata), "details": json.dumps(result["details"]),
                }) + "\n")
    os.replace(outfile + ".tmp", outfile)
    print(f"wrote {len(items)} results to {outfile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
