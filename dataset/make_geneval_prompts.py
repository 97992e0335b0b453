"""GenEval-style prompt sets over the 80 COCO classes, the 10 GenEval colours and the 4 relations.

Writes ``<out>/test_metadata.jsonl`` (a GenEval-sized test set: 80 single object, 99 two object, 80 counting,
94 colours, 100 position, 100 colour attribute, counts 2-4 as in GenEval) and ``<out>/train_metadata.jsonl``
(``--train-per-tag`` prompts per tag) that excludes every prompt of the test set and of any ``--exclude``
file, e.g. the official GenEval ``evaluation_metadata.jsonl``. Deterministic for a seed:

    python dataset/make_geneval_prompts.py --out dataset/geneval [--exclude path/to/evaluation_metadata.jsonl]
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flow_grpo.geneval import prompts as P  # noqa: E402
from flow_grpo.geneval.metadata import COCO_CLASSES, COLORS, RELATIONS, read_metadata, write_metadata  # noqa: E402

TEST_SIZES = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}


TEST_LEADS = ("a photo of",)
# train prompts also use other openings, so that single objects (all 80 are in the test set) and the small
# counting space still give train prompts that no test prompt equals
TRAIN_LEADS = ("a photo of", "a picture of", "an image of", "a realistic photo of")


def draw(tag: str, rng: random.Random, leads, classes=COCO_CLASSES, counts=(2, 3, 4)) -> dict:
    lead = rng.choice(leads)
    if tag == "single_object":
        return P.single_object(rng.choice(classes), lead)
    if tag == "two_object":
        a, b = rng.sample(classes, 2)
        return P.two_object(a, b, lead)
    if tag == "counting":
        return P.counting(rng.choice(classes), rng.choice(counts), lead)
    coloured = [c for c in classes if c != "person"]  # as GenEval: no "[colour] person" prompts
    if tag == "colors":
        return P.colors(rng.choice(coloured), rng.choice(COLORS), lead)
    if tag == "position":
        a, b = rng.sample(classes, 2)
        return P.position(a, rng.choice(RELATIONS), b, lead)
    if tag == "color_attr":
        a, b = rng.sample(coloured, 2)
        ca, cb = rng.sample(COLORS, 2)
        return P.color_attr(a, ca, b, cb, lead)
    raise ValueError(tag)


def make_set(sizes: dict, rng: random.Random, exclude: set, leads) -> list[dict]:
    """Distinct prompts, ``sizes[tag]`` per tag (fewer when the space runs out: a warning says so)."""
    items, seen = [], set(exclude)
    for tag, size in sizes.items():
        if tag == "single_object" and leads == TEST_LEADS:
            pool = [P.single_object(c) for c in COCO_CLASSES if P.single_object(c)["prompt"] not in seen]
            rng.shuffle(pool)
            chosen = pool[:size]
        else:
            chosen, misses = [], 0
            while len(chosen) < size and misses < 2000:
                item = draw(tag, rng, leads)
                if item["prompt"] in seen:
                    misses += 1
                    continue
                misses = 0
                seen.add(item["prompt"])
                chosen.append(item)
        if len(chosen) < size:
            print(f"warning: only {len(chosen)} distinct {tag} prompts available (asked for {size})", file=sys.stderr)
        seen.update(item["prompt"] for item in chosen)
        items += chosen
    return items


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "geneval"))
    parser.add_argument("--train-per-tag", type=int, default=1000)
    parser.add_argument("--exclude", nargs="*", default=[], help="metadata files whose prompts train must not contain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    excluded = {item["prompt"] for path in args.exclude for item in read_metadata(path)}
    os.makedirs(args.out, exist_ok=True)
    test = make_set(TEST_SIZES, random.Random(args.seed), excluded, TEST_LEADS)
    excluded |= {item["prompt"] for item in test}
    train = make_set({tag: args.train_per_tag for tag in TEST_SIZES}, random.Random(args.seed + 1), excluded, TRAIN_LEADS)
    write_metadata(os.path.join(args.out, "test_metadata.jsonl"), test)
    write_metadata(os.path.join(args.out, "train_metadata.jsonl"), train)
    print(f"wrote {len(test)} test and {len(train)} train prompts to {args.out}")


if __name__ == "__main__":
    main()
