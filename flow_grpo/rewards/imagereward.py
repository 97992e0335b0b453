"""ImageReward (Xu et al. 2023), from the optional ``image-reward`` package (``pip install image-reward``)."""

from __future__ import annotations

import numpy as np

from flow_grpo.images import to_pil
from flow_grpo.rewards.clip_common import default_device
from flow_grpo.rewards.registry import RewardError, register


@register("imagereward")
def imagereward(model: str = "ImageReward-v1.0", device: str | None = None, **_):
    try:
        import ImageReward as RM  # noqa: N814 - the package's own name
    except ImportError:
        raise RewardError("the imagereward reward needs the optional package: pip install image-reward") from None
    scorer = RM.load(model, device=device or default_device())

    def score(images, prompts, metadata):
        return np.asarray([float(scorer.score(p, image)) for p, image in zip(prompts, to_pil(images))]), {}

    return score
