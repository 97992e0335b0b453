"""Image helpers: tensors in [0, 1] to PIL, saving, and labelled grids."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[N, 3, H, W] floats in [0, 1] to RGB PIL images."""
    array = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size to [N, 3, H, W] floats in [0, 1]."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def save_images(images: torch.Tensor | Sequence[Image.Image], folder: str, names: Sequence[str]) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    pil = to_pil(images) if isinstance(images, torch.Tensor) else list(images)
    paths = []
    for image, name in zip(pil, names):
        path = os.path.join(folder, name)
        image.save(path)
        paths.append(path)
    return paths


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def image_grid(
    images: Sequence[Image.Image],
    cols: int,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell: int | None = None,
) -> Image.Image:
    """A grid with optional labels left of each row and above each column; cells keep the first image's aspect
    ratio, with its longer side resized to ``cell`` px."""
    if not images:
        raise ValueError("no images for the grid")
    width, height = images[0].size
    scale = (cell or max(width, height)) / max(width, height)
    cell_w, cell_h = max(1, round(width * scale)), max(1, round(height * scale))
    rows = (len(images) + cols - 1) // cols
    font = ImageFont.load_default()
    label_w = 0 if not row_labels else 150
    label_h = 0 if not col_labels else 16
    grid = Image.new("RGB", (label_w + cols * cell_w, label_h + rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST), (label_w + c * cell_w, label_h + r * cell_h))
    for c, label in enumerate(col_labels or []):
        draw.text((label_w + c * cell_w + 2, 2), label[: max(4, cell_w // 6)], fill="black", font=font)
    for r, label in enumerate(row_labels or []):
        for k, line in enumerate(_wrap(label, 24)[: max(1, cell_h // 12)]):
            draw.text((2, label_h + r * cell_h + 2 + 12 * k), line, fill="black", font=font)
    return grid
