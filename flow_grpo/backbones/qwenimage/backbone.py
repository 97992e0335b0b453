"""Qwen-Image (``QwenImagePipeline``, ``QwenImageTransformer2DModel``) behind the backbone layer, as diffusers'
pipeline computes it (diffusers 0.42, ``pipelines/qwenimage/pipeline_qwenimage.py``):

- conditioning: the Qwen2.5-VL text encoder's last hidden states of the prompt in the pipeline's chat
  template, the template's first ``prompt_template_encode_start_idx`` (34) tokens dropped, padded to
  ``max_sequence_length`` with a mask (``[N, L, D]`` and ``[N, L]``), so that batches of any prompts join;
  the transformer masks the padding out of attention;
- latents ``[C, H/8, W/8]`` (C = 16; the VAE's frame axis of 1 is added at decode), packed into 2x2 patches
  for the transformer with ``img_shapes = (1, h/2, w/2)``;
- schedule: ``linspace(1, 1/T, T)`` shifted by the resolution-dependent ``mu``, stretched to the scheduler's
  ``shift_terminal``, then 0;
- velocity: ``timestep = sigma``; true CFG with the negative prompt (" " in Flow-GRPO) when ``scale > 1``:
  ``comb = v_neg + s (v_text - v_neg)``, rescaled per token to the conditional prediction's norm,
  ``v = comb * |v_text| / |comb|`` (norms over the packed token's ``4C`` features). It lives here, in the one
  velocity that sampling and training share, so a re-scored step has ratio 1 on-policy;
- decode: ``latents * latents_std + latents_mean`` per channel through ``AutoencoderKLQwenImage``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from flow_grpo.backbones.base import (
    Backbone, Guidance, MaskedPromptConditioning, cast_latents, classifier_free, decode_normalised, flow_match_sigmas,
    register_backbone, timestep_batch,
)
from flow_grpo.backbones.flux.backbone import pack_latents, patch_sigmas, unpack_latents
from flow_grpo.backbones.sd3.backbone import SD3_LORA_TARGET_MODULES
from flow_grpo.backbones.qwenimage.flops import qwenimage_transformer_flops

# Flow-GRPO's Qwen-Image targets (the original flow_grpo's train_qwenimage.py): the joint attention's
# projections of both streams and both streams' MLPs.
QWENIMAGE_LORA_TARGET_MODULES = SD3_LORA_TARGET_MODULES + ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2")


@dataclasses.dataclass
class QwenImageConditioning(MaskedPromptConditioning):
    """What the Qwen-Image transformer is conditioned on: the text encoder's last hidden states and their mask."""


@register_backbone
class QwenImageBackbone(Backbone):
    family = "qwenimage"
    pipeline_classes = ("QwenImagePipeline",)
    guidance_kind = "cfg"
    default_guidance_scale = 4.0
    tiny_model = "builtin:tiny_qwenimage"
    transformer_flops = staticmethod(qwenimage_transformer_flops)
    presets = {"qwenimage": "flow_grpo.backbones.qwenimage.presets:build_qwenimage"}
    negative_prompt = " "  # Flow-GRPO's negative prompt for Qwen-Image's true CFG
    lora_target_modules = QWENIMAGE_LORA_TARGET_MODULES

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        from flow_grpo.backbones.qwenimage.tiny import build_tiny_qwenimage_pipeline

        return build_tiny_qwenimage_pipeline(seed=seed)

    @property
    def text_encoders(self):
        return [self.pipeline.text_encoder]

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels // 4

    @property
    def pooled_dim(self) -> int:
        return self.transformer.config.joint_attention_dim

    def dead_lora_modules(self, targets):
        """The last block's text output branch: its attention output projection and MLP make text states that no
        later layer reads (only the image tokens reach ``proj_out``). Its text queries (``add_q_proj``) stay: they
        are in the graph (zero gradient, as SD3's last block's), so DDP does not stop on them."""
        last = f"transformer_blocks.{len(self.transformer.transformer_blocks) - 1}"
        names = [f"{last}.{name}" for name in ("attn.to_add_out", "txt_mlp.net.0.proj", "txt_mlp.net.2")]
        # PEFT's rule: a target names a module when it is the module's full name or a suffix of it after a dot
        return [name for name in names if any(name == t or name.endswith("." + t) for t in targets)]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_sequence_length: int, device) -> QwenImageConditioning:
        """``QwenImagePipeline.encode_prompt``'s embeddings (tested), each prompt's tokens then zeros up to
        ``max_sequence_length``; prompts longer than that are cut, as the pipeline cuts them."""
        pipeline = self.pipeline
        drop = pipeline.prompt_template_encode_start_idx
        texts = [pipeline.prompt_template_encode.format(prompt) for prompt in prompts]
        tokens = pipeline.tokenizer(texts, max_length=pipeline.tokenizer_max_length + drop, padding=True, truncation=True,
                                    return_tensors="pt").to(device)
        hidden = pipeline.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                       output_hidden_states=True).hidden_states[-1]
        dtype = pipeline.text_encoder.dtype
        embeds = torch.zeros(len(texts), max_sequence_length, hidden.shape[-1], device=device, dtype=dtype)
        mask = torch.zeros(len(texts), max_sequence_length, device=device, dtype=torch.long)
        for i, valid in enumerate(tokens.attention_mask.bool()):
            states = hidden[i][valid][drop : drop + max_sequence_length]
            embeds[i, : len(states)] = states.to(dtype)
            mask[i, : len(states)] = 1
        return QwenImageConditioning(prompt_embeds=embeds, prompt_embeds_mask=mask)

    def sigmas(self, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        _, h, w = self.latent_shape(height, width)
        return flow_match_sigmas(self.pipeline.scheduler, num_steps, (h // 2) * (w // 2), device, patch_sigmas(num_steps))

    def velocity(self, transformer, latents, sigmas, conditioning: QwenImageConditioning, guidance: Guidance, model_dtype=None):
        batch, _, height, width = latents.shape
        hidden_states = pack_latents(cast_latents(latents, model_dtype, transformer))
        timestep = timestep_batch(sigmas, latents)

        def call(states, timesteps, embeds, mask):
            shapes = [[(1, height // 2, width // 2)]] * states.shape[0]
            return transformer(hidden_states=states, timestep=timesteps, encoder_hidden_states=embeds,
                               encoder_hidden_states_mask=mask, img_shapes=shapes, return_dict=False)[0].float()

        embeds, mask = conditioning.prompt_embeds.to(hidden_states.dtype), conditioning.prompt_embeds_mask
        if guidance.scale <= 1.0:
            return unpack_latents(call(hidden_states, timestep, embeds, mask), height, width)
        negative = guidance.negative

        def guided(which):
            negative_embeds = negative.prompt_embeds.to(hidden_states.dtype).expand(batch, -1, -1)
            negative_mask = negative.prompt_embeds_mask.expand(batch, -1)
            if which == "both":
                return call(torch.cat([hidden_states, hidden_states]), torch.cat([timestep, timestep]),
                            torch.cat([negative_embeds, embeds]), torch.cat([negative_mask, mask]))
            if which == "negative":
                return call(hidden_states, timestep, negative_embeds, negative_mask)
            return call(hidden_states, timestep, embeds, mask)

        negative_tokens, text_tokens = classifier_free(guided, guidance)
        combined = negative_tokens + guidance.scale * (text_tokens - negative_tokens)
        rescaled = combined * (text_tokens.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True))
        return unpack_latents(rescaled, height, width)

    @torch.no_grad()
    def diffusers_call(self, conditioning: QwenImageConditioning, negative, latents, spec):
        batch = len(conditioning)
        negative_kwargs = {} if negative is None else dict(
            negative_prompt_embeds=negative.prompt_embeds.expand(batch, -1, -1),
            negative_prompt_embeds_mask=negative.prompt_embeds_mask.expand(batch, -1))
        return self.pipeline(
            prompt_embeds=conditioning.prompt_embeds, prompt_embeds_mask=conditioning.prompt_embeds_mask, **negative_kwargs,
            true_cfg_scale=spec.guidance_scale, num_inference_steps=spec.num_steps, height=spec.height, width=spec.width,
            latents=pack_latents(latents), max_sequence_length=conditioning.prompt_embeds.shape[1], output_type="pt",
        ).images

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return decode_normalised(self.vae, latents, batch_size, frames="one")  # one frame through the video VAE
