"""The shapes world's editing task: instructions on rendered scenes, with the edited scene as ground truth.

A source scene holds one to three objects of different shapes (so "the circle" names one object). Three
kinds of edit, each an instruction and the target scene it should produce:

- ``recolour``: "make the circle red": that object in a new colour, everything else untouched;
- ``add``: "add a blue square left of the cross": a new object of a shape the scene lacks, placed so that
  the relation clearly holds (the world's rule, ``render._relation_holds``) and apart from the others;
- ``remove``: "remove the triangle" (scenes of two or three objects): that object gone.

:func:`check_edit` scores an image against an edit with the shapes detector: the edit done (the recoloured
object found where it was in its new colour; the added object found, of its shape and colour, in the relation
to the anchor as detected; the removed shape absent), and what the instruction does not touch preserved (each
other source object found within ``tolerance`` pixels of its place, in its shape and colour; objects
that should not be there count against it).
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np

from flow_grpo.geneval.metadata import COLORS, RELATIONS
from flow_grpo.geneval.scoring import Detection, relative_position
from flow_grpo.shapes.render import GAP, RESOLUTION, SHAPES, SIZE_RANGE, _apart, _box, _relation_holds, render, sample_scene

EDIT_KINDS = ("recolour", "add", "remove")


def _scene(rng: random.Random, count: int, resolution: int) -> list[list]:
    shapes = rng.sample(SHAPES, count)
    metadata = {"prompt": " and ".join(shapes), "include": [{"class": s, "count": 1, "color": rng.choice(COLORS)} for s in shapes]}
    return [list(o) for o in sample_scene(metadata, rng, resolution)]


def _place(rng: random.Random, objects: list[list], anchor: list, relation: str, resolution: int, tries: int = 400):
    """A centre and size for a new object in ``relation`` to ``anchor`` and apart from every object, or None."""
    anchor_box = _box(*anchor[2:5])
    boxes = [_box(*o[2:5]) for o in objects]
    for _ in range(tries):
        size = rng.randint(*SIZE_RANGE)
        low, high = GAP + size / 2, resolution - GAP - size / 2
        cx, cy = rng.randint(math.ceil(low), math.floor(high)), rng.randint(math.ceil(low), math.floor(high))
        box = _box(cx, cy, size)
        if all(_apart(box, other) for other in boxes) and _relation_holds(box, anchor_box, relation):
            return cx, cy, size
    return None


def make_edit(rng: random.Random, kind: str, resolution: int = RESOLUTION) -> dict:
    """One edit of ``kind`` on a random scene: ``{"prompt", "tag", "edit", "source", "target"}`` (objects as
    ``[shape, colour, cx, cy, size]``)."""
    for _ in range(200):
        if kind == "recolour":
            source = _scene(rng, rng.randint(1, 3), resolution)
            index = rng.randrange(len(source))
            shape, old = source[index][:2]
            colour = rng.choice([c for c in COLORS if c != old])
            target = [list(o) for o in source]
            target[index][1] = colour
            edit = {"kind": kind, "shape": shape, "color": colour}
            prompt = f"make the {shape} {colour}"
        elif kind == "remove":
            source = _scene(rng, rng.randint(2, 3), resolution)
            index = rng.randrange(len(source))
            shape = source[index][0]
            target = [list(o) for i, o in enumerate(source) if i != index]
            edit = {"kind": kind, "shape": shape}
            prompt = f"remove the {shape}"
        elif kind == "add":
            source = _scene(rng, rng.randint(1, 2), resolution)
            anchor = rng.choice(source)
            shape = rng.choice([s for s in SHAPES if s not in {o[0] for o in source}])
            colour, relation = rng.choice(COLORS), rng.choice(RELATIONS)
            placed = _place(rng, source, anchor, relation, resolution)
            if placed is None:
                continue
            target = [list(o) for o in source] + [[shape, colour, *placed]]
            edit = {"kind": kind, "shape": shape, "color": colour, "relation": relation, "anchor": anchor[0]}
            prompt = f"add a {colour} {shape} {relation} the {anchor[0]}"
        else:
            raise ValueError(f"unknown edit kind {kind!r}; valid: {', '.join(EDIT_KINDS)}")
        return {"prompt": prompt, "tag": kind, "edit": edit, "source": source, "target": target}
    raise ValueError(f"no {kind} edit found in 200 scenes")


def scene_image(objects, resolution: int = RESOLUTION):
    return render([tuple(o) for o in objects], resolution)


@dataclasses.dataclass
class EditCheck:
    edit: float  # 1 if the instructed change is in the image, else 0
    preservation: float  # untouched source objects found in place / (their number + unexpected objects)
    correct: bool  # the edit done, everything else in place, nothing extra

    @property
    def score(self) -> float:
        """``edit x preservation``: 1 for the edited scene, 0 for an unedited one."""
        return self.edit * self.preservation


def _centre(detection: Detection) -> np.ndarray:
    box = np.asarray(detection.box[:4], dtype=float)
    return (box[:2] + box[2:]) / 2


def _find(detections: list[Detection], shape_of: dict, obj, tolerance: float):
    """The detection of ``obj``'s shape and colour nearest its centre, within ``tolerance`` pixels, or None."""
    best, best_distance = None, tolerance
    for detection in detections:
        if shape_of[id(detection)] != obj[0] or detection.color != obj[1]:
            continue
        distance = float(np.linalg.norm(_centre(detection) - np.asarray(obj[2:4], dtype=float)))
        if distance <= best_distance:
            best, best_distance = detection, distance
    return best


def check_edit(found: dict[str, list[Detection]], metadata: dict, tolerance: float = 2.5) -> EditCheck:
    """Score detections ``found`` (shape -> detections, as ``ShapesDetector.analyse``) against an edit's metadata."""
    edit, source, target = metadata["edit"], metadata["source"], metadata["target"]
    detections = [d for shape_detections in found.values() for d in shape_detections]
    shape_of = {id(d): shape for shape, shape_detections in found.items() for d in shape_detections}
    kind, shape = edit["kind"], edit["shape"]
    untouched = [o for o in source if o[0] != shape]  # every edit names a shape that at most one object has
    used = set()
    preserved = 0
    for obj in untouched:
        match = _find([d for d in detections if id(d) not in used], shape_of, obj, tolerance)
        if match is not None:
            used.add(id(match))
            preserved += 1
    done = False
    if kind == "recolour":
        edited = next(o for o in target if o[0] == shape)
        match = _find([d for d in detections if id(d) not in used], shape_of, edited, tolerance)
        if match is not None:
            used.add(id(match))
            done = True
    elif kind == "remove":
        done = not found.get(shape)
    elif kind == "add":
        anchor_obj = next(o for o in source if o[0] == edit["anchor"])
        anchor = _find(detections, shape_of, anchor_obj, tolerance)
        for detection in detections:
            if id(detection) in used or shape_of[id(detection)] != shape or detection.color != edit["color"]:
                continue
            if anchor is not None and edit["relation"] in relative_position(detection, anchor):
                used.add(id(detection))
                done = True
                break
    else:
        raise ValueError(f"unknown edit kind {kind!r}; valid: {', '.join(EDIT_KINDS)}")
    extra = len(detections) - len(used)
    preservation = preserved / (len(untouched) + extra) if untouched or extra else 1.0
    return EditCheck(edit=float(done), preservation=preservation, correct=done and preserved == len(untouched) and extra == 0)
