"""Any backbone behind the model boundary (``flow_grpo.flow_policy.FlowPolicy``): the trained transformer's
velocity with the training guidance, and the reference's (the same transformer with its LoRA adapters
disabled, or a frozen copy for full fine-tuning)."""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from flow_grpo.backbones.base import Backbone, Guidance
from flow_grpo.flow_policy import FlowPolicy
from flow_grpo.rollout_types import Conditioning
from flow_grpo.sde import SDEParams


@contextlib.contextmanager
def reference_model(unwrapped_transformer, frozen_reference=None):
    """The KL reference: the frozen copy when there is one, else the transformer with its LoRA disabled."""
    if frozen_reference is not None:
        yield frozen_reference
        return
    unwrapped_transformer.disable_adapters()
    try:
        yield unwrapped_transformer
    finally:
        unwrapped_transformer.enable_adapters()


@dataclasses.dataclass
class BackbonePolicy(FlowPolicy):
    """``backbone.velocity`` of the trained transformer (and of the reference)."""

    backbone: Backbone
    transformer: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes): used with gradients
    unwrapped: torch.nn.Module  # the same module unwrapped: used without gradients (no DDP collectives), and as reference
    frozen_reference: torch.nn.Module | None  # a frozen copy of the base (full fine-tuning), or None (LoRA: adapters off)
    guidance: Guidance  # the training-time guidance (Backbone.training_guidance_scale)
    sde: SDEParams  # the step the rollouts were sampled with
    model_dtype: torch.dtype  # what latents are cast to before the transformer (the inference dtype)

    @property
    def trained_module(self) -> torch.nn.Module:
        return self.transformer

    def velocity(self, latents, sigmas, conditioning: Conditioning) -> torch.Tensor:
        module = self.transformer if torch.is_grad_enabled() else self.unwrapped
        return self.backbone.velocity(module, latents, sigmas, conditioning, self.guidance, self.model_dtype)

    @torch.no_grad()
    def reference_velocity(self, latents, sigmas, conditioning: Conditioning) -> torch.Tensor:
        with reference_model(self.unwrapped, self.frozen_reference) as reference:
            return self.backbone.velocity(reference, latents, sigmas, conditioning, self.guidance, self.model_dtype)
