"""Write the PickScore task's prompt set, from Pick-a-Pic's captions or from this project's own generator.

    python dataset/make_pickscore_prompts.py                                   # the shipped set (generated)
    python dataset/make_pickscore_prompts.py --source pickapic --dataset /data/pickapic_v1   # a saved dataset
    python dataset/make_pickscore_prompts.py --source pickapic --dataset yuvalkirstain/pickapic_v1 --split train

The paper's PickScore task (Flow-GRPO: 21.72 -> 23.31 on SD3.5-M) trains on about 25,000 Pick-a-Pic captions
and tests on 2,048. ``--source pickapic`` reads the captions with the ``datasets`` library (``pip install
datasets``): a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, or a hub name when
the machine can reach the hub; captions are stripped, whitespace collapsed, empty ones dropped and duplicates
removed (case-insensitive), then the unique captions are shuffled with the seed and split, so no test caption
is a train caption. ``--source generated`` (the default, shipped in ``dataset/pickscore/``) composes prompts
from subjects x settings x styles x details written here, so the config starts offline; its split is by
prompt too. Both are deterministic for a seed.
"""

from __future__ import annotations

import argparse
import os
import random
import re

SUBJECTS = """
a red fox|an old lighthouse keeper|a samurai cat|an astronaut riding a horse|a cozy cottage|a dragon made of glass
a steampunk owl|a little girl with a yellow umbrella|a giant tortoise carrying a city|a robot gardener|a jazz band of frogs
a floating castle|a vintage motorcycle|a bowl of ramen|a cup of coffee with latte art|a snow leopard|a koi pond
a knight in shining armor|a witch brewing potions|a tiny house on wheels|a humpback whale|a field of sunflowers
a cyberpunk street vendor|a Victorian greenhouse|an ancient library|a hot air balloon festival|a lone wolf
a pirate ship in a bottle|a bonsai tree|a crystal cave|a sleeping kitten|a golden retriever puppy|a mechanical heart
a mermaid reading a book|a wizard's tower|a desert caravan|a mountain monastery|a neon koi fish|a polar bear cub
a chef tossing pizza dough|a ballerina made of smoke|a treehouse village|a train crossing a stone bridge
a lighthouse in a storm|a stack of pancakes|a vintage typewriter|a hummingbird at a flower|a snowy owl
an elephant in a tutu|a futuristic race car|a medieval market|a paper boat on a puddle|a garden gnome
a raccoon astronaut|a portrait of an old fisherman|a shiba inu wearing sunglasses|a bioluminescent jellyfish
a cathedral made of ice|a hedgehog in a teacup|a giant octopus attacking a ship|a street musician
a family of ducks|a chess game between a cat and a dog|a phoenix rising|a zen rock garden|a lantern festival
a marching band of penguins|a magical forest spirit|a submarine exploring a reef|a retro diner at night
a basket of fresh bread|a skateboarding grandma|a fantasy map|a cottage in a teapot|a panda eating bamboo
a viking longship|a clockwork city|a tiger in tall grass|a bouquet of wildflowers|a cat wearing a wizard hat
a lonely robot on the moon|a bustling harbor|a haunted mansion|a sushi platter|a giraffe in a library
""".strip().replace("\n", "|").split("|")

SETTINGS = """
at sunset|at dawn|under a starry sky|in the rain|in a snowstorm|on a misty morning|in a neon-lit city|in a dense jungle
on a quiet beach|on the surface of Mars|in an enchanted forest|in a cozy living room|in a busy market|underwater
in the clouds|on a mountain peak|in a desert at noon|in autumn leaves|in spring blossoms|in a sci-fi laboratory
in a medieval village|on a rooftop|in a field of lavender|by a frozen lake|inside a glass dome|in a candlelit room
during a thunderstorm|in golden hour light|at the edge of the world|in a floating garden|on a rainy street corner
in a Japanese garden|in an art deco hall|in a post-apocalyptic city|in a fairy tale kingdom|on a train platform
""".strip().replace("\n", "|").split("|")

STYLES = """
digital art|oil painting|watercolor|studio photograph|35mm film photo|concept art|Studio Ghibli style|pixel art
ukiyo-e woodblock print|charcoal sketch|3D render|claymation|isometric illustration|art nouveau poster
impressionist painting|low poly art|comic book style|children's book illustration|cinematic still|vaporwave
ink and wash|stained glass|paper cut-out art|surrealist painting|pop art|matte painting|line art|pastel drawing
macro photograph|polaroid photo|renaissance painting|synthwave art|cel shaded animation|tilt-shift photo
""".strip().replace("\n", "|").split("|")

DETAILS = """
highly detailed|soft lighting|dramatic lighting|vibrant colors|muted tones|intricate details|8k|sharp focus
bokeh|wide angle|symmetrical composition|whimsical|moody atmosphere|trending on artstation|volumetric light
cozy atmosphere|epic scale|minimalist|golden hour|rim lighting
""".strip().replace("\n", "|").split("|")


def generated_prompt(rng: random.Random) -> str:
    parts = [f"{rng.choice(SUBJECTS)} {rng.choice(SETTINGS)}", rng.choice(STYLES)]
    parts += rng.sample(DETAILS, rng.randint(0, 2))
    return ", ".join(parts)


def generated_prompts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    prompts, seen = [], set()
    while len(prompts) < count:
        prompt = generated_prompt(rng)
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


def clean_captions(captions) -> list[str]:
    """Stripped, whitespace-collapsed, non-empty captions without duplicates (case-insensitive), in order."""
    unique, seen = [], set()
    for caption in captions:
        if not isinstance(caption, str):
            continue
        caption = re.sub(r"\s+", " ", caption).strip()
        if caption and caption.lower() not in seen:
            seen.add(caption.lower())
            unique.append(caption)
    return unique


def pickapic_captions(dataset: str, split: str, column: str) -> list[str]:
    """The captions of a Pick-a-Pic dataset saved with ``save_to_disk`` (a folder) or named on the hub."""
    try:
        import datasets
    except ImportError:
        raise SystemExit("error: --source pickapic needs the datasets library: pip install datasets") from None
    if os.path.isdir(dataset):
        data = datasets.load_from_disk(dataset)
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise SystemExit(f"error: {dataset!r} has splits {sorted(data)}, not {split!r}")
            data = data[split]
    else:
        data = datasets.load_dataset(dataset, split=split)
    if column not in data.column_names:
        raise SystemExit(f"error: {dataset!r} has no column {column!r}; columns: {', '.join(data.column_names)}")
    return list(data[column])


def split_unique(prompts: list[str], seed: int, num_train: int, num_test: int) -> tuple[list[str], list[str]]:
    """Shuffle the unique prompts and cut: the first ``num_test`` are the test split, the next ``num_train``
    (all the rest when 0) the train split."""
    if len(prompts) <= num_test:
        raise SystemExit(f"error: {len(prompts)} unique prompts, not enough for a test split of {num_test}")
    order = list(prompts)
    random.Random(seed).shuffle(order)
    test, rest = order[:num_test], order[num_test:]
    return (rest[:num_train] if num_train else rest), test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("generated", "pickapic"), default="generated")
    parser.add_argument("--dataset", default="", help="pickapic: a save_to_disk folder or a hub name")
    parser.add_argument("--split", default="train", help="pickapic: the split to read")
    parser.add_argument("--column", default="caption", help="pickapic: the caption column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=25_000, help="train prompts (0: every remaining caption)")
    parser.add_argument("--test", type=int, default=2_048)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "pickscore"))
    args = parser.parse_args(argv)
    if args.source == "pickapic":
        if not args.dataset:
            parser.error("--source pickapic needs --dataset (a save_to_disk folder or a hub name)")
        prompts = clean_captions(pickapic_captions(args.dataset, args.split, args.column))
    else:
        prompts = generated_prompts(args.seed, (args.train or 25_000) + args.test)
    train, test = split_unique(prompts, args.seed, args.train, args.test)
    os.makedirs(args.out, exist_ok=True)
    for name, split in (("train", train), ("test", test)):
        with open(os.path.join(args.out, f"{name}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(split) + "\n")
    print(f"{len(train)} train and {len(test)} test prompts ({args.source}) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
