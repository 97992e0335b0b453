"""FLUX.1 Kontext image editing (``FluxKontextPipeline``: FLUX.1's transformer, VAE and text encoders) behind
the backbone layer, as diffusers' pipeline computes it (diffusers 0.42, ``pipelines/flux/pipeline_flux_kontext.py``):

- conditioning: FLUX.1's (CLIP pooled + T5 states of the instruction) plus the input image's latents
  ``[N, C, h, w]``: ``(z - shift_factor) * scaling_factor`` of the VAE posterior's mode of the image in
  [-1, 1], at the output's size (as Flow-GRPO's Kontext trainer resizes inputs; diffusers' ``_auto_resize``
  to Kontext's preferred resolutions is not used). They are stored per sample, so a re-scored step sees the
  image its sample was drawn with;
- velocity: the noisy latents' 2x2 tokens (ids ``(0, row, col)``) followed by the input image's (ids
  ``(1, row, col)``) in one sequence; the prediction is the first ``(h/2)(w/2)`` tokens. Guidance is FLUX.1's
  distilled value as an input (2.5 in Flow-GRPO's Kontext runs); no negative pass;
- schedule: FLUX.1's, the shift ``mu`` from the noisy tokens' count only.
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.base import register_backbone
from flow_grpo.backbones.flux.backbone import FLUX_LORA_TARGET_MODULES, FluxBackbone, FluxConditioning, pack_latents
from flow_grpo.backbones.flux_kontext.flops import kontext_transformer_flops

# Flow-GRPO's Kontext targets (the original flow_grpo's train_flux_kontext.py, LoRA r64 / alpha 128): FLUX's
# plus the single blocks' MLP input projection
KONTEXT_LORA_TARGET_MODULES = FLUX_LORA_TARGET_MODULES + ("proj_mlp",)


@dataclasses.dataclass
class KontextConditioning(FluxConditioning):
    """FLUX.1's conditioning of the instruction, and the latents of the image it edits."""

    image_latents: torch.Tensor  # [N, C, h, w] float32: the input image as the VAE encodes it, scaled


@register_backbone
class FluxKontextBackbone(FluxBackbone):
    family = "flux_kontext"
    pipeline_classes = ("FluxKontextPipeline",)
    takes_input_image = True
    default_guidance_scale = 2.5  # Flow-GRPO's Kontext runs (diffusers' pipeline default: 3.5)
    tiny_model = "builtin:tiny_kontext"
    transformer_flops = staticmethod(kontext_transformer_flops)
    presets = {}  # FLUX.1-dev's preset is FLUX's
    lora_target_modules = KONTEXT_LORA_TARGET_MODULES

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        from flow_grpo.backbones.flux_kontext.tiny import build_tiny_kontext_pipeline

        return build_tiny_kontext_pipeline(seed=seed)

    @torch.no_grad()
    def attach_input_images(self, conditioning: FluxConditioning, input_images: torch.Tensor) -> KontextConditioning:
        """The input images ``[N, 3, H, W]`` in [0, 1] encoded as ``FluxKontextPipeline._encode_vae_image`` does
        (tested): the posterior's mode (``sample_mode="argmax"``), shifted and scaled."""
        vae = self.vae
        pixels = (input_images.float() * 2 - 1).to(device=vae.device, dtype=vae.dtype)
        latents = vae.encode(pixels).latent_dist.mode()
        latents = (latents - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor
        fields = {field.name: getattr(conditioning, field.name) for field in dataclasses.fields(conditioning)}
        return KontextConditioning(**fields, image_latents=latents.float())

    def reference_tokens(self, conditioning: KontextConditioning, dtype):
        from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

        image = conditioning.image_latents
        batch, _, height, width = image.shape
        ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, image.device, dtype)
        ids[..., 0] = 1  # the reference image's ids: the noisy latents' with the first coordinate 1
        return pack_latents(image.to(dtype)), ids

    @torch.no_grad()
    def diffusers_call(self, conditioning: KontextConditioning, negative, latents, spec):
        """``FluxKontextPipeline.__call__`` on the same instruction embeddings and input-image latents (the
        pipeline takes latents with the VAE's channel count as they are)."""
        return self.pipeline(
            image=conditioning.image_latents, prompt_embeds=conditioning.prompt_embeds,
            pooled_prompt_embeds=conditioning.pooled_prompt_embeds, num_inference_steps=spec.num_steps,
            guidance_scale=spec.guidance_scale, height=spec.height, width=spec.width, latents=pack_latents(latents),
            max_sequence_length=conditioning.prompt_embeds.shape[1], output_type="pt", _auto_resize=False,
            max_area=spec.height * spec.width,  # else the pipeline rescales the output to 1024 x 1024 pixels
        ).images
