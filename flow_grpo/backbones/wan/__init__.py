"""Wan2.1 text-to-video (``WanPipeline``, ``WanTransformer3DModel``) behind the backbone layer; :mod:`.tiny` builds a tiny one."""

from flow_grpo.backbones.wan.backbone import WAN_LORA_TARGET_MODULES, WanBackbone, WanConditioning

__all__ = ["WAN_LORA_TARGET_MODULES", "WanBackbone", "WanConditioning"]
