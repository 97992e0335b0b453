"""Rewards over HTTP with JSON bodies: ``python -m flow_grpo.reward_server --rewards NAMES``."""

from flow_grpo.reward_server.client import RewardClient, RewardServerError
from flow_grpo.reward_server.server import RewardServer

__all__ = ["RewardClient", "RewardServer", "RewardServerError"]
