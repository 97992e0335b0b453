"""GenEval's prompt templates and their metadata, with English articles, plurals and numbers in words."""

from __future__ import annotations

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
IRREGULAR_PLURALS = {
    "person": "people", "mouse": "mice", "computer mouse": "computer mice", "knife": "knives", "sheep": "sheep",
    "skis": "skis", "scissors": "scissors", "broccoli": "broccoli", "bus": "buses", "couch": "couches",
    "sandwich": "sandwiches", "toothbrush": "toothbrushes", "wine glass": "wine glasses", "glass": "glasses",
    "cross": "crosses", "hair drier": "hair driers", "bench": "benches", "sports ball": "sports balls",
    "tv": "tvs", "hot dog": "hot dogs", "dining table": "dining tables",
}


def plural(noun: str) -> str:
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def article(phrase: str) -> str:
    return "an" if phrase[0].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def count_phrase(count: int, noun: str) -> str:
    if not 1 <= count < len(NUMBER_WORDS):
        raise ValueError(f"counts in words go from 1 to {len(NUMBER_WORDS) - 1}, got {count}")
    return f"{NUMBER_WORDS[count]} {noun if count == 1 else plural(noun)}"


def _lead(lead: str, rest: str) -> str:
    return f"{lead} {rest}" if lead else rest


def single_object(cls: str, lead: str = "a photo of") -> dict:
    return {"tag": "single_object", "include": [{"class": cls, "count": 1}], "prompt": _lead(lead, with_article(cls))}


def two_object(a: str, b: str, lead: str = "a photo of") -> dict:
    return {"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
            "prompt": _lead(lead, f"{with_article(a)} and {with_article(b)}")}


def counting(cls: str, count: int, lead: str = "a photo of") -> dict:
    return {"tag": "counting", "include": [{"class": cls, "count": count}], "exclude": [{"class": cls, "count": count + 1}],
            "prompt": _lead(lead, count_phrase(count, cls))}


def colors(cls: str, color: str, lead: str = "a photo of") -> dict:
    return {"tag": "colors", "include": [{"class": cls, "count": 1, "color": color}], "prompt": _lead(lead, with_article(color + " " + cls))}


def position(a: str, relation: str, b: str, lead: str = "a photo of") -> dict:
    """``a`` is ``relation`` ``b``: the reference ``b`` is include 0, ``a`` carries the position."""
    return {"tag": "position", "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
            "prompt": _lead(lead, f"{with_article(a)} {relation} {with_article(b)}")}


def color_attr(a: str, color_a: str, b: str, color_b: str, lead: str = "a photo of") -> dict:
    return {"tag": "color_attr",
            "include": [{"class": a, "count": 1, "color": color_a}, {"class": b, "count": 1, "color": color_b}],
            "prompt": _lead(lead, f"{with_article(color_a + ' ' + a)} and {with_article(color_b + ' ' + b)}")}
