"""The toy worlds' sampling schedule and their model as a velocity for ``flow_grpo.sampling_loop``."""

from __future__ import annotations

import torch

from flow_grpo.sampling_loop import Velocity


def sigma_schedule(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """``num_steps + 1`` sigmas from 1 to 0, optionally time-shifted as SD3 does (``shift * t / (1 + (shift - 1) t)``)."""
    t = torch.linspace(1.0, 0.0, num_steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def toy_velocity(model, cond: torch.Tensor) -> Velocity:
    """``model`` conditioned on ``cond`` [B, cond_dim], as the sampler's ``velocity(latents, sigma)``."""

    def velocity(latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return model(latents, sigma, cond)

    return velocity
