"""JPEG file size as a reward (DDPO's compressibility task): smaller files = simpler images.

``jpeg_compressibility`` is ``-size_kb / 500`` and ``jpeg_incompressibility`` ``size_kb``, the scales of
Flow-GRPO's configs (JPEG quality 95).
"""

from __future__ import annotations

import io

import numpy as np

from flow_grpo.images import to_pil
from flow_grpo.rewards.registry import register


def jpeg_size_kb(images, quality: int = 95) -> np.ndarray:
    sizes = []
    for image in to_pil(images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000.0)
    return np.asarray(sizes)


@register("jpeg_compressibility")
def jpeg_compressibility(quality: int = 95, **_):
    def score(images, prompts, metadata):
        size = jpeg_size_kb(images, quality)
        return -size / 500.0, {"size_kb": size}

    return score


@register("jpeg_incompressibility")
def jpeg_incompressibility(quality: int = 95, **_):
    def score(images, prompts, metadata):
        size = jpeg_size_kb(images, quality)
        return size, {"size_kb": size}

    return score
