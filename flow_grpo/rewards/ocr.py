"""OCR reward for text rendering: how much of the quoted text in the prompt can be read in the image.

Target: the text between the first pair of double quotes in the prompt (straight "..." or curly “...”).
Recognised: every string the OCR engine reads, joined, with whitespace removed and lower-cased (the target
is normalised the same way). Distance: 0 if the target is a substring of the recognised text, else the
Levenshtein distance between the two, capped at the target's length. Reward: 1 - distance / length, in [0, 1].

Engines: ``rapidocr`` (default; the PyPI package ships PP-OCR detection and recognition models, so it works
offline: ``pip install rapidocr onnxruntime``) and ``paddleocr`` (optional, ``pip install paddleocr``).
"""

from __future__ import annotations

import re

import numpy as np

from flow_grpo.images import to_pil
from flow_grpo.rewards.registry import RewardError, register

QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”')
ENGINES = ("rapidocr", "paddleocr")


def target_text(prompt: str) -> str:
    match = QUOTED.search(prompt)
    if match is None:
        raise ValueError(f"OCR prompt {prompt!r} has no text between double quotes to render")
    return match.group(1) if match.group(1) is not None else match.group(2)


def normalise(text: str) -> str:
    return "".join(text.split()).lower()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def ocr_reward(recognised: list[str], target: str) -> float:
    target = normalise(target)
    if not target:
        return 0.0
    text = normalise("".join(recognised))
    distance = 0 if target in text else min(levenshtein(text, target), len(target))
    return 1.0 - distance / len(target)


def make_engine(engine: str, device: str | None = None):
    """A function from an RGB uint8 array [H, W, 3] to the list of recognised strings."""
    if engine == "rapidocr":
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise RewardError("the ocr reward's default engine needs: pip install rapidocr onnxruntime") from None
        reader = RapidOCR(params={"Global.log_level": "warning"}) if _rapidocr_takes_params() else RapidOCR()

        def read(array):
            result = reader(array)
            return list(result.txts or ()) if result is not None and getattr(result, "txts", None) else []

        return read
    if engine == "paddleocr":
        try:
            from paddleocr import PaddleOCR
        except ImportError:
            raise RewardError("the paddleocr engine needs: pip install paddleocr paddlepaddle") from None
        reader = PaddleOCR(use_angle_cls=False, lang="en")

        def read(array):
            result = reader.ocr(array, cls=False)
            return [line[1][0] for page in (result or []) if page for line in page]

        return read
    raise RewardError(f"unknown OCR engine {engine!r}; valid: {', '.join(ENGINES)}")


def _rapidocr_takes_params() -> bool:
    import inspect

    from rapidocr import RapidOCR

    return "params" in inspect.signature(RapidOCR.__init__).parameters


@register("ocr")
def ocr(engine: str = "rapidocr", device: str | None = None, **_):
    read = make_engine(engine, device)

    def score(images, prompts, metadata):
        targets = [target_text(p) for p in prompts]
        recognised = [read(np.asarray(image)) for image in to_pil(images)]
        scores = np.asarray([ocr_reward(texts, target) for texts, target in zip(recognised, targets)])
        return scores, {"recognised": np.asarray([" | ".join(t) for t in recognised], dtype=object)}

    return score
