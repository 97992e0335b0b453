"""Write the train/test prompt split of the line_shapes toy world.

One held-out prompt per colour, with shapes spread as evenly as possible, so every colour and every shape
is seen in training but the held-out combinations never are:

    python dataset/toy/make_line_shapes_prompts.py --seed 0 --out dataset/toy/line_shapes
"""

import argparse
import os
import random

from flow_grpo.toy.line_shapes import COLOURS, SHAPES, make_prompt


def split(seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    shapes = list(SHAPES) * ((len(COLOURS) + len(SHAPES) - 1) // len(SHAPES))
    rng.shuffle(shapes)
    held_out = {(colour, shape) for colour, shape in zip(COLOURS, shapes)}
    train = [make_prompt(c, s) for c in COLOURS for s in SHAPES if (c, s) not in held_out]
    test = [make_prompt(c, s) for c in COLOURS for s in SHAPES if (c, s) in held_out]
    return train, test


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "line_shapes"))
    args = parser.parse_args()
    train, test = split(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for name, prompts in (("train.txt", train), ("test.txt", test)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as handle:
            handle.write("\n".join(prompts) + "\n")
    print(f"wrote {len(train)} train and {len(test)} test prompts to {args.out}")


if __name__ == "__main__":
    main()
