"""Stable Diffusion 3 / 3.5 through diffusers' classes: prompt encoding and the backbone (velocity with CFG,
schedule, decoding); :mod:`.tiny` builds a tiny one from config."""

from flow_grpo.backbones.sd3.backbone import SD3_LORA_TARGET_MODULES, SD3Backbone
from flow_grpo.backbones.sd3.prompt import SD3Conditioning, encode_prompt

__all__ = ["SD3Backbone", "SD3Conditioning", "SD3_LORA_TARGET_MODULES", "encode_prompt"]
