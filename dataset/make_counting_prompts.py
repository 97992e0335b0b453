"""Counting prompt sets: "a photo of three cats" with counts in words, correct plurals, and GenEval metadata
(include ``count``, exclude ``count + 1``: exactly that many). The test split is stratified by count: the same
share of every count is held out.

    python dataset/make_counting_prompts.py                 # all five sets below
    python dataset/make_counting_prompts.py --name counting_10 --low 1 --high 10

Sets: counting_10 (1-10), counting_1_5, counting_6_10, counting_15 (1-15), counting_20 (1-20).
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flow_grpo.geneval import prompts as P  # noqa: E402
from flow_grpo.geneval.metadata import COCO_CLASSES, write_metadata  # noqa: E402

SETS = {"counting_10": (1, 10), "counting_1_5": (1, 5), "counting_6_10": (6, 10), "counting_15": (1, 15), "counting_20": (1, 20)}


def make(low: int, high: int, test_fraction: float, seed: int) -> tuple[list, list]:
    rng = random.Random(seed)
    train, test = [], []
    for count in range(low, high + 1):
        classes = list(COCO_CLASSES)
        rng.shuffle(classes)
        held_out = max(1, round(test_fraction * len(classes)))
        test += [P.counting(c, count) for c in classes[:held_out]]
        train += [P.counting(c, count) for c in classes[held_out:]]
    rng.shuffle(train)
    return train, test


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="", help="one set; default: all")
    parser.add_argument("--low", type=int, default=1)
    parser.add_argument("--high", type=int, default=10)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    sets = {args.name: (args.low, args.high)} if args.name else SETS
    for name, (low, high) in sets.items():
        train, test = make(low, high, args.test_fraction, args.seed)
        folder = os.path.join(args.root, name)
        os.makedirs(folder, exist_ok=True)
        write_metadata(os.path.join(folder, "train_metadata.jsonl"), train)
        write_metadata(os.path.join(folder, "test_metadata.jsonl"), test)
        print(f"{name}: counts {low}-{high}, {len(train)} train / {len(test)} test prompts")


if __name__ == "__main__":
    main()
