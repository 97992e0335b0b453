"""SD3 behind the model boundary (``flow_grpo.policy.FlowPolicy``): the trained transformer's velocity with
the training guidance, and the reference's (the same transformer with its LoRA adapters disabled, or a frozen
copy for full fine-tuning)."""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from flow_grpo.policy import FlowPolicy
from flow_grpo.sd3.prompt import SD3Conditioning
from flow_grpo.sd3.sampling import Guidance, predict_velocity
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
class SD3Policy(FlowPolicy):
    """Velocities of an ``SD3Transformer2DModel`` at ``timestep = sigma * timestep_scale``."""

    transformer: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes): used with gradients
    unwrapped: torch.nn.Module  # the same module unwrapped: used without gradients (no DDP collectives), and as reference
    frozen_reference: torch.nn.Module | None  # a frozen copy of the base (full fine-tuning), or None (LoRA: adapters off)
    guidance: Guidance  # the training-time CFG (config.train.cfg: the sampling scale, or 1 for none)
    sde: SDEParams  # the step the rollouts were sampled with
    model_dtype: torch.dtype  # what latents are cast to before the transformer (the inference dtype)
    timestep_scale: float = 1000.0  # the scheduler's num_train_timesteps

    @property
    def trained_module(self) -> torch.nn.Module:
        return self.transformer

    def _velocity(self, module, latents, sigmas, conditioning: SD3Conditioning) -> torch.Tensor:
        return predict_velocity(module, latents, sigmas * self.timestep_scale, conditioning, self.guidance, self.model_dtype)

    def velocity(self, latents, sigmas, conditioning: SD3Conditioning) -> torch.Tensor:
        module = self.transformer if torch.is_grad_enabled() else self.unwrapped
        return self._velocity(module, latents, sigmas, conditioning)

    @torch.no_grad()
    def reference_velocity(self, latents, sigmas, conditioning: SD3Conditioning) -> torch.Tensor:
        with reference_model(self.unwrapped, self.frozen_reference) as reference:
            return self._velocity(reference, latents, sigmas, conditioning)
