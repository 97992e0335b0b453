"""Rewards by name; see registry.py for the contract."""

from flow_grpo.rewards.registry import (
    MultiReward,
    RewardError,
    available_rewards,
    build_reward,
    multi_score,
    register,
)

__all__ = ["MultiReward", "RewardError", "available_rewards", "build_reward", "multi_score", "register"]
