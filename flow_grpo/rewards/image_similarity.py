"""Image similarity: cosine similarity of CLIP image embeddings between each image and its reference.

The reference is the image file named by the sample's metadata field ``reference_field`` (default
``"reference_image"``), relative to ``reference_root`` when not absolute. References are embedded once and
cached.
"""

from __future__ import annotations

import os

import torch
from PIL import Image

from flow_grpo.images import to_tensor
from flow_grpo.rewards.clip_common import ClipEmbedder
from flow_grpo.rewards.registry import register


@register("image_similarity")
def image_similarity(model: str = "openai/clip-vit-large-patch14", processor: str | None = None, device: str | None = None,
                     dtype: str = "float32", reference_field: str = "reference_image", reference_root: str = "", **_):
    clip = ClipEmbedder(model, processor, device, dtype)
    cache: dict[str, torch.Tensor] = {}

    def reference(meta: dict) -> torch.Tensor:
        if reference_field not in meta:
            raise ValueError(f"metadata has no {reference_field!r} field naming the reference image (keys: {sorted(meta)})")
        path = meta[reference_field]
        path = path if os.path.isabs(path) else os.path.join(reference_root, path)
        if path not in cache:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"reference image {path!r} not found")
            cache[path] = clip.images(to_tensor([Image.open(path).convert("RGB")]))[0]
        return cache[path]

    def score(images, prompts, metadata):
        references = torch.stack([reference(m) for m in metadata])
        return (clip.images(images) * references).sum(-1).cpu().double().numpy(), {}

    return score
