"""CLIP score: cosine similarity of the image and prompt embeddings (times ``scale``, default 1)."""

from __future__ import annotations

from flow_grpo.rewards.clip_common import ClipEmbedder
from flow_grpo.rewards.registry import register


@register("clipscore")
def clipscore(model: str = "openai/clip-vit-large-patch14", processor: str | None = None, device: str | None = None,
              dtype: str = "float32", scale: float = 1.0, **_):
    clip = ClipEmbedder(model, processor, device, dtype)

    def score(images, prompts, metadata):
        cosine = (clip.images(images) * clip.texts(prompts)).sum(-1)
        return (cosine * scale).cpu().double().numpy(), {}

    return score
