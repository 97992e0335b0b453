"""GRPO-Guard: Flow-GRPO with a regulated ratio.

The per-step log-ratio of two Gaussians with one std has expectation ``-bias`` under the old policy, with
``bias = mean((mean_theta - mean_old)^2) / (2 std^2)``: the ratio drifts below 1 as the means separate, most at
low-noise steps. GRPO-Guard adds the bias back, rescales the log-ratio by ``std`` (so that steps of different
noise are comparable) and divides each step's loss by ``-dt``:

    ratio = exp((log p_theta - log p_old + bias) * std)                      ([n], exactly 1 on-policy)
    policy_loss = mean(max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) / (-dt))
    loss = policy_loss + beta mean(KL)                                         (the KL of flow_grpo.objectives.grpo)

It needs the sampling policy's step means, stored at sampling.
"""

from __future__ import annotations

import torch

from flow_grpo.objectives.grpo import GRPO
from flow_grpo.flow_policy import StepScore
from flow_grpo.rollout_types import TransitionBatch
from flow_grpo.objectives.base import register_objective


def grpo_guard_ratio(log_prob, old_log_prob, prev_sample_mean, old_prev_sample_mean, std_dev) -> torch.Tensor:
    """``exp((log p - log p_old + bias) * std)`` with ``bias = mean((mean_theta - mean_old)^2) / (2 std^2)``.

    ``log_prob``, ``old_log_prob``: [n]; means [n, *latent]; ``std_dev`` [n] or [n, 1, ..., 1]. Returns [n].
    """
    std = std_dev.reshape(-1).float()
    dims = tuple(range(1, prev_sample_mean.ndim))
    bias = ((prev_sample_mean.float() - old_prev_sample_mean.float()) ** 2).mean(dim=dims) / (2 * std**2)
    return torch.exp((log_prob - old_log_prob + bias) * std)


def grpo_guard_loss(ratio, advantages, clip_range: float, dt) -> torch.Tensor:
    """The clipped surrogate on GRPO-Guard's ratio [n], divided by ``-dt`` [n] per sample (0-d)."""
    dt = torch.as_tensor(dt, dtype=ratio.dtype, device=ratio.device).reshape(-1)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.mean(torch.maximum(unclipped, clipped) / (-dt))


@register_objective
class GRPOGuard(GRPO):
    name = "grpo_guard"
    summary = "GRPO-Guard: Flow-GRPO's surrogate on a re-centred, std-scaled ratio, divided by -dt"
    needs_step_means = True

    def policy_loss(self, score: StepScore, batch: TransitionBatch, advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.old_means is None:
            raise ValueError("grpo_guard needs the step means stored at sampling (a rollout with prev_sample_means)")
        ratio = grpo_guard_ratio(score.log_prob, batch.old_log_probs, score.mean, batch.old_means, score.std_dev)
        return grpo_guard_loss(ratio, advantages, self.config.clip_range, batch.sigmas_next - batch.sigmas), ratio
