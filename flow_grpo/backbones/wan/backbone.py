"""Wan2.1 text-to-video (``WanPipeline``, ``WanTransformer3DModel``, ``AutoencoderKLWan``) behind the backbone
layer, as diffusers' pipeline computes it (diffusers 0.42, ``pipelines/wan/pipeline_wan.py``):

- conditioning: UMT5's last hidden states of the cleaned prompt, each prompt's tokens then zeros up to
  ``max_sequence_length`` (``[N, L, D]``; the pipeline's own ``encode_prompt``); no attention mask reaches the
  transformer;
- latents ``[C, f, h, w]`` with ``f = (F - 1) / 4 + 1`` latent frames for ``F`` video frames and ``h, w`` the
  frame size over 8 (C = 16); the transformer patches them itself (1 x 2 x 2) and places its 3-D RoPE;
- schedule: the sigmas of the checkpoint's own scheduler, shifted by the flow shift ``s``,
  ``sigma = s t / (1 + (s - 1) t)`` (no resolution dependence). Wan's checkpoints ship a UniPC multistep
  scheduler with ``flow_shift``; Flow-GRPO steps its Euler SDE (and, at noise level 0, the Euler ODE) on
  UniPC's sigmas rather than UniPC's multistep update, and so does this backbone. The tiny Wan has the Euler
  scheduler, so its pipeline call is exactly that ODE (tested);
- velocity: ``timestep = 1000 sigma`` (UniPC hands the transformer the same value cut to an integer, under
  one unit of 1000 away); classifier-free guidance ``v_neg + s (v_text - v_neg)`` with the
  negative prompt (Flow-GRPO's: the empty string) when ``scale > 1``;
- decode: ``latents * latents_std + latents_mean`` per channel through the causal 3-D VAE: videos
  ``[N, F, 3, H, W]``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from flow_grpo.backbones.base import (
    Backbone, Guidance, cast_latents, classifier_free, decode_normalised, register_backbone, timestep_batch,
)
from flow_grpo.backbones.sd3.backbone import SD3_LORA_TARGET_MODULES
from flow_grpo.backbones.wan.flops import wan_transformer_flops
from flow_grpo.errors import InputError
from flow_grpo.rollout_types import Conditioning

# Flow-GRPO's Wan2.1 targets (the original flow_grpo's train_wan2_1.py, LoRA r32 / alpha 64): the attention
# projections by their last names, which in the text-to-video transformer are the self-attention's (attn1) and
# the text cross-attention's (attn2) to_q/k/v/out; the add_* names (the image cross-attention of image-to-video
# checkpoints) match nothing there.
WAN_LORA_TARGET_MODULES = tuple(name.removeprefix("attn.") for name in SD3_LORA_TARGET_MODULES)


@dataclasses.dataclass
class WanConditioning(Conditioning):
    """What the Wan transformer is conditioned on, one row per video."""

    prompt_embeds: torch.Tensor  # [N, L, D] UMT5's last hidden states, zero after each prompt's end

    @property
    def pooled(self) -> torch.Tensor:
        """The mean of the prompt's token states (Wan has no pooled embedding): ``[N, D]``."""
        valid = (self.prompt_embeds.abs().sum(-1, keepdim=True) > 0).to(self.prompt_embeds.dtype)
        return (self.prompt_embeds * valid).sum(1) / valid.sum(1).clamp(min=1)

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]


def scheduler_sigmas(scheduler, num_steps: int, device=None) -> torch.Tensor:
    """The ``num_steps + 1`` sigmas (ending in 0) that ``set_timesteps`` gives a fresh copy of ``scheduler``
    (the pipeline's own state is left alone): Wan's checkpoints' ``UniPCMultistepScheduler`` with flow sigmas
    and ``flow_shift`` (what the original Flow-GRPO's Wan trainer samples its SDE on), or a
    ``FlowMatchEulerDiscreteScheduler`` (the tiny model's, whose pipeline call is then the Euler ODE itself)."""
    config = scheduler.config
    if type(scheduler).__name__ != "FlowMatchEulerDiscreteScheduler" and not config.get("use_flow_sigmas", False):
        raise InputError(f"Wan's scheduler {type(scheduler).__name__} does not use flow sigmas; cannot sample the flow SDE on it")
    fresh = type(scheduler).from_config(config)
    fresh.set_timesteps(num_steps, device=device)
    return fresh.sigmas.float().to(device)


@register_backbone
class WanBackbone(Backbone):
    family = "wan"
    pipeline_classes = ("WanPipeline",)
    modality = "video"
    guidance_kind = "cfg"
    default_guidance_scale = 5.0  # WanPipeline's default; Flow-GRPO samples with 4.5 (config/wan.py)
    tiny_model = "builtin:tiny_wan"
    transformer_flops = staticmethod(wan_transformer_flops)
    negative_prompt = ""  # Flow-GRPO's negative prompt for Wan2.1
    lora_target_modules = WAN_LORA_TARGET_MODULES

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        from flow_grpo.backbones.wan.tiny import build_tiny_wan_pipeline

        return build_tiny_wan_pipeline(seed=seed)

    @classmethod
    def image_tokens(cls, transformer_config, resolution: int, vae_scale_factor: int) -> int:
        """Video patches of one latent frame (``patch_size`` is (frames, rows, cols))."""
        _, rows, cols = transformer_config.patch_size
        return (resolution // vae_scale_factor // rows) * (resolution // vae_scale_factor // cols)

    @property
    def text_encoders(self):
        return [self.pipeline.text_encoder]

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipeline.vae_scale_factor_spatial)

    @property
    def temporal_scale_factor(self) -> int:
        return int(self.pipeline.vae_scale_factor_temporal)

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def pooled_dim(self) -> int:
        return self.transformer.config.text_dim

    def latent_shape(self, height: int, width: int, num_frames: int = 1) -> tuple[int, ...]:
        """``(C, (F - 1) / 4 + 1, H / 8, W / 8)``: ``F - 1`` must be a multiple of the VAE's temporal factor (4)
        and the frame size one of 16 (the VAE's 8 times the transformer's 2 x 2 patches)."""
        spatial, temporal = self.vae_scale_factor, self.temporal_scale_factor
        patch = self.transformer.config.patch_size
        if (num_frames - 1) % temporal:
            raise InputError(f"wan: num_frames - 1 must be a multiple of {temporal} (e.g. 33 or 81), got {num_frames}")
        if height % (spatial * patch[1]) or width % (spatial * patch[2]):
            raise InputError(f"wan: height and width must be multiples of {spatial * patch[1]}, got {height} x {width}")
        return (self.latent_channels, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_sequence_length: int, device) -> WanConditioning:
        """``WanPipeline.encode_prompt`` itself (the cleaning, padding and zeroing are the pipeline's)."""
        embeds, _ = self.pipeline.encode_prompt(prompt=list(prompts), do_classifier_free_guidance=False,
                                                max_sequence_length=max_sequence_length, device=device)
        return WanConditioning(prompt_embeds=embeds.to(self.pipeline.text_encoder.dtype))

    def sigmas(self, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        return scheduler_sigmas(self.pipeline.scheduler, num_steps, device)

    def velocity(self, transformer, latents, sigmas, conditioning: WanConditioning, guidance: Guidance, model_dtype=None):
        hidden_states = cast_latents(latents, model_dtype, transformer)
        timestep = timestep_batch(sigmas, latents) * self.pipeline.scheduler.config.num_train_timesteps
        embeds = conditioning.prompt_embeds.to(hidden_states.dtype)

        def call(states, timesteps, text):
            return transformer(hidden_states=states, timestep=timesteps, encoder_hidden_states=text, return_dict=False)[0].float()

        if guidance.scale <= 1.0:
            return call(hidden_states, timestep, embeds)
        batch = latents.shape[0]

        def guided(which):
            negative = guidance.negative.prompt_embeds.to(hidden_states.dtype).expand(batch, -1, -1)
            if which == "both":
                return call(torch.cat([hidden_states, hidden_states]), torch.cat([timestep, timestep]), torch.cat([negative, embeds]))
            return call(hidden_states, timestep, negative if which == "negative" else embeds)

        v_uncond, v_text = classifier_free(guided, guidance)
        return v_uncond + guidance.scale * (v_text - v_uncond)

    @torch.no_grad()
    def diffusers_call(self, conditioning: WanConditioning, negative, latents, spec):
        """``WanPipeline.__call__``'s videos ``[B, F, 3, H, W]`` in [0, 1] (with its own scheduler's update: the
        Euler ODE for the tiny model, UniPC's multistep update for the published checkpoints)."""
        batch = len(conditioning)
        negative_kwargs = {} if negative is None else dict(negative_prompt_embeds=negative.prompt_embeds.expand(batch, -1, -1))
        return self.pipeline(
            prompt_embeds=conditioning.prompt_embeds, **negative_kwargs, guidance_scale=spec.guidance_scale,
            num_inference_steps=spec.num_steps, height=spec.height, width=spec.width, num_frames=spec.num_frames,
            latents=latents, max_sequence_length=conditioning.prompt_embeds.shape[1], output_type="pt",
        ).frames

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return decode_normalised(self.vae, latents, batch_size, frames="video")
