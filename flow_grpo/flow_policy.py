"""The model boundary (docs/architecture.md, "The model boundary"): what the update loop and the objectives
see of a model.

A :class:`FlowPolicy` gives velocities for ``(latents, sigmas, conditioning)`` with the trained weights and
with the frozen reference, and turns them into the log-probability of a stored transition with the same
``flow_grpo.sde`` step that sampled it. ``flow_grpo.backbones.policy.BackbonePolicy`` (any diffusers family, its guidance,
LoRA adapters disabled as the reference) and ``flow_grpo.toy.policy.ToyPolicy`` (an MLP and a frozen copy)
implement it; nothing above this layer knows which one it trains.
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.rollout_types import Conditioning, TransitionBatch
from flow_grpo.sde import SDEParams, sde_step_with_logprob


@dataclasses.dataclass
class StepScore:
    """One transition under a policy: the Gaussian step's log-prob of the stored ``x_next``, mean and std."""

    log_prob: torch.Tensor  # [n]
    mean: torch.Tensor  # [n, *latent]
    std_dev: torch.Tensor  # [n, 1, ...]: the transition's standard deviation


class FlowPolicy:
    """A velocity model as a Gaussian policy over denoising steps. Subclasses implement the two velocities
    and name the module(s) the optimizer trains.

    Attributes:
        sde: the step the rollouts were sampled with (noise level and type).
        trained_module: the module whose weights are trained, as prepared by accelerate (DDP-wrapped when
            there are several processes): the update accumulates gradients over it.
    """

    sde: SDEParams
    trained_module: torch.nn.Module

    def velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        """``v_theta`` with the trained weights, gradients flowing when enabled. ``sigmas``: [n]."""
        raise NotImplementedError

    def reference_velocity(self, latents: torch.Tensor, sigmas: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        """``v_ref`` of the frozen reference (the base model), without gradients."""
        raise NotImplementedError

    def score(self, batch: TransitionBatch) -> StepScore:
        """The trained policy's Gaussian step on ``batch``, scoring its stored ``next_latents``."""
        velocity = self.velocity(batch.latents, batch.sigmas, batch.conditioning)
        return self._step(velocity, batch)

    @torch.no_grad()
    def reference_score(self, batch: TransitionBatch) -> StepScore:
        velocity = self.reference_velocity(batch.latents, batch.sigmas, batch.conditioning)
        return self._step(velocity, batch)

    def _step(self, velocity: torch.Tensor, batch: TransitionBatch) -> StepScore:
        _, log_prob, mean, std_dev = sde_step_with_logprob(
            velocity, batch.sigmas, batch.sigmas_next, batch.latents, self.sde.noise_level,
            prev_sample=batch.next_latents, sde_type=self.sde.sde_type,
        )
        return StepScore(log_prob=log_prob, mean=mean, std_dev=std_dev)
