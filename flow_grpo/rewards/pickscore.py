"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on human preferences.

score = exp(logit_scale) * cos(image, prompt) * ``scale``; ``scale`` defaults to 1/26, Flow-GRPO's
normalisation (typical PickScore values are 18-24).
"""

from __future__ import annotations

from flow_grpo.rewards.clip_common import ClipEmbedder
from flow_grpo.rewards.registry import register


@register("pickscore")
def pickscore(model: str = "yuvalkirstain/PickScore_v1", processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
              device: str | None = None, dtype: str = "float32", scale: float = 1 / 26, **_):
    clip = ClipEmbedder(model, processor, device, dtype)

    def score(images, prompts, metadata):
        cosine = (clip.images(images) * clip.texts(prompts)).sum(-1)
        raw = clip.logit_scale * cosine
        return (raw * scale).cpu().double().numpy(), {"raw": raw.cpu().double().numpy()}

    return score
