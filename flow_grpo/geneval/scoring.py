"""GenEval's scoring rules on detected objects, shared by the evaluator and the ``geneval`` reward.

``detections`` maps a class name to its detected objects, most confident first, after the confidence
threshold (0.3; 0.9 for counting prompts) and the per-class cap (16). Colours are classified only for the
objects a rule looks at (``colour_fn``).

- ``evaluate_official`` is the official rule: every ``include`` needs at least ``count`` objects of its class; a
  ``color`` needs that many of them classified as that colour; a ``position`` needs each of them to stand in
  the relation to every object matched by the referenced include (centres compared after shrinking the
  offset by 0.1 x the summed box sizes); any ``exclude`` class seen ``count`` times or more fails.
- ``evaluate_strict``: the same with exact counts (``len == count``), as Flow-GRPO's strict reward.
- ``score`` (partial credit, Flow-GRPO's training reward): the mean over checks of per-check credit: count
  ``1 - |count - found| / count``; colour ``1 - |count - matching| / count`` (0 when the count is wrong);
  position 1 or 0 (0 when the count is wrong). The original appends a 1 after a failed position check as
  well as the 0; here a failed position gives only its 0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from flow_grpo.geneval.metadata import COLORS, TAGS

POSITION_THRESHOLD = 0.1
CONFIDENCE_THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
NOT_THIS_TAG = float("nan")  # per-tag columns of images whose prompt has another tag


@dataclasses.dataclass
class Detection:
    box: Sequence[float]  # x0, y0, x1, y1 in pixels
    score: float = 1.0
    mask: np.ndarray | None = None  # bool [H, W]
    color: str | None = None  # set by detectors that know it (the shapes world); else classified on demand


ColourFn = Callable[[Sequence[Detection], str], list]


def relative_position(a: Detection, b: Detection, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Relations of ``a`` to ``b`` ("left of", "right of", "above", "below"; image y grows downwards)."""
    box_a, box_b = np.asarray(a.box[:4], dtype=float), np.asarray(b.box[:4], dtype=float)
    center_a, center_b = (box_a[:2] + box_a[2:]) / 2, (box_b[:2] + box_b[2:]) / 2
    dim_a, dim_b = np.abs(box_a[2:] - box_a[:2]), np.abs(box_b[2:] - box_b[:2])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _colours(objects, classname, colour_fn):
    if all(o.color is not None for o in objects):
        return [o.color for o in objects]
    if colour_fn is None:
        raise ValueError(f"a colour check on {classname!r} needs a colour classifier")
    return list(colour_fn(objects, classname))


def _position_holds(objects, targets, relation) -> tuple[bool, str]:
    for obj in objects:
        for target in targets:
            relations = relative_position(obj, target)
            if relation not in relations:
                return False, " and ".join(sorted(relations)) or "no clear relation to"
    return True, ""


def evaluate_official(detections: dict, metadata: dict, colour_fn: ColourFn | None = None, strict: bool = False) -> tuple[bool, str]:
    """``(correct, reason)`` under the official rule, or exact counts when ``strict``."""
    correct, reasons, matched_groups = True, [], []
    for req in metadata["include"]:
        classname, count = req["class"], req["count"]
        found_all = detections.get(classname, [])
        found = found_all if strict else found_all[:count]
        matched = len(found) == count if strict else len(found) >= count
        if not matched:
            reasons.append(f"expected {classname}{'==' if strict else '>='}{count}, found {len(found_all)}")
        else:
            if "color" in req:
                colours = _colours(found, classname, colour_fn)
                if colours.count(req["color"]) < count:
                    matched = False
                    others = ", ".join(f"{colours.count(c)} {c}" for c in COLORS if c in colours)
                    reasons.append(f"expected {req['color']} {classname}>={count}, found {colours.count(req['color'])} {req['color']}; and {others}")
            if "position" in req and matched:
                relation, group = req["position"]
                if matched_groups[group] is None:
                    matched = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    holds, found_relation = _position_holds(found, matched_groups[group], relation)
                    if not holds:
                        matched = False
                        reasons.append(f"expected {classname} {relation} target, found {found_relation} target")
        correct = correct and matched
        matched_groups.append(found if matched else None)
    if not strict:
        for req in metadata.get("exclude", []):
            seen = len(detections.get(req["class"], []))
            if seen >= req["count"]:
                correct = False
                reasons.append(f"expected {req['class']}<{req['count']}, found {seen}")
    return correct, "\n".join(reasons)


def evaluate_strict(detections: dict, metadata: dict, colour_fn: ColourFn | None = None) -> tuple[bool, str]:
    return evaluate_official(detections, metadata, colour_fn, strict=True)


def partial_score(detections: dict, metadata: dict, colour_fn: ColourFn | None = None) -> float:
    credits, matched_groups = [], []
    for req in metadata["include"]:
        classname, count = req["class"], req["count"]
        found = detections.get(classname, [])
        credits.append(1 - abs(count - len(found)) / count)
        matched = len(found) == count
        if not matched:
            credits.extend([0.0] * (("color" in req) + ("position" in req)))
        else:
            if "color" in req:
                matching = _colours(found, classname, colour_fn).count(req["color"])
                credits.append(1 - abs(count - matching) / count)
                matched = matching == count
            if "position" in req:
                relation, group = req["position"]
                holds = matched and matched_groups[group] is not None and _position_holds(found, matched_groups[group], relation)[0]
                credits.append(1.0 if holds else 0.0)
                matched = matched and holds
        matched_groups.append(found if matched else None)
    return float(np.mean(credits)) if credits else 0.0


def filter_detections(raw: dict, metadata: dict, confidence=CONFIDENCE_THRESHOLD, counting_confidence=COUNTING_THRESHOLD,
                      max_objects=MAX_OBJECTS) -> dict:
    """Apply the confidence threshold of the prompt's tag and the per-class cap; sort by confidence."""
    threshold = counting_confidence if metadata.get("tag") == "counting" else confidence
    kept = {}
    for classname, objects in raw.items():
        objects = sorted((o for o in objects if o.score > threshold), key=lambda o: -o.score)[:max_objects]
        if objects:
            kept[classname] = objects
    return kept


def score_image(detections: dict, metadata: dict, colour_fn: ColourFn | None = None) -> dict:
    """Everything the evaluator and the reward report for one image."""
    correct, reason = evaluate_official(detections, metadata, colour_fn)
    strict_correct, strict_reason = evaluate_strict(detections, metadata, colour_fn)
    result = {
        "tag": metadata.get("tag"),
        "correct": bool(correct),
        "strict_correct": bool(strict_correct),
        "score": partial_score(detections, metadata, colour_fn),
        "reason": reason,
        "strict_reason": strict_reason,
        "details": {k: [list(map(float, o.box[:4])) for o in v] for k, v in detections.items()},
    }
    for tag in TAGS:
        result[f"tag_{tag}"] = float(correct) if metadata.get("tag") == tag else NOT_THIS_TAG
    return result
