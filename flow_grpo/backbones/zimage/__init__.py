"""Z-Image (``ZImagePipeline``, ``ZImageTransformer2DModel``) behind the backbone layer; :mod:`.tiny` builds a tiny one."""

from flow_grpo.backbones.zimage.backbone import ZIMAGE_LORA_TARGET_MODULES, ZImageBackbone, ZImageConditioning

__all__ = ["ZIMAGE_LORA_TARGET_MODULES", "ZImageBackbone", "ZImageConditioning"]
