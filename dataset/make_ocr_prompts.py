"""Write the OCR task's prompt set: scenes with exactly one "quoted" text of 1-4 words to render.

    python dataset/make_ocr_prompts.py                      # dataset/ocr/train.txt (20,000) and test.txt (1,000)
    python dataset/make_ocr_prompts.py --seed 1 --train 5000 --test 500 --out /tmp/ocr

The paper's OCR task (Flow-GRPO: 0.59 -> 0.92 on SD3.5-M) trains on about 20,000 prompts and tests on about
1,000, each asking for one short text on an object. This generator writes its own: a text from word lists and
phrase patterns of 1 to 4 words, set on a surface (a sign, label, screen, book cover, garment, ...) in a place,
with a lettering and a picture style, by one of several sentence templates. Every text is used once, and the
test texts are disjoint from the train texts (the split is by text). Deterministic for a seed. The OCR reward
(``flow_grpo.rewards.ocr``) reads the first quoted text of a prompt.
"""

from __future__ import annotations

import argparse
import os
import random

ADJECTIVES = """
fresh hot cold golden silver quiet happy lucky wild sweet bright dark little big tiny grand royal secret hidden
lost open free simple modern classic vintage urban rustic cozy sunny rainy snowy windy stormy misty blue green
red yellow purple orange pink black white crimson emerald velvet electric cosmic lunar solar northern southern
eastern western local daily weekly midnight morning evening endless gentle brave bold calm clever crazy dreamy
eternal fancy friendly gloomy honest humble jolly kind lively magic mellow noble odd proud rapid rare rich
silent smart smooth spicy steady strong tender tidy tropical true vivid warm wise young ancient
final first second hungry thirsty sleepy busy lazy slow fast clean organic handmade homemade
""".split()

NOUNS = """
coffee bakery bread pizza garden library market studio gallery theater museum harbor station bridge tower
river forest mountain ocean island valley desert meadow village city street avenue corner kitchen cafe bistro
diner tavern hotel motel inn cabin lodge farm orchard vineyard brewery winery bookstore florist pharmacy
clinic school college academy workshop factory warehouse garage laundry salon barber tailor jeweler pottery
candle soap honey cheese chocolate cookie donut bagel taco noodle dumpling sushi burger salad soup tea juice
lemonade smoothie wine cider music jazz blues rock dance cinema radio podcast comics records vinyl books maps
poems stories dreams ideas secrets wonders stars moon sun sky clouds rain snow thunder lightning wind waves
tides shells pebbles feathers flowers roses tulips daisies lilies orchids cactus ferns maple oak pine willow
cedar birch fox wolf bear owl hawk eagle raven crow sparrow rabbit deer otter whale dolphin shark turtle frog
lion tiger panda koala zebra giraffe camel horse pony goat sheep cow pig duck goose swan parrot penguin robot
rocket planet comet galaxy nebula voyage journey adventure quest mission harvest festival carnival parade
picnic party wedding reunion concert recital marathon race league club team crew tribe family friends
neighbors workshop lab bakehouse smokehouse greenhouse lighthouse treehouse playground skatepark arcade
bowling diner boutique outlet emporium depot bazaar pantry cellar attic porch balcony rooftop courtyard
""".split()

VERBS = """
save find keep stay follow trust build make bake brew read write sing dance dream explore discover imagine
create share grow plant protect recycle reuse breathe relax smile laugh listen believe begin celebrate
welcome visit enjoy taste try choose vote join drive walk run ride swim climb fly sail wander travel rest
remember forgive learn teach cook eat drink think play shop reserve return borrow lend open close push pull
""".split()

NAMES = """
Maria Joe Anna Leo Nora Sam Ivy Max Ruby Hugo Lily Omar Zoe Felix Clara Theo Mila Oscar Luna Finn Eva Jack
Ada Milo Rosa Ezra Iris Otto Nina Caleb Vera Jonah Elsa Arlo Greta Silas Hazel Jude Esme Rafael Olive Amir
Lena Marco Tess Ravi Yara Kai Dora Abe Grace Hank June Kofi Lucia Mateo Noor Pablo Quinn Rhea Saul Uma Vince
Wren Xena Yusuf Zara Bruno Cora Dante Edith Frida Gus Hilda Igor Juno Karl Lotte Moe Nell Orla Pia Rex
""".split()

SURFACES = [
    "a wooden sign", "a neon sign", "a storefront banner", "a chalkboard menu", "a street sign", "a road sign",
    "a billboard", "a movie poster", "a concert poster", "a protest placard", "a shop window decal", "a door plaque",
    "a sandwich board", "a bus destination display", "a train station departure board", "a subway tile wall",
    "a coffee cup sleeve", "a takeaway cup", "a glass jar label", "a wine bottle label", "a cereal box",
    "a candy wrapper", "a tin can label", "a ceramic mug", "a birthday cake", "a cookie", "a gift tag",
    "a greeting card", "a wedding invitation", "a postcard", "a book cover", "a magazine cover", "a vinyl record sleeve",
    "a notebook cover", "a sticky note", "a whiteboard", "a laptop screen", "a phone screen", "a tablet screen",
    "a smartwatch face", "an arcade machine screen", "a T-shirt", "a hoodie", "a baseball cap", "a tote bag",
    "a scarf", "a sports jersey", "an apron", "a backpack patch", "a name badge", "a museum placard",
    "a concert ticket", "a scoreboard", "a hot air balloon", "a kite", "a surfboard", "a skateboard deck",
    "a food truck", "a delivery van", "a sailboat hull", "a mailbox", "a doormat", "a pillow", "a flag",
    "a graffiti wall", "a brick wall mural", "a stone monument", "a trophy plate",
    "an old typewriter page", "a parchment scroll", "a neon-lit cinema marquee", "a lighthouse wall",
    "a bakery box", "a pizza box", "a fortune cookie slip", "a luggage tag", "a passport stamp", "a license badge",
]

PLACES = [
    "on a busy city street", "in a cozy cafe", "at a seaside boardwalk", "in a quiet library", "at a night market",
    "in a sunlit kitchen", "on a mountain trail", "in a snowy village", "at a train station", "in a neon-lit alley",
    "on a wooden desk", "in a flower shop", "at a farmers market", "on a rainy sidewalk", "in a retro diner",
    "in a modern office", "on a beach at sunset", "in a garden full of tulips", "at a music festival",
    "in a children's classroom", "on a kitchen counter", "in a bookstore window", "at a country fair",
    "in a subway car", "on a rooftop terrace", "in a dusty attic", "at a harbor at dawn", "in a science lab",
    "on a picnic blanket", "in a desert town", "in a bright art studio", "at a stadium", "in a forest clearing",
    "on a snowy porch", "in a vintage record shop", "in a hotel lobby", "at an airport gate", "on a city bus",
]

LETTERING = [
    "in bold red letters", "in elegant gold script", "in hand-painted white letters", "in chalk",
    "in glowing pink neon", "in blue block capitals", "in a playful handwritten font", "in black serif type",
    "in embroidered thread", "in stencil letters", "in retro bubble letters", "in thin silver letters",
    "in carved wooden letters", "in bright yellow paint", "in a bold sans-serif font", "in gothic blackletter",
    "in colorful marker", "in pixel letters", "in embossed metal letters", "in green cursive",
]

STYLES = [
    "A photo of", "A close-up photo of", "A watercolor illustration of", "A 3D render of", "A flat vector illustration of",
    "A vintage photograph of", "An oil painting of", "A cinematic shot of", "A pixel art image of", "A pencil sketch of",
    "A product photo of", "A wide-angle photo of", "A minimalist poster of", "A cartoon drawing of", "A studio photo of",
]

TEMPLATES = [
    '{style} {surface} {place} that reads "{text}" {lettering}.',
    '{style} {surface} {place}, with the text "{text}" written {lettering}.',
    '{style} {surface} that says "{text}" {lettering}, {place}.',
    '{style} {surface} {place} showing the words "{text}".',
    '{style} {surface} printed with "{text}" {lettering}.',
    '{style} {surface} {place}; the text on it says "{text}".',
    '"{text}" written {lettering} on {surface} {place}, {style_lower}',
    '{style} {surface} {place} with "{text}" on it.',
]


def _title(words: list[str]) -> str:
    small = {"the", "of", "and", "a", "your", "our"}
    return " ".join(w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def random_text(rng: random.Random) -> str:
    """A text of 1 to 4 words from one of the phrase patterns."""
    adj, noun, verb, name = (rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), rng.choice(NAMES))
    other = rng.choice(NOUNS)
    patterns = [
        lambda: [noun],
        lambda: [verb],
        lambda: [adj, noun],
        lambda: [verb, noun],
        lambda: [noun, other],
        lambda: [f"{name}'s", noun],
        lambda: ["the", adj, noun],
        lambda: [verb, "the", noun],
        lambda: [noun, "&", other],
        lambda: [adj, noun, str(rng.randint(1, 99))],
        lambda: [noun, "since", str(rng.randint(1920, 2024))],
        lambda: [verb, "your", adj, noun],
        lambda: ["the", noun, "of", other],
        lambda: [name, "and", rng.choice(NAMES)],
        lambda: [f"{name}'s", adj, noun],
        lambda: [adj, noun, other],
    ]
    return _title(rng.choice(patterns)())


def prompt_for(text: str, rng: random.Random) -> str:
    style = rng.choice(STYLES)
    sentence = rng.choice(TEMPLATES).format(
        style=style, style_lower=style[0].lower() + style[1:].replace(" of", "") + ".", surface=rng.choice(SURFACES),
        place=rng.choice(PLACES), text=text, lettering=rng.choice(LETTERING),
    )
    return sentence[0].upper() + sentence[1:]


def make_splits(seed: int, num_train: int, num_test: int) -> tuple[list[str], list[str]]:
    """Prompts for ``num_train + num_test`` distinct texts; the test texts appear in no train prompt."""
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(texts) < num_train + num_test:
        attempts += 1
        if attempts > 50 * (num_train + num_test):
            raise RuntimeError(f"the word lists give fewer than {num_train + num_test} distinct texts")
        text = random_text(rng)
        if text.lower() not in seen:
            seen.add(text.lower())
            texts.append(text)
    rng.shuffle(texts)
    test_texts, train_texts = texts[:num_test], texts[num_test:]
    return [prompt_for(t, rng) for t in train_texts], [prompt_for(t, rng) for t in test_texts]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=1_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "ocr"))
    args = parser.parse_args(argv)
    train, test = make_splits(args.seed, args.train, args.test)
    os.makedirs(args.out, exist_ok=True)
    for name, prompts in (("train", train), ("test", test)):
        with open(os.path.join(args.out, f"{name}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(prompts) + "\n")
    print(f"{len(train)} train and {len(test)} test prompts in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
