"""GenEval metadata: one JSON object per line, read unchanged.

``{"tag": ..., "include": [{"class", "count", "color"?, "position"?: [relation, index]}], "exclude"?: [{"class",
"count"}], "prompt": ...}``. ``position`` is relative to the objects matched by an earlier ``include`` entry
(its index). Malformed lines raise ``MetadataError`` naming the file, the line and the field.
"""

from __future__ import annotations

import json

from flow_grpo.errors import InputError

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


class MetadataError(InputError):
    """A metadata line that does not follow the GenEval format; the message names where and what."""


def validate(item, where: str = "metadata") -> dict:
    """Check one metadata object; returns it unchanged."""

    def fail(message):
        raise MetadataError(f"{where}: {message}")

    if not isinstance(item, dict):
        fail(f"expected a JSON object, got {type(item).__name__}")
    for field in ("tag", "include", "prompt"):
        if field not in item:
            fail(f"missing field {field!r}")
    if not isinstance(item["prompt"], str):
        fail("field 'prompt' must be a string")
    if not isinstance(item["tag"], str):
        fail("field 'tag' must be a string")
    if not isinstance(item["include"], list) or not item["include"]:
        fail("field 'include' must be a non-empty list")
    for i, entry in enumerate(item["include"]):
        if not isinstance(entry, dict):
            fail(f"include[{i}] must be an object")
        if not isinstance(entry.get("class"), str):
            fail(f"include[{i}].class must be a string")
        count = entry.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            fail(f"include[{i}].count must be a positive integer, got {count!r}")
        if "color" in entry and not isinstance(entry["color"], str):
            fail(f"include[{i}].color must be a string")
        if "position" in entry:
            position = entry["position"]
            if (not isinstance(position, list) or len(position) != 2 or position[0] not in RELATIONS
                    or not isinstance(position[1], int) or not 0 <= position[1] < i):
                fail(f"include[{i}].position must be [relation, index of an earlier include] with relation in {RELATIONS}, got {position!r}")
    for i, entry in enumerate(item.get("exclude", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
            fail(f"exclude[{i}].class must be a string")
        count = entry.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            fail(f"exclude[{i}].count must be a positive integer, got {count!r}")
    return item


def read_metadata(path: str) -> list[dict]:
    from flow_grpo.data import iter_jsonl

    items = [validate(item, f"{path}:{number}") for number, item in iter_jsonl(path, MetadataError)]
    if not items:
        raise MetadataError(f"{path} holds no metadata lines")
    return items


def write_metadata(path: str, items) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(validate(item)) + "\n")
