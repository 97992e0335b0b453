"""FLUX.1 (``FluxPipeline``, ``FluxTransformer2DModel``) behind the backbone layer; :mod:`.tiny` builds a tiny one."""

from flow_grpo.backbones.flux.backbone import FLUX_LORA_TARGET_MODULES, FluxBackbone, FluxConditioning

__all__ = ["FLUX_LORA_TARGET_MODULES", "FluxBackbone", "FluxConditioning"]
