"""The shapes world's editing dataset: rendered input scenes, instructions, and the edited scenes' metadata.

Each line of ``<split>_metadata.jsonl``: ``prompt`` (the instruction, e.g. "add a blue square left of the
cross"), ``image`` (the input scene's PNG, relative to the folder), ``tag`` (the edit's kind), ``edit``,
``source`` and ``target`` (objects as ``[shape, colour, cx, cy, size]``) and ``resolution``. Kinds are
balanced: recolour, add and remove in turn.

    python dataset/make_shapes_edits.py [--seed 0] [--train 240] [--test 30] [--out dataset/shapes_edit]
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flow_grpo.shapes.edits import EDIT_KINDS, make_edit, scene_image  # noqa: E402
from flow_grpo.shapes.render import RESOLUTION  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes_edit"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    for split, count in (("train", args.train), ("test", args.test)):
        lines = []
        for i in range(count):
            item = make_edit(rng, EDIT_KINDS[i % len(EDIT_KINDS)])
            name = f"images/{split}_{i:04d}.png"
            scene_image(item["source"]).save(os.path.join(args.out, name))
            lines.append(json.dumps({"prompt": item["prompt"], "image": name, **{k: v for k, v in item.items() if k != "prompt"},
                                     "resolution": RESOLUTION}))
        with open(os.path.join(args.out, f"{split}_metadata.jsonl"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        print(f"wrote {count} {split} edits to {args.out}")


if __name__ == "__main__":
    main()
