"""Train/test prompts of the shapes world (GenEval metadata format).

Test: 60 held-out prompts (5 single objects, 4 two-object, 5 counting, 10 colours, 16 positions, 20 colour
attributes). Train: ``--per-tag`` lines per tag from the rest, so that the trainer's sampler (uniform over
lines) is uniform over tags: colour-attribute prompts are subsampled, the small tags repeated.

    python dataset/make_shapes_prompts.py [--seed 0] [--per-tag 64] [--out dataset/shapes]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flow_grpo.geneval.metadata import write_metadata  # noqa: E402
from flow_grpo.shapes.grammar import balanced, split  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-tag", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes"))
    args = parser.parse_args()
    train, test = split(args.seed)
    train = balanced(train, args.per_tag, args.seed)
    os.makedirs(args.out, exist_ok=True)
    write_metadata(os.path.join(args.out, "train_metadata.jsonl"), train)
    write_metadata(os.path.join(args.out, "test_metadata.jsonl"), test)
    print(f"wrote {len(train)} train and {len(test)} test prompts to {args.out}")


if __name__ == "__main__":
    main()
