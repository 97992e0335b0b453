"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``, ``SD3Transformer2DModel``) behind the backbone layer.

- conditioning: two CLIP encoders (penultimate hidden states, pooled projections) and T5 (:mod:`.prompt`);
- latents ``[16, H/8, W/8]`` (the VAE's), patchified by the transformer itself (no packing here);
- schedule: the scheduler's static shift (3.0 for SD3.5), or its dynamic shift when configured;
- velocity: the transformer at ``timestep = sigma * num_train_timesteps`` (exactly the scheduler's timestep),
  with classifier-free guidance on the empty prompt when ``scale > 1`` (unconditional half first, as diffusers);
- decode: ``latents / scaling_factor + shift_factor`` through the VAE.
"""

from __future__ import annotations

from typing import Sequence

import torch

from flow_grpo.backbones.base import (
    Backbone, Guidance, cast_latents, classifier_free, decode_scaled, flow_match_sigmas, register_backbone, timestep_batch,
)
from flow_grpo.backbones.sd3.prompt import SD3Conditioning, encode_prompt
from flow_grpo.backbones.sd3.flops import sd3_transformer_flops

# The attention projections of every joint block (image and text streams), as in Flow-GRPO; FLUX and
# Qwen-Image add their MLPs to these.
SD3_LORA_TARGET_MODULES = (
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v",
)


@register_backbone
class SD3Backbone(Backbone):
    family = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    guidance_kind = "cfg"
    default_guidance_scale = 4.5
    tiny_model = "builtin:tiny"
    transformer_flops = staticmethod(sd3_transformer_flops)
    presets = {"sd35m": "flow_grpo.backbones.sd3.presets:build_sd35m"}
    negative_prompt = ""
    lora_target_modules = SD3_LORA_TARGET_MODULES

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        from flow_grpo.backbones.sd3.tiny import build_tiny_sd3_pipeline

        return build_tiny_sd3_pipeline(seed=seed)

    @property
    def text_encoders(self):
        return [m for m in (self.pipeline.text_encoder, self.pipeline.text_encoder_2, self.pipeline.text_encoder_3) if m is not None]

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def pooled_dim(self) -> int:
        return self.transformer.config.pooled_projection_dim

    def encode(self, prompts: Sequence[str], max_sequence_length: int, device) -> SD3Conditioning:
        return encode_prompt(self.pipeline, prompts, max_sequence_length, device)

    def sigmas(self, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        _, h, w = self.latent_shape(height, width)
        patch = self.transformer.config.patch_size
        return flow_match_sigmas(self.pipeline.scheduler, num_steps, (h // patch) * (w // patch), device)

    def velocity(self, transformer, latents, sigmas, conditioning: SD3Conditioning, guidance: Guidance, model_dtype=None):
        batch = latents.shape[0]
        timestep = timestep_batch(sigmas, latents) * self.pipeline.scheduler.config.num_train_timesteps
        model_input = cast_latents(latents, model_dtype, transformer)

        def call(hidden_states, timesteps, embeds, pooled):
            return transformer(hidden_states=hidden_states, timestep=timesteps, encoder_hidden_states=embeds,
                               pooled_projections=pooled, return_dict=False)[0].float()

        dtype = model_input.dtype  # text encoders may run in another dtype than the transformer
        embeds, pooled = conditioning.prompt_embeds.to(dtype), conditioning.pooled_prompt_embeds.to(dtype)
        if guidance.scale <= 1.0:
            return call(model_input, timestep, embeds, pooled)
        negative = guidance.negative

        def guided(which):
            negative_embeds = negative.prompt_embeds.to(dtype).expand(batch, -1, -1)
            negative_pooled = negative.pooled_prompt_embeds.to(dtype).expand(batch, -1)
            if which == "both":
                return call(torch.cat([model_input, model_input]), torch.cat([timestep, timestep]),
                            torch.cat([negative_embeds, embeds]), torch.cat([negative_pooled, pooled]))
            if which == "negative":
                return call(model_input, timestep, negative_embeds, negative_pooled)
            return call(model_input, timestep, embeds, pooled)

        velocity_uncond, velocity_text = classifier_free(guided, guidance)
        return velocity_uncond + guidance.scale * (velocity_text - velocity_uncond)

    @torch.no_grad()
    def diffusers_call(self, conditioning: SD3Conditioning, negative, latents, spec):
        batch = len(conditioning)
        negative_kwargs = {} if negative is None else dict(
            negative_prompt_embeds=negative.prompt_embeds.expand(batch, -1, -1),
            negative_pooled_prompt_embeds=negative.pooled_prompt_embeds.expand(batch, -1))
        return self.pipeline(
            prompt_embeds=conditioning.prompt_embeds, pooled_prompt_embeds=conditioning.pooled_prompt_embeds, **negative_kwargs,
            num_inference_steps=spec.num_steps, guidance_scale=spec.guidance_scale, height=spec.height, width=spec.width,
            latents=latents.clone(), output_type="pt",
        ).images

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return decode_scaled(self.vae, latents, batch_size)
