"""Group-relative advantages, the clipped policy loss, the KL to the reference, and their diagnostics.

DESIGN.md section 3. Advantages live in numpy (they are computed once per epoch on gathered rewards); the
losses are torch functions of one micro-step's log-probs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

ADVANTAGE_EPS = 1e-4


def group_advantages(
    keys: Sequence[str], rewards: np.ndarray, global_std: bool = True, eps: float = ADVANTAGE_EPS
) -> np.ndarray:
    """``(r - mean of r's group) / (std + eps)``; groups are samples with equal ``keys`` (the prompt text).

    ``std`` is the standard deviation of all rewards when ``global_std`` (the Flow-GRPO default), else of
    the sample's own group. A group of one sample gets advantage 0.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1 or len(keys) != len(rewards):
        raise ValueError(f"need one reward per key: {len(keys)} keys, rewards of shape {rewards.shape}")
    keys = np.asarray(keys, dtype=object)
    advantages = np.empty_like(rewards)
    batch_std = rewards.std()
    for key in np.unique(keys):
        in_group = keys == key
        group = rewards[in_group]
        std = batch_std if global_std else group.std()
        advantages[in_group] = (group - group.mean()) / (std + eps)
    return advantages


def batch_advantages(rewards: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """DDPO-style advantages: rewards normalised over the whole batch, no groups."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return (rewards - rewards.mean()) / (rewards.std() + eps)


class PerPromptStatTracker:
    """Computes per-prompt advantages and keeps counts for logging.

    Statistics are those of the batch passed to :meth:`update` (one epoch's gathered samples); the tracker
    only remembers which prompts it has seen and the group sizes, for ``get_stats``.
    """

    def __init__(self, global_std: bool = True, eps: float = ADVANTAGE_EPS):
        self.global_std = global_std
        self.eps = eps
        self.group_sizes: dict[str, int] = defaultdict(int)
        self.seen_prompts: set[str] = set()

    def update(self, prompts: Sequence[str], rewards: np.ndarray) -> np.ndarray:
        self.group_sizes = defaultdict(int)
        for prompt in prompts:
            self.group_sizes[prompt] += 1
        self.seen_prompts.update(prompts)
        return group_advantages(prompts, rewards, global_std=self.global_std, eps=self.eps)

    def get_stats(self) -> dict[str, float]:
        sizes = list(self.group_sizes.values())
        return {
            "group_size_mean": float(np.mean(sizes)) if sizes else 0.0,
            "num_groups": float(len(sizes)),
            "num_prompts_seen": float(len(self.seen_prompts)),
        }

    def state_dict(self) -> dict:
        return {"seen_prompts": sorted(self.seen_prompts)}

    def load_state_dict(self, state: dict) -> None:
        self.seen_prompts = set(state["seen_prompts"])


def clip_advantages(advantages: np.ndarray | torch.Tensor, max_abs: float):
    if isinstance(advantages, torch.Tensor):
        return torch.clamp(advantages, -max_abs, max_abs)
    return np.clip(advantages, -max_abs, max_abs)


def clipped_policy_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO/GRPO surrogate ``mean(max(-A r, -A clip(r, 1 - eps, 1 + eps)))`` with ``r = exp(logp - logp_old)``.

    Returns the loss and the ratio (for diagnostics).
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.mean(torch.maximum(unclipped, clipped)), ratio


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std_dev: torch.Tensor) -> torch.Tensor:
    """Exact KL between N(mean, std^2) and N(mean_ref, std^2), averaged over non-batch elements: shape [B].

    ``std_dev`` is the transition's standard deviation as returned by ``sde_step_with_logprob`` (it
    includes ``sqrt(-dt)`` for the ``sde`` type). Some versions of the original divide by ``std_t^2``
    without the ``-dt`` factor, which is ``-dt`` times this value; the betas in ``config/`` say which one
    they were tuned with.
    """
    per_element = (mean.float() - mean_ref.float()) ** 2 / (2 * std_dev.float() ** 2)
    return per_element.mean(dim=tuple(range(1, per_element.ndim)))


@torch.no_grad()
def policy_diagnostics(log_prob: torch.Tensor, old_log_prob: torch.Tensor, clip_range: float) -> dict[str, torch.Tensor]:
    """``approx_kl = 0.5 mean((logp - logp_old)^2)`` and ``clipfrac``, the share of ratios outside the clip."""
    diff = log_prob - old_log_prob
    return {
        "approx_kl": 0.5 * torch.mean(diff**2),
        "clipfrac": torch.mean((torch.abs(torch.exp(diff) - 1.0) > clip_range).float()),
    }


def select_train_timesteps(
    num_steps: int,
    timestep_fraction: float,
    strategy: str,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of the denoising steps to train, shape [batch_size, num_train_timesteps].

    ``num_train_timesteps = int(num_steps * timestep_fraction)`` (at least 1). ``first``: the first (high
    noise) steps for every sample; ``random``: an independent random subset per sample, in step order.
    """
    num_train = max(1, int(num_steps * timestep_fraction))
    if num_train > num_steps:
        raise ValueError(f"timestep_fraction {timestep_fraction} asks for {num_train} of {num_steps} steps")
    if strategy == "first":
        return torch.arange(num_train).expand(batch_size, num_train).clone()
    if strategy == "random":
        scores = torch.rand(batch_size, num_steps, generator=generator)
        return torch.sort(torch.argsort(scores, dim=1)[:, :num_train], dim=1).values
    raise ValueError(f"unknown timestep strategy {strategy!r}; valid: first, random")


# --- GRPO-Guard ---------------------------------------------------------------------------------------------
# The per-step log-ratio of two Gaussians with one std has expectation -bias under the old policy, with
# bias = mean((mean_theta - mean_old)^2) / (2 std^2): the ratio drifts below 1 as the means separate, most
# at low-noise steps. GRPO-Guard adds the bias back, rescales the log-ratio by std (so that steps of
# different noise are comparable) and divides each step's loss by -dt.


def grpo_guard_ratio(log_prob, old_log_prob, prev_sample_mean, old_prev_sample_mean, std_dev) -> torch.Tensor:
    """``exp((log p - log p_old + bias) * std)`` with ``bias = mean((mean_theta - mean_old)^2) / (2 std^2)``.

    ``std_dev`` is the transition's standard deviation, shape [B] or [B, 1, ..., 1]. Equals 1 on-policy.
    """
    std = std_dev.reshape(-1).float()
    dims = tuple(range(1, prev_sample_mean.ndim))
    bias = ((prev_sample_mean.float() - old_prev_sample_mean.float()) ** 2).mean(dim=dims) / (2 * std**2)
    return torch.exp((log_prob - old_log_prob + bias) * std)


def grpo_guard_loss(ratio, advantages, clip_range: float, dt) -> torch.Tensor:
    """The clipped surrogate on GRPO-Guard's ratio, divided by ``-dt`` (per sample)."""
    dt = torch.as_tensor(dt, dtype=ratio.dtype, device=ratio.device).reshape(-1)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.mean(torch.maximum(unclipped, clipped) / (-dt))
