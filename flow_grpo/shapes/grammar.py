"""The shapes world's prompts for GenEval's six tags, in GenEval's metadata format.

Classes are the shapes, colours GenEval's ten; prompts have no "a photo of" lead: "a red circle", "three
triangles", "a square left of a diamond", "a blue circle and a yellow cross". ``all_metadata(tag)`` lists a
tag's whole prompt space; ``split`` holds some of it out for testing.
"""

from __future__ import annotations

import itertools
import random

from flow_grpo.geneval import prompts as P
from flow_grpo.geneval.metadata import COLORS, RELATIONS, TAGS
from flow_grpo.shapes.render import SHAPES

TRAIN_COUNTS = (1, 2, 3, 4)
TEST_COUNTS = (2, 3, 4)  # GenEval's
# prompts per tag held out for testing (single objects: all five are also trained on, there are no others)
TEST_SIZES = {"single_object": 5, "two_object": 4, "counting": 5, "colors": 10, "position": 16, "color_attr": 20}


def all_metadata(tag: str, counts=TRAIN_COUNTS) -> list[dict]:
    pairs = list(itertools.permutations(SHAPES, 2))
    if tag == "single_object":
        return [P.single_object(s, "") for s in SHAPES]
    if tag == "two_object":
        return [P.two_object(a, b, "") for a, b in pairs]
    if tag == "counting":
        return [P.counting(s, n, "") for s in SHAPES for n in counts]
    if tag == "colors":
        return [P.colors(s, c, "") for s in SHAPES for c in COLORS]
    if tag == "position":
        return [P.position(a, r, b, "") for a, b in pairs for r in RELATIONS]
    if tag == "color_attr":
        return [P.color_attr(a, ca, b, cb, "") for a, b in pairs for ca, cb in itertools.permutations(COLORS, 2)]
    raise ValueError(f"unknown tag {tag!r}; valid: {', '.join(TAGS)}")


def split(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test) metadata. Held-out prompts never appear in train, except the five single objects.

    Two-object prompts are held out as whole unordered pairs (both orders), counting prompts one per shape
    with counts 2-4, the rest at random.
    """
    rng = random.Random(seed)
    train, test = [], []
    for tag in TAGS:
        items = all_metadata(tag)
        if tag == "single_object":
            train += items
            test += items
            continue
        if tag == "two_object":
            pairs = sorted({tuple(sorted(i["include"][j]["class"] for j in range(2))) for i in items})
            held = set(rng.sample(pairs, TEST_SIZES[tag] // 2))
            chosen = [i for i in items if tuple(sorted(e["class"] for e in i["include"])) in held]
        elif tag == "counting":
            counts = [TEST_COUNTS[k % len(TEST_COUNTS)] for k in range(len(SHAPES))]
            rng.shuffle(counts)
            chosen = [P.counting(s, n, "") for s, n in zip(SHAPES, counts)]
        else:
            chosen = rng.sample(items, TEST_SIZES[tag])
        held_prompts = {i["prompt"] for i in chosen}
        test += chosen
        train += [i for i in items if i["prompt"] not in held_prompts]
    return train, test


def balanced(items: list[dict], per_tag: int, seed: int = 0) -> list[dict]:
    """``per_tag`` lines per tag: large tags subsampled, small ones cycled (repeated prompts), so that a
    sampler uniform over lines is uniform over tags."""
    rng = random.Random(seed)
    out = []
    for tag in TAGS:
        pool = [i for i in items if i["tag"] == tag]
        rng.shuffle(pool)
        out += [pool[k % len(pool)] for k in range(per_tag)] if len(pool) < per_tag else pool[:per_tag]
    return out
