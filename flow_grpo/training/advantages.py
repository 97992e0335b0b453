"""From this process's rewards to its advantages: gather over processes, group, take our slice, and choose
which samples to train on (dropping all-zero advantages, equal counts on every process)."""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo.advantages import batch_advantages, clip_advantages, group_advantages
from flow_grpo.rollout_types import Rollout


def gather_rewards(accelerator, rewards: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every process's reward columns, concatenated in process order."""
    names = list(rewards)
    local = torch.as_tensor(np.stack([rewards[n] for n in names], axis=1), dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(local).cpu().numpy()
    return {name: gathered[:, i] for i, name in enumerate(names)}


def compute_advantages(accelerator, rollout: Rollout, train_config) -> tuple[torch.Tensor, dict]:
    """Advantages of this process's samples [N] (float32) and diagnostics.

    The ``avg`` rewards and the group ids are gathered from all processes; every process computes the
    advantages of the whole gathered batch (``train_config.per_prompt_stat_tracking``: per group, with the
    std of the whole batch when ``global_std``; else normalised over the batch), clips them to
    ``adv_clip_max`` and keeps its own contiguous slice. Non-finite rewards (``reward_nan_policy='drop'``) get
    advantage 0 and are left out of the statistics.
    """
    rewards = rollout.rewards["avg"]
    n_local, device = len(rewards), accelerator.device
    all_rewards = accelerator.gather(torch.as_tensor(rewards, dtype=torch.float64, device=device)).cpu().numpy()
    keys = accelerator.gather(rollout.group_ids.to(device)).cpu().numpy()
    all_ranks = accelerator.gather(torch.full((n_local,), accelerator.process_index, device=device)).cpu().numpy()
    finite = np.isfinite(all_rewards)
    advantages = np.zeros_like(all_rewards)
    if finite.any():
        if train_config.per_prompt_stat_tracking:
            advantages[finite] = group_advantages(keys[finite], all_rewards[finite], global_std=train_config.global_std)
        else:
            advantages[finite] = batch_advantages(all_rewards[finite])
    advantages = clip_advantages(advantages, train_config.adv_clip_max)

    # consistency: every process must have computed the same advantages for the whole batch
    checksum = torch.tensor([float(np.sum(advantages * np.arange(1, len(advantages) + 1)))], dtype=torch.float64, device=device)
    checksums = accelerator.gather(checksum).cpu().numpy()
    groups = np.unique(keys)
    stats = {
        "advantage_abs_mean": float(np.abs(advantages).mean()),
        "advantage_checksum_spread": float(checksums.max() - checksums.min()),
        "group_process_span": float(np.mean([len(set(all_ranks[keys == key])) for key in groups])),
        "num_groups": float(len(groups)),
        "reward_nonfinite": float((~finite).sum()),
        "zero_std_groups": float(np.mean([np.std(all_rewards[finite & (keys == k)]) == 0 for k in np.unique(keys[finite])])) if finite.any() else 1.0,
    }
    start = accelerator.process_index * n_local
    return torch.as_tensor(advantages[start : start + n_local], dtype=torch.float32), stats


def select_training_samples(accelerator, advantages: torch.Tensor, generator: torch.Generator, multiple_of: int = 1,
                            skip_zero: bool = True) -> tuple[torch.Tensor, dict]:
    """Indices of this process's samples to train on.

    Samples with advantage exactly 0 (a group whose rewards are all equal, or a NaN reward) carry no policy
    gradient and are dropped (``skip_zero``, the objective's ``skips_zero_advantages``; else every sample is
    kept). Every process must run the same number of micro-steps (DDP), and that number must fill whole
    accumulation windows, so each process keeps ``target`` samples: the largest non-zero count over processes
    rounded up to a multiple of ``multiple_of`` (train batch size x accumulation steps), at most all of them,
    refilled with zero-advantage samples picked at random.
    """
    nonzero = torch.nonzero(advantages != 0).flatten()
    if not skip_zero:
        return torch.arange(len(advantages)), {"kept_fraction": len(nonzero) / max(1, len(advantages)),
                                               "trained_samples": float(len(advantages))}
    zero = torch.nonzero(advantages == 0).flatten()
    counts = accelerator.gather(torch.tensor([len(nonzero)], device=accelerator.device)).cpu()
    target = min(len(advantages), -(-int(counts.max()) // multiple_of) * multiple_of)
    refill = zero[torch.randperm(len(zero), generator=generator)[: max(0, target - len(nonzero))]]
    keep = torch.sort(torch.cat([nonzero, refill])).values
    return keep, {"kept_fraction": len(nonzero) / max(1, len(advantages)), "trained_samples": float(len(keep))}
