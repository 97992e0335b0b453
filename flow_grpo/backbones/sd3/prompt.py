"""SD3 prompt encoding: two CLIP text encoders (penultimate hidden states + pooled projections) and T5.

Same result as ``StableDiffusion3Pipeline.encode_prompt`` (tested), written out so the trainer can encode
with any T5 length and without building negative prompts it does not need.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F

from flow_grpo.rollout_types import Conditioning


@dataclasses.dataclass
class SD3Conditioning(Conditioning):
    """What the SD3 transformer is conditioned on, one row per image."""

    prompt_embeds: torch.Tensor  # [N, 77 + L, D_t5]: both CLIPs' penultimate states (padded) then T5's
    pooled_prompt_embeds: torch.Tensor  # [N, 2 * D_clip_proj]: both CLIPs' pooled projections

    @property
    def pooled(self) -> torch.Tensor:
        return self.pooled_prompt_embeds

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]


@torch.no_grad()
def encode_prompt(pipeline, prompts: Sequence[str], max_sequence_length: int = 256, device=None) -> SD3Conditioning:
    """:func:`encode_prompt_with_grad` without gradients: the trainer's and the samplers' frozen text encoders."""
    return encode_prompt_with_grad(pipeline, prompts, max_sequence_length, device)


def encode_prompt_with_grad(pipeline, prompts: Sequence[str], max_sequence_length: int = 256, device=None) -> SD3Conditioning:
    """The :class:`SD3Conditioning` of ``prompts``: ``prompt_embeds [N, 77 + L, D_t5]`` and
    ``pooled_prompt_embeds [N, 2 * D_clip_proj]``.

    CLIP: both encoders' penultimate hidden states concatenated on the feature axis and zero-padded to the
    T5 width; pooled: both projections concatenated. T5: ``max_sequence_length`` tokens (zeros when the
    pipeline was built without ``text_encoder_3``, as diffusers does).
    """
    prompts = list(prompts)
    device = device or pipeline.transformer.device
    clip_embeds, pooled = [], []
    for tokenizer, text_encoder in ((pipeline.tokenizer, pipeline.text_encoder), (pipeline.tokenizer_2, pipeline.text_encoder_2)):
        input_ids = tokenizer(
            prompts, padding="max_length", max_length=pipeline.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        output = text_encoder(input_ids, output_hidden_states=True)
        pooled.append(output[0])
        clip_embeds.append(output.hidden_states[-2].to(dtype=pipeline.text_encoder.dtype))
    clip_prompt_embeds = torch.cat(clip_embeds, dim=-1)

    if pipeline.text_encoder_3 is None:
        t5_prompt_embeds = torch.zeros(
            len(prompts), max_sequence_length, pipeline.transformer.config.joint_attention_dim,
            device=device, dtype=clip_prompt_embeds.dtype,
        )
    else:
        input_ids = pipeline.tokenizer_3(
            prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
            add_special_tokens=True, return_tensors="pt",
        ).input_ids.to(device)
        t5_prompt_embeds = pipeline.text_encoder_3(input_ids)[0].to(dtype=pipeline.text_encoder_3.dtype)

    clip_prompt_embeds = F.pad(clip_prompt_embeds, (0, t5_prompt_embeds.shape[-1] - clip_prompt_embeds.shape[-1]))
    prompt_embeds = torch.cat([clip_prompt_embeds, t5_prompt_embeds.to(clip_prompt_embeds.dtype)], dim=-2)
    return SD3Conditioning(prompt_embeds=prompt_embeds, pooled_prompt_embeds=torch.cat(pooled, dim=-1))
