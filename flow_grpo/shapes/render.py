"""Scenes of flat coloured shapes on a grey background, drawn from GenEval metadata.

A scene is a list of objects ``(shape, colour, centre_x, centre_y, size)`` in pixels; ``render`` draws it
without anti-aliasing (every pixel is the background or one palette colour), so the detector's ground truth
is exact. ``sample_scene`` draws a random scene that satisfies a metadata object (counts, colours,
relations), with sizes and positions that vary and a gap between objects.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
# GenEval's ten colours as flat RGB values, far enough apart to be told apart after blur
PALETTE = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (240, 225, 30),
    "green": (30, 160, 60),
    "blue": (40, 80, 230),
    "purple": (130, 40, 170),
    "pink": (250, 140, 200),
    "brown": (120, 70, 25),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
BACKGROUND = (128, 128, 128)
RESOLUTION = 32
SIZE_RANGE = (8, 12)  # object width in pixels
GAP = 3  # pixels between any two objects (and from the border)


def shape_polygon(shape: str, cx: float, cy: float, size: float):
    """The shape's outline (a polygon, or an ellipse box for circles) centred on (cx, cy), ``size`` wide."""
    h = size / 2
    if shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # apex up
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if shape == "cross":
        t = size / 8  # half the arm thickness: arms a quarter of the width
        return [(cx - t, cy - h), (cx + t, cy - h), (cx + t, cy - t), (cx + h, cy - t), (cx + h, cy + t), (cx + t, cy + t),
                (cx + t, cy + h), (cx - t, cy + h), (cx - t, cy + t), (cx - h, cy + t), (cx - h, cy - t), (cx - t, cy - t)]
    if shape == "circle":
        return [(cx - h, cy - h), (cx + h, cy + h)]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float, fill) -> None:
    # PIL's polygon and ellipse fill pixels whose centres fall inside the outline; coordinates are pixel
    # corners, so subtract half a pixel to centre the shape on (cx, cy)
    points = [(x - 0.5, y - 0.5) for x, y in shape_polygon(shape, cx, cy, size)]
    if shape == "circle":
        draw.ellipse([points[0], points[1]], fill=fill)
    else:
        draw.polygon(points, fill=fill)


def render(objects, resolution: int = RESOLUTION) -> Image.Image:
    image = Image.new("RGB", (resolution, resolution), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape, colour, cx, cy, size in objects:
        draw_shape(draw, shape, cx, cy, size, PALETTE[colour])
    return image


def _box(cx, cy, size):
    h = size / 2
    return (cx - h, cy - h, cx + h, cy + h)


def _apart(a, b) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _relation_holds(a_box, b_box, relation) -> bool:
    """``relation`` holds clearly: by GenEval's rule with a 3x wider margin, and along the main direction
    (the offset on the relation's axis is at least 1.5 x the other), so pixel rounding cannot undo it."""
    from flow_grpo.geneval.scoring import Detection, relative_position

    dx = (a_box[0] + a_box[2] - b_box[0] - b_box[2]) / 2
    dy = (a_box[1] + a_box[3] - b_box[1] - b_box[3]) / 2
    main, other = (abs(dx), abs(dy)) if relation in ("left of", "right of") else (abs(dy), abs(dx))
    return main >= 1.5 * other and relation in relative_position(Detection(a_box), Detection(b_box), threshold=0.3)


def sample_scene(metadata: dict, rng: random.Random, resolution: int = RESOLUTION, max_tries: int = 2000):
    """Objects satisfying ``metadata`` exactly: the included counts (no more), colours and relations.

    Shapes without a colour requirement get a random colour. Raises ``ValueError`` if no layout is found.
    """
    wanted = []
    for index, req in enumerate(metadata["include"]):
        for _ in range(req["count"]):
            wanted.append((index, req["class"], req.get("color")))
    for _ in range(max_tries):
        objects, boxes, groups = [], [], {}
        ok = True
        for index, shape, colour in wanted:
            size = rng.randint(*SIZE_RANGE)
            low, high = GAP + size / 2, resolution - GAP - size / 2
            placed = False
            for _ in range(50):
                cx, cy = rng.randint(math.ceil(low), math.floor(high)), rng.randint(math.ceil(low), math.floor(high))
                box = _box(cx, cy, size)
                if not all(_apart(box, other) for other in boxes):
                    continue
                req = metadata["include"][index]
                if "position" in req:
                    relation, target = req["position"]
                    if not all(_relation_holds(box, other, relation) for other in groups.get(target, [])):
                        continue
                placed = True
                break
            if not placed:
                ok = False
                break
            boxes.append(box)
            groups.setdefault(index, []).append(box)
            objects.append((shape, colour or rng.choice(list(PALETTE)), cx, cy, size))
        if ok:
            order = list(range(len(objects)))
            rng.shuffle(order)  # drawing order carries no information
            return [objects[i] for i in order]
    raise ValueError(f"no layout found for {metadata['prompt']!r}")
