"""LAION aesthetic predictor: an MLP head on the normalised CLIP ViT-L/14 image embedding.

The head (768 -> 1024 -> 128 -> 64 -> 16 -> 1, the layout of the public "sac+logos+ava1-l14-linearMSE"
weights, state-dict keys ``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``) is loaded from
``head``: a ``.safetensors`` file, or a ``.pth``/``.pt`` state dict read with ``torch.load(weights_only=True)``
(tensors only: no code runs from the file).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from flow_grpo.rewards.clip_common import ClipEmbedder
from flow_grpo.rewards.registry import register


class AestheticHead(nn.Module):
    def __init__(self, embed_dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


def load_head(path: str, embed_dim: int) -> AestheticHead:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"aesthetic head {path!r} not found")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    head = AestheticHead(embed_dim)
    try:
        head.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"aesthetic head {path!r} does not fit a {embed_dim}-dim MLP: {str(error).splitlines()[0]}") from None
    return head.eval()


@register("aesthetic")
def aesthetic(head: str = "", model: str = "openai/clip-vit-large-patch14", processor: str | None = None,
              device: str | None = None, dtype: str = "float32", **_):
    if not head:
        raise ValueError("the aesthetic reward needs reward_options.aesthetic.head: the MLP weights file")
    clip = ClipEmbedder(model, processor, device, dtype)
    mlp = load_head(head, clip.model.config.projection_dim).to(clip.device)

    @torch.no_grad()
    def score(images, prompts, metadata):
        return mlp(clip.images(images)).cpu().double().numpy(), {}

    return score
