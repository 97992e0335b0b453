"""The analytic detector of the shapes world: colour segmentation, connected components, shape by geometry.

1. Foreground: pixels farther than ``background_threshold`` (RGB distance) from the grey background.
2. Objects: 8-connected components of the foreground with at least ``min_area`` pixels (smaller specks are
   counted as noise, see ``scene_stats``).
3. Colour: the palette colour nearest to the component's median colour.
4. Shape: the component's occupancy of its bounding box, resampled to 8 x 8, is compared with exemplars of
   each shape (rendered at every size and half-pixel offset), adding a penalty for a different bounding-box
   aspect ratio; the nearest exemplar's shape wins, and 1 - the distance is the detection's confidence (1
   for a cleanly drawn shape).

Detections carry their colour, so GenEval colour checks need no classifier.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PIL import Image, ImageDraw

from flow_grpo.geneval.scoring import Detection
from flow_grpo.shapes.render import BACKGROUND, PALETTE, SHAPES, SIZE_RANGE, draw_shape

PALETTE_NAMES = list(PALETTE)
PALETTE_RGB = np.asarray([PALETTE[name] for name in PALETTE_NAMES], dtype=np.float32)


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as an array of (row, col) pixel indices."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for start_row, start_col in zip(*np.nonzero(mask)):
        if seen[start_row, start_col]:
            continue
        seen[start_row, start_col] = True
        queue, pixels = deque([(start_row, start_col)]), []
        while queue:
            row, col = queue.popleft()
            pixels.append((row, col))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < height and 0 <= c < width and mask[r, c] and not seen[r, c]:
                        seen[r, c] = True
                        queue.append((r, c))
        components.append(np.asarray(pixels))
    return components


DESCRIPTOR_SIZE = 8


def descriptor(mask: np.ndarray, box) -> np.ndarray:
    """The object's occupancy in its bounding box, resampled to an 8 x 8 grid of fractions (scale-free)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = Image.fromarray((mask[y0:y1, x0:x1] * 255).astype(np.uint8))
    return np.asarray(crop.resize((DESCRIPTOR_SIZE, DESCRIPTOR_SIZE), Image.BOX), dtype=np.float32) / 255.0


def _exemplars() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each shape's descriptors (and bounding-box aspect ratios) over sizes a little beyond the renderer's
    range and half-pixel offsets."""
    exemplars, aspects = {}, {}
    for shape in SHAPES:
        descriptors, ratios = [], []
        for size in range(SIZE_RANGE[0] - 2, SIZE_RANGE[1] + 3):
            for offset in (0.0, 0.5):
                canvas = Image.new("1", (32, 32), 0)
                draw_shape(ImageDraw.Draw(canvas), shape, 16 + offset, 16 + offset, size, 1)
                mask = np.asarray(canvas, dtype=bool)
                rows, cols = np.nonzero(mask)
                descriptors.append(descriptor(mask, (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)))
                ratios.append((cols.max() + 1 - cols.min()) / (rows.max() + 1 - rows.min()))
        exemplars[shape] = np.stack(descriptors)
        aspects[shape] = np.asarray(ratios)
    return exemplars, aspects


EXEMPLARS, ASPECTS = _exemplars()
ASPECT_WEIGHT = 0.5  # similarity lost per unit of |log(aspect ratio / the exemplar's)|


def classify_shape(mask: np.ndarray, box) -> tuple[str, float]:
    """(shape, similarity): the shape of the exemplar nearest to the object's descriptor, and 1 - their mean
    absolute difference - 0.5 |log(aspect ratio / the exemplar's)| (1.0 for a cleanly drawn shape; blobs and
    fused objects score low)."""
    d = descriptor(mask, box)
    aspect = (box[2] - box[0]) / max(1e-6, box[3] - box[1])
    similarity = {
        shape: 1.0 - float((np.abs(e - d).mean(axis=(1, 2)) + ASPECT_WEIGHT * np.abs(np.log(aspect / ASPECTS[shape]))).min())
        for shape, e in EXEMPLARS.items()
    }
    best = max(similarity, key=similarity.get)
    return best, similarity[best]


class ShapesDetector:
    def __init__(self, background_threshold: float = 60.0, min_area: int = 12, device=None, **_):
        self.background_threshold = background_threshold
        self.min_area = min_area

    def analyse(self, image: Image.Image) -> dict:
        """Detections plus the foreground pixels no detection explains (noise), for one image."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        foreground = np.linalg.norm(pixels - np.asarray(BACKGROUND, dtype=np.float32), axis=-1) > self.background_threshold
        found: dict[str, list[Detection]] = {}
        noise = 0
        for component in connected_components(foreground):
            if len(component) < self.min_area:
                noise += len(component)
                continue
            rows, cols = component[:, 0], component[:, 1]
            mask = np.zeros(foreground.shape, dtype=bool)
            mask[rows, cols] = True
            colour_value = np.median(pixels[rows, cols], axis=0)
            colour = PALETTE_NAMES[int(np.argmin(np.linalg.norm(PALETTE_RGB - colour_value, axis=1)))]
            box = [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
            shape, iou = classify_shape(mask, box)
            found.setdefault(shape, []).append(Detection(box, iou, mask, colour))
        for objects in found.values():
            objects.sort(key=lambda o: -o.score)
        return {"detections": found, "noise_pixels": noise, "foreground_pixels": int(foreground.sum())}

    def detect(self, images) -> list[dict]:
        return [self.analyse(image)["detections"] for image in images]

    def colours(self, image, objects, classname):
        return [o.color for o in objects]
