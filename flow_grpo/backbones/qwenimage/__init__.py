"""Qwen-Image (``QwenImagePipeline``, ``QwenImageTransformer2DModel``) behind the backbone layer; :mod:`.tiny`
builds a tiny one."""

from flow_grpo.backbones.qwenimage.backbone import QWENIMAGE_LORA_TARGET_MODULES, QwenImageBackbone, QwenImageConditioning

__all__ = ["QWENIMAGE_LORA_TARGET_MODULES", "QwenImageBackbone", "QwenImageConditioning"]
