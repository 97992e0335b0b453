"""Group-relative advantages (docs/architecture.md, "The math"): pure numpy on one epoch's gathered rewards."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

ADVANTAGE_EPS = 1e-4


def group_advantages(keys: Sequence, rewards: np.ndarray, global_std: bool = True, eps: float = ADVANTAGE_EPS) -> np.ndarray:
    """``(r - mean of r's group) / (std + eps)``; groups are samples with equal ``keys`` (e.g. the prompt).

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


def clip_advantages(advantages: np.ndarray | torch.Tensor, max_abs: float):
    if isinstance(advantages, torch.Tensor):
        return torch.clamp(advantages, -max_abs, max_abs)
    return np.clip(advantages, -max_abs, max_abs)
