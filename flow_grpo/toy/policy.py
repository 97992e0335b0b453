"""The toy worlds behind the model boundary (``flow_grpo.flow_policy.FlowPolicy``): an MLP velocity and a
frozen copy of the base as the reference."""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.flow_policy import FlowPolicy
from flow_grpo.rollout_types import Conditioning
from flow_grpo.sde import SDEParams


@dataclasses.dataclass
class ToyConditioning(Conditioning):
    embedding: torch.Tensor  # [N, cond_dim] the world's prompt code (cond_dim 0 for an unconditional world)

    @property
    def pooled(self) -> torch.Tensor:
        return self.embedding


@dataclasses.dataclass
class ToyPolicy(FlowPolicy):
    """``model(x, sigma, cond)`` as the trained velocity; ``reference`` (a frozen copy of the base, or None
    when no objective needs one) as the reference's."""

    model: torch.nn.Module
    reference: torch.nn.Module | None
    sde: SDEParams

    @property
    def trained_module(self) -> torch.nn.Module:
        return self.model

    def velocity(self, latents, sigmas, conditioning: ToyConditioning) -> torch.Tensor:
        return self.model(latents, sigmas, conditioning.embedding)

    @torch.no_grad()
    def reference_velocity(self, latents, sigmas, conditioning: ToyConditioning) -> torch.Tensor:
        if self.reference is None:
            raise ValueError("this toy run keeps no reference model (it is made when train.beta > 0 or the objective needs one)")
        return self.reference(latents, sigmas, conditioning.embedding)
