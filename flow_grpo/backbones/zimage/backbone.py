"""Z-Image (``ZImagePipeline``, ``ZImageTransformer2DModel``; Tongyi-MAI/Z-Image and the distilled
Z-Image-Turbo) behind the backbone layer, as diffusers' pipeline computes it (diffusers 0.42,
``pipelines/z_image/pipeline_z_image.py``):

- conditioning: the Qwen3 text encoder's second-to-last hidden states of the prompt in its chat template
  (``enable_thinking=True``: nothing after the assistant's turn opens), every token of the template kept; the
  pipeline hands the transformer one ``[L_i, D]`` tensor per prompt (its tokens, no padding), which this
  backbone stores zero-padded to ``max_sequence_length`` with a mask (``[N, L, D]``, ``[N, L]``) and unpads per
  call, so batches of any prompts join;
- latents ``[16, H/8, W/8]``, patchified 2x2 inside the transformer, which takes a list of ``[C, 1, h, w]``;
- schedule: ``linspace(1, 1/T, T)`` (in float32, as the pipeline's) through the scheduler's static shift (3.0), then 0;
- velocity: the transformer is called at ``1 - sigma`` and predicts ``-v`` (the pipeline negates it before its
  Euler step); guidance is standard CFG on the empty prompt, ``v = v_neg + s (v_text - v_neg)``: the
  pipeline's ``guidance_scale`` g is ``s - 1`` (its ``pos + g (pos - neg)``), so g = 0 (Z-Image-Turbo) is s = 1,
  no negative pass. The pipeline's optional ``cfg_normalization`` and ``cfg_truncation`` are off, as its
  defaults are;
- decode: ``z / scaling_factor + shift_factor`` through an ``AutoencoderKL`` (FLUX's VAE).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from flow_grpo.backbones.base import (
    Backbone, Guidance, MaskedPromptConditioning, cast_latents, classifier_free, decode_scaled, flow_match_sigmas,
    register_backbone, timestep_batch,
)
from flow_grpo.backbones.zimage.flops import zimage_transformer_flops

# Derived (no Flow-GRPO run on Z-Image upstream): FLUX's rule, the attention projections and the MLPs, here of every
# block (the noise and context refiners and the main layers; PEFT's suffix rule matches all three).
ZIMAGE_LORA_TARGET_MODULES = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                              "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


@dataclasses.dataclass
class ZImageConditioning(MaskedPromptConditioning):
    """What the Z-Image transformer is conditioned on: the text encoder's second-to-last hidden states and their mask."""

    def caption_features(self, dtype) -> list[torch.Tensor]:
        """The pipeline's form: one ``[L_i, D]`` tensor per row, its padding dropped."""
        return [embeds[mask.bool()].to(dtype) for embeds, mask in zip(self.prompt_embeds, self.prompt_embeds_mask)]


@register_backbone
class ZImageBackbone(Backbone):
    family = "zimage"
    pipeline_classes = ("ZImagePipeline",)
    guidance_kind = "cfg"
    default_guidance_scale = 6.0  # ZImagePipeline's default guidance_scale 5.0, as the standard scale 1 + 5
    tiny_model = "builtin:tiny_zimage"
    transformer_flops = staticmethod(zimage_transformer_flops)
    negative_prompt = ""  # the pipeline's default negative prompt
    lora_target_modules = ZIMAGE_LORA_TARGET_MODULES

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        from flow_grpo.backbones.zimage.tiny import build_tiny_zimage_pipeline

        return build_tiny_zimage_pipeline(seed=seed)

    @classmethod
    def image_tokens(cls, transformer_config, resolution: int, vae_scale_factor: int) -> int:
        """Latents patchified by ``all_patch_size[0]`` (2), padded to a multiple of 32 as the transformer pads them."""
        tokens = (resolution // vae_scale_factor // transformer_config.all_patch_size[0]) ** 2
        return -(-tokens // 32) * 32

    @property
    def text_encoders(self):
        return [self.pipeline.text_encoder]

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def pooled_dim(self) -> int:
        return self.transformer.config.cap_feat_dim

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_sequence_length: int, device) -> ZImageConditioning:
        """``ZImagePipeline.encode_prompt``'s embeddings (tested), zero-padded to ``max_sequence_length`` with their
        mask; a prompt longer than that is cut, as the pipeline cuts it."""
        pipeline = self.pipeline
        texts = [pipeline.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                        add_generation_prompt=True, enable_thinking=True) for prompt in prompts]
        tokens = pipeline.tokenizer(texts, padding="max_length", max_length=max_sequence_length, truncation=True,
                                    return_tensors="pt").to(device)
        mask = tokens.attention_mask.bool()
        hidden = pipeline.text_encoder(input_ids=tokens.input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        embeds = torch.where(mask.unsqueeze(-1), hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
        return ZImageConditioning(prompt_embeds=embeds.to(pipeline.text_encoder.dtype), prompt_embeds_mask=mask.long())

    def sigmas(self, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas  # float32 linspace, as the pipeline

        _, h, w = self.latent_shape(height, width)
        return flow_match_sigmas(self.pipeline.scheduler, num_steps, (h // 2) * (w // 2), device, get_default_z_image_sigmas(num_steps))

    def velocity(self, transformer, latents, sigmas, conditioning: ZImageConditioning, guidance: Guidance, model_dtype=None):
        states = cast_latents(latents, model_dtype, transformer)
        model_time = 1.0 - timestep_batch(sigmas, latents)  # Z-Image's time runs from 0 (noise) to 1

        def call(batch_states, times, captions):
            out = transformer(list(batch_states.unsqueeze(2).unbind(0)), times, captions, return_dict=False)[0]
            return -torch.stack([o.float() for o in out]).squeeze(2)  # the model predicts -v

        captions = conditioning.caption_features(states.dtype)
        if guidance.scale <= 1.0:
            return call(states, model_time, captions)
        negative = guidance.negative.caption_features(states.dtype) * len(conditioning)

        def guided(which):
            if which == "both":
                return call(torch.cat([states, states]), torch.cat([model_time, model_time]), negative + captions)
            return call(states, model_time, negative if which == "negative" else captions)

        v_negative, v_text = classifier_free(guided, guidance)
        return v_negative + guidance.scale * (v_text - v_negative)

    @torch.no_grad()
    def diffusers_call(self, conditioning: ZImageConditioning, negative, latents, spec):
        captions = conditioning.caption_features(self.transformer.dtype)
        negative_kwargs = {} if negative is None else {
            "negative_prompt_embeds": negative.caption_features(self.transformer.dtype) * len(conditioning)}
        return self.pipeline(
            prompt_embeds=captions, **negative_kwargs, guidance_scale=max(spec.guidance_scale - 1.0, 0.0),
            num_inference_steps=spec.num_steps, height=spec.height, width=spec.width, latents=latents, output_type="pt",
        ).images

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return decode_scaled(self.vae, latents, batch_size)
