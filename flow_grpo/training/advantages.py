"""From this process's rewards to its advantages: gather over processes, group by prompt, take our slice,
and choose which samples to train on (dropping all-zero advantages, equal counts on every process)."""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo import grpo


def gather_rewards(accelerator, rewards: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every process's reward columns, concatenated in process order."""
    names = list(rewards)
    local = torch.as_tensor(np.stack([rewards[n] for n in names], axis=1), dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(local).cpu().numpy()
    return {name: gathered[:, i] for i, name in enumerate(names)}


def compute_advantages(*, accelerator, rewards_avg: np.ndarray, prompt_ids: torch.Tensor, prompts_of_dataset, config, tracker) -> tuple[torch.Tensor, dict]:
    """Advantages of this process's samples [N] and diagnostics.

    Rewards and prompt ids are gathered from all processes; every process computes the advantages of the
    whole gathered batch (group key = prompt text) and keeps its own contiguous slice. Non-finite rewards
    (``reward_nan_policy='drop'``) get advantage 0 and are left out of the group statistics.
    """
    n_local = len(rewards_avg)
    device = accelerator.device
    all_rewards = accelerator.gather(torch.as_tensor(rewards_avg, dtype=torch.float64, device=device)).cpu().numpy()
    all_ids = accelerator.gather(prompt_ids.to(device)).cpu().numpy()
    all_ranks = accelerator.gather(torch.full((n_local,), accelerator.process_index, device=device)).cpu().numpy()
    keys = np.asarray([prompts_of_dataset[i] for i in all_ids], dtype=object)
    finite = np.isfinite(all_rewards)
    advantages = np.zeros_like(all_rewards)
    if finite.any():
        if config.per_prompt_stat_tracking:
            advantages[finite] = tracker.update(list(keys[finite]), all_rewards[finite])
        else:
            advantages[finite] = grpo.batch_advantages(all_rewards[finite])
    advantages = grpo.clip_advantages(advantages, config.train.adv_clip_max)

    # consistency: every process must have computed the same advantages for the whole batch
    checksum = torch.tensor([float(np.sum(advantages * np.arange(1, len(advantages) + 1)))], dtype=torch.float64, device=device)
    checksums = accelerator.gather(checksum).cpu().numpy()
    spans = [len(set(all_ranks[keys == key])) for key in np.unique(keys)]
    start = accelerator.process_index * n_local
    stats = {
        "advantage_abs_mean": float(np.abs(advantages).mean()),
        "advantage_checksum_spread": float(checksums.max() - checksums.min()),
        "group_process_span": float(np.mean(spans)),
        "num_groups": float(len(spans)),
        "reward_nonfinite": float((~finite).sum()),
        "zero_std_groups": float(np.mean([np.std(all_rewards[finite & (keys == k)]) == 0 for k in np.unique(keys[finite])])) if finite.any() else 1.0,
    }
    return torch.as_tensor(advantages[start : start + n_local], dtype=torch.float32), stats


def select_training_samples(accelerator, advantages: torch.Tensor, generator: torch.Generator, multiple_of: int = 1) -> tuple[torch.Tensor, dict]:
    """Indices of this process's samples to train on.

    Samples with advantage exactly 0 (a group whose rewards are all equal, or a NaN reward) carry no policy
    gradient and are dropped. Every process must run the same number of micro-steps (DDP), and that number
    must fill whole accumulation windows, so each process keeps ``target`` samples: the largest non-zero
    count over processes rounded up to a multiple of ``multiple_of`` (train batch size x accumulation
    steps), at most all of them, refilled with zero-advantage samples picked at random.
    """
    nonzero = torch.nonzero(advantages != 0).flatten()
    zero = torch.nonzero(advantages == 0).flatten()
    counts = accelerator.gather(torch.tensor([len(nonzero)], device=accelerator.device)).cpu()
    target = min(len(advantages), -(-int(counts.max()) // multiple_of) * multiple_of)
    refill = zero[torch.randperm(len(zero), generator=generator)[: max(0, target - len(nonzero))]]
    keep = torch.sort(torch.cat([nonzero, refill])).values
    return keep, {"kept_fraction": len(nonzero) / max(1, len(advantages)), "trained_samples": float(len(keep))}
