"""FLUX.1 Kontext image editing (``FluxKontextPipeline``) behind the backbone layer; :mod:`.tiny` builds a tiny one."""

from flow_grpo.backbones.flux_kontext.backbone import KONTEXT_LORA_TARGET_MODULES, FluxKontextBackbone, KontextConditioning

__all__ = ["KONTEXT_LORA_TARGET_MODULES", "FluxKontextBackbone", "KontextConditioning"]
