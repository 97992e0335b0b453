"""The analytic detector of the shapes world: colour segmentation, connected components, shape by geometry.

1. Foreground: pixels farther than ``background_threshold`` (RGB distance, 40) from the grey background.
2. Objects: each 8-connected foreground component is cut to its core, the pixels at least half as far from
   the background as the component's colour (the 50% contour, where a blurred edge crosses), which also
   parts objects a blur has fused; cores of at least ``min_area`` pixels are objects, smaller ones noise.
3. Colour: the palette colour nearest to the object's median colour.
4. Shape: the object's occupancy of its bounding box, resampled to 8 x 8, is compared with exemplars of each
   shape, adding a penalty for a different bounding-box aspect ratio; the nearest exemplar's shape wins. The
   exemplars are every shape drawn crisply (every size and half-pixel offset) and as the shipped base's VAE
   decodes it (``decoded_exemplars.npz``, made by ``python -m flow_grpo.shapes.exemplars``), so a shape that
   went through the VAE is recognised as what was drawn.
5. Confidence: ``1 - d / 2`` with ``d`` the distance to that exemplar (1 for a cleanly drawn shape). The
   halving calibrates it to GenEval's thresholds: a shape decoded by the world's VAE keeps a distance under
   0.2 (confidence >= 0.9, GenEval's counting threshold) in about 99% of cases, while blobs and fused objects
   (distance 0.4 and more) stay under it.

Detections carry their colour, so GenEval colour checks need no classifier.
"""

from __future__ import annotations

import os
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


def crisp_exemplars() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each shape's descriptors (and bounding-box aspect ratios) as the renderer draws it, over sizes a little
    beyond its range and half-pixel offsets."""
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


DECODED_EXEMPLARS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "decoded_exemplars.npz")


def load_exemplars(path: str = DECODED_EXEMPLARS) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The crisp exemplars, and the decoded ones stored at ``path`` when it exists (``<shape>`` descriptors
    [n, 8, 8] and ``<shape>_aspect`` ratios [n]; no pickle)."""
    exemplars, aspects = crisp_exemplars()
    if os.path.isfile(path):
        with np.load(path, allow_pickle=False) as stored:
            for shape in SHAPES:
                exemplars[shape] = np.concatenate([exemplars[shape], stored[shape].astype(np.float32)])
                aspects[shape] = np.concatenate([aspects[shape], stored[f"{shape}_aspect"].astype(np.float32)])
    return exemplars, aspects


ASPECT_WEIGHT = 0.5  # similarity lost per unit of |log(aspect ratio / the exemplar's)|
CONFIDENCE_SCALE = 2.0  # confidence = 1 - distance / CONFIDENCE_SCALE (module docstring, 5.)


def classify_shape(mask: np.ndarray, box, exemplars, aspects) -> tuple[str, float]:
    """(shape, confidence): the shape of the exemplar nearest to the object's descriptor, and
    ``1 - d / 2`` with ``d`` = their mean absolute difference + 0.5 |log(aspect ratio / the exemplar's)|
    (1.0 for a cleanly drawn shape; blobs and fused objects score low). ``exemplars``, ``aspects``: from
    :func:`load_exemplars`."""
    d = descriptor(mask, box)
    aspect = (box[2] - box[0]) / max(1e-6, box[3] - box[1])
    distance = {
        shape: float((np.abs(e - d).mean(axis=(1, 2)) + ASPECT_WEIGHT * np.abs(np.log(aspect / aspects[shape]))).min())
        for shape, e in exemplars.items()
    }
    best = min(distance, key=distance.get)
    return best, 1.0 - distance[best] / CONFIDENCE_SCALE


def object_masks(pixels: np.ndarray, background_threshold: float, min_area: int) -> tuple[list[np.ndarray], int, int]:
    """The objects of an image [H, W, 3] (float RGB) as boolean masks, the noise pixels (specks too small to be
    objects) and the foreground pixels: components of the foreground cut to their half-contrast cores."""
    distance = np.linalg.norm(pixels - np.asarray(BACKGROUND, dtype=np.float32), axis=-1)
    foreground = distance > background_threshold
    masks, noise = [], 0
    for component in connected_components(foreground):
        rows, cols = component[:, 0], component[:, 1]
        inner = distance[rows, cols] >= np.median(distance[rows, cols])  # the component's colour, not its edge
        contrast = np.linalg.norm(np.median(pixels[rows, cols][inner], axis=0) - np.asarray(BACKGROUND, dtype=np.float32))
        core = np.zeros(foreground.shape, dtype=bool)
        core[rows, cols] = distance[rows, cols] > 0.5 * contrast
        for part in connected_components(core):
            if len(part) < min_area:
                noise += len(part)
                continue
            mask = np.zeros(foreground.shape, dtype=bool)
            mask[part[:, 0], part[:, 1]] = True
            masks.append(mask)
    return masks, noise, int(foreground.sum())


class ShapesDetector:
    """``exemplars``: the decoded exemplars' file (default: the shipped base's VAE's); crisp ones are always used."""

    def __init__(self, background_threshold: float = 40.0, min_area: int = 12, exemplars: str = DECODED_EXEMPLARS, device=None, **_):
        self.background_threshold = background_threshold
        self.min_area = min_area
        if exemplars != DECODED_EXEMPLARS and not os.path.isfile(exemplars):
            raise FileNotFoundError(f"shapes detector exemplars {exemplars!r} not found (make them with python -m flow_grpo.shapes.exemplars)")
        self.exemplars, self.aspects = load_exemplars(exemplars)

    def analyse(self, image: Image.Image) -> dict:
        """Detections plus the foreground pixels no detection explains (noise), for one image."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        masks, noise, foreground = object_masks(pixels, self.background_threshold, self.min_area)
        found: dict[str, list[Detection]] = {}
        for mask in masks:
            rows, cols = np.nonzero(mask)
            colour_value = np.median(pixels[rows, cols], axis=0)
            colour = PALETTE_NAMES[int(np.argmin(np.linalg.norm(PALETTE_RGB - colour_value, axis=1)))]
            box = [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
            shape, confidence = classify_shape(mask, box, self.exemplars, self.aspects)
            found.setdefault(shape, []).append(Detection(box, confidence, mask, colour))
        for objects in found.values():
            objects.sort(key=lambda o: -o.score)
        return {"detections": found, "noise_pixels": noise, "foreground_pixels": foreground}

    def detect(self, images) -> list[dict]:
        return [self.analyse(image)["detections"] for image in images]

    def colours(self, image, objects, classname):
        return [o.color for o in objects]
