"""FLUX.1-dev (``FluxPipeline``, ``FluxTransformer2DModel``) behind the backbone layer, as diffusers' pipeline
computes it (diffusers 0.42, ``pipelines/flux/pipeline_flux.py``):

- conditioning: CLIP's pooled output (``pooler_output``, ``[N, D_clip]``) and T5's last hidden states padded
  to ``max_sequence_length`` (``[N, L, D_t5]``; no attention mask, as in the pipeline); text ids are zeros;
- latents ``[C, H/8, W/8]`` (C = 16), packed into 2x2 patches for the transformer: ``[B, (h/2)(w/2), 4C]``,
  with image ids ``(0, row, col)`` of the patch grid, unpacked after;
- schedule: ``linspace(1, 1/T, T)`` shifted by the resolution-dependent ``mu`` (``calculate_shift`` on the
  packed sequence length), then 0;
- velocity: ``timestep = sigma`` (the model scales it by 1000 itself) and, for FLUX.1-dev
  (``guidance_embeds``), the distilled guidance value as an input (3.5 in the pipeline): no negative pass.
  FLUX.1-schnell (no guidance embedding) ignores the scale;
- decode: ``latents / scaling_factor + shift_factor`` through the ``AutoencoderKL``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from flow_grpo.backbones.base import (
    Backbone, Guidance, cast_latents, decode_scaled, flow_match_sigmas, register_backbone, timestep_batch,
)
from flow_grpo.backbones.sd3.backbone import SD3_LORA_TARGET_MODULES
from flow_grpo.backbones.flux.flops import flux_transformer_flops
from flow_grpo.rollout_types import Conditioning

# Flow-GRPO's FLUX targets (the original flow_grpo's train_flux.py): every attention projection of the double
# blocks (image and text streams) and both streams' MLPs. The single blocks' attention shares to_q/to_k/to_v.
FLUX_LORA_TARGET_MODULES = SD3_LORA_TARGET_MODULES + ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")


@dataclasses.dataclass
class FluxConditioning(Conditioning):
    """What the FLUX transformer is conditioned on, one row per image."""

    prompt_embeds: torch.Tensor  # [N, L, D_t5] T5's last hidden states, L = max_sequence_length
    pooled_prompt_embeds: torch.Tensor  # [N, D_clip] CLIP's pooled output

    @property
    def pooled(self) -> torch.Tensor:
        return self.pooled_prompt_embeds

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, (h/2)(w/2), 4C]``: 2x2 patches as tokens (channel index ``4c + 2dy + dx``)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for latents of ``height x width``."""
    b, _, d = tokens.shape
    return tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, height, width)


def patch_sigmas(num_steps: int) -> np.ndarray:
    """The sigmas FLUX's and Qwen-Image's pipelines hand the scheduler before shifting."""
    return np.linspace(1.0, 1 / num_steps, num_steps)


@register_backbone
class FluxBackbone(Backbone):
    family = "flux"
    pipeline_classes = ("FluxPipeline",)
    guidance_kind = "embedded"
    default_guidance_scale = 3.5
    tiny_model = "builtin:tiny_flux"
    transformer_flops = staticmethod(flux_transformer_flops)
    presets = {"flux-dev": "flow_grpo.backbones.flux.presets:build_flux_dev"}
    negative_prompt = None
    lora_target_modules = FLUX_LORA_TARGET_MODULES

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        from flow_grpo.backbones.flux.tiny import build_tiny_flux_pipeline

        return build_tiny_flux_pipeline(seed=seed)

    @classmethod
    def image_tokens(cls, transformer_config, resolution: int, vae_scale_factor: int) -> int:
        """Latents packed 2x2 into tokens (``patch_size`` 1 works on the packed tokens)."""
        return (resolution // vae_scale_factor // (2 * transformer_config.patch_size)) ** 2

    @property
    def text_encoders(self):
        return [m for m in (self.pipeline.text_encoder, self.pipeline.text_encoder_2) if m is not None]

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels // 4

    @property
    def pooled_dim(self) -> int:
        return self.transformer.config.pooled_projection_dim

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_sequence_length: int, device) -> FluxConditioning:
        """CLIP (its tokenizer's length, 77) pooled, and T5 at ``max_sequence_length`` tokens, as
        ``FluxPipeline.encode_prompt`` with ``prompt_2 = prompt`` (tested)."""
        pipeline, prompts = self.pipeline, list(prompts)
        clip_ids = pipeline.tokenizer(prompts, padding="max_length", max_length=pipeline.tokenizer.model_max_length,
                                      truncation=True, return_tensors="pt").input_ids.to(device)
        pooled = pipeline.text_encoder(clip_ids, output_hidden_states=False).pooler_output
        t5_ids = pipeline.tokenizer_2(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                                      return_tensors="pt").input_ids.to(device)
        embeds = pipeline.text_encoder_2(t5_ids, output_hidden_states=False)[0]
        return FluxConditioning(prompt_embeds=embeds.to(pipeline.text_encoder_2.dtype),
                                pooled_prompt_embeds=pooled.to(pipeline.text_encoder.dtype))

    def sigmas(self, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        _, h, w = self.latent_shape(height, width)
        return flow_match_sigmas(self.pipeline.scheduler, num_steps, (h // 2) * (w // 2), device, patch_sigmas(num_steps))

    def velocity(self, transformer, latents, sigmas, conditioning: FluxConditioning, guidance: Guidance, model_dtype=None):
        from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

        batch, _, height, width = latents.shape
        device = latents.device
        hidden_states = pack_latents(cast_latents(latents, model_dtype, transformer))
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, hidden_states.dtype)
        reference = self.reference_tokens(conditioning, hidden_states.dtype)
        model_input, ids = hidden_states, image_ids
        if reference is not None:  # an editing family: the input image's tokens after the noisy ones
            model_input, ids = torch.cat([hidden_states, reference[0]], dim=1), torch.cat([image_ids, reference[1]])
        text_ids = torch.zeros(conditioning.prompt_embeds.shape[1], 3, device=device, dtype=hidden_states.dtype)
        embedded = self.transformer.config.guidance_embeds  # the backbone's own module: `transformer` may be DDP-wrapped
        guidance_input = torch.full((batch,), float(guidance.scale), device=device, dtype=torch.float32) if embedded else None
        tokens = transformer(
            hidden_states=model_input, timestep=timestep_batch(sigmas, latents), guidance=guidance_input,
            pooled_projections=conditioning.pooled_prompt_embeds.to(hidden_states.dtype),
            encoder_hidden_states=conditioning.prompt_embeds.to(hidden_states.dtype),
            txt_ids=text_ids, img_ids=ids, return_dict=False,
        )[0]
        return unpack_latents(tokens[:, : hidden_states.shape[1]].float(), height, width)

    def reference_tokens(self, conditioning: FluxConditioning, dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Tokens joined to the noisy ones and their position ids (an editing family's input image); none here."""
        return None

    @torch.no_grad()
    def diffusers_call(self, conditioning: FluxConditioning, negative, latents, spec):
        return self.pipeline(
            prompt_embeds=conditioning.prompt_embeds, pooled_prompt_embeds=conditioning.pooled_prompt_embeds,
            num_inference_steps=spec.num_steps, guidance_scale=spec.guidance_scale, height=spec.height, width=spec.width,
            latents=pack_latents(latents), max_sequence_length=conditioning.prompt_embeds.shape[1], output_type="pt",
        ).images

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return decode_scaled(self.vae, latents, batch_size)
