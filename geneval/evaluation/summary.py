"""Summarise ``results.jsonl``: per-tag accuracy, overall (the mean over tags), shares of correct images and
prompts (a prompt counts when any of its images is correct, as GenEval does), and bar charts by tag and by count.

    python geneval/evaluation/summary.py out/geneval/results.jsonl [--plots out/geneval/plots] [--json summary.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from flow_grpo.geneval.metadata import TAGS  # noqa: E402


def summarise(rows: list[dict], key: str = "correct") -> dict:
    by_tag, by_prompt, by_count = defaultdict(list), defaultdict(list), defaultdict(list)
    for row in rows:
        by_tag[row["tag"]].append(bool(row[key]))
        by_prompt[row["metadata"]].append(bool(row[key]))
        if row["tag"] == "counting":
            by_count[json.loads(row["metadata"])["include"][0]["count"]].append(bool(row[key]))
    tags = {tag: float(np.mean(v)) for tag, v in sorted(by_tag.items(), key=lambda kv: TAGS.index(kv[0]) if kv[0] in TAGS else 99)}
    return {
        "images": len(rows),
        "prompts": len(by_prompt),
        "correct_images": float(np.mean([bool(r[key]) for r in rows])) if rows else 0.0,
        "correct_prompts": float(np.mean([any(v) for v in by_prompt.values()])) if rows else 0.0,
        "by_tag": tags,
        "by_tag_counts": {tag: [int(sum(v)), len(v)] for tag, v in by_tag.items()},
        "overall": float(np.mean(list(tags.values()))) if tags else 0.0,
        "by_count": {int(c): float(np.mean(v)) for c, v in sorted(by_count.items())},
    }


def plot(summary: dict, folder: str, title: str = "") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, data, xlabel in (("by_tag", summary["by_tag"], "tag"), ("by_count", summary["by_count"], "count")):
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(data) + 2), 3.4))
        ax.bar([str(k) for k in data], list(data.values()), color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{title} {'overall ' + format(summary['overall'], '.3f') if name == 'by_tag' else 'counting'}".strip())
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        path = os.path.join(folder, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--plots", default="", help="folder for the bar charts (default: next to the results)")
    parser.add_argument("--json", default="", help="also write the summary here")
    parser.add_argument("--strict", action="store_true", help="summarise strict (exact-count) correctness")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    summary = summarise(rows, "strict_correct" if args.strict else "correct")
    print(f"Total images: {summary['images']}\nTotal prompts: {summary['prompts']}")
    print(f"% correct images: {summary['correct_images']:.2%}\n% correct prompts: {summary['correct_prompts']:.2%}\n")
    for tag, accuracy in summary["by_tag"].items():
        hits, total = summary["by_tag_counts"][tag]
        print(f"{tag:<16} = {accuracy:.2%} ({hits} / {total})")
    for count, accuracy in summary["by_count"].items():
        print(f"  count {count:<3} = {accuracy:.2%}")
    print(f"\nOverall score (avg. over tags): {summary['overall']:.5f}")
    plot(summary, args.plots or os.path.join(os.path.dirname(os.path.abspath(args.results)), "plots"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
