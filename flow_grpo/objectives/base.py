"""What an objective is to the update loop (docs/architecture.md, "Objectives").

The loop (``flow_grpo.training.update``) cuts this process's kept samples into minibatches and gives each
minibatch ``J`` micro-steps (``J`` = trained timesteps per sample); an optimizer step follows every
``gradient_accumulation_steps x J`` micro-steps. For each minibatch it calls :meth:`Objective.prepare` once
(without gradients), then :meth:`Objective.loss` for micro-step ``j = 0 .. J-1`` and back-propagates the
loss. Everything objective-specific (which tensors to re-score, references, extra heads) lives in the
objective; the loop holds no objective branch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from flow_grpo.policy import FlowPolicy
from flow_grpo.rollout import Rollout, TransitionBatch

Stats = dict[str, torch.Tensor]  # name -> 0-d tensor; the loop averages each name over the epoch's update


@dataclasses.dataclass
class Minibatch:
    """Rows of this process's rollout that one group of micro-steps trains on."""

    rollout: Rollout
    rows: torch.Tensor  # [n] indices into the rollout
    steps: torch.Tensor  # [n, J] stored-step indices of each row; micro-step j trains steps[:, j]
    advantages: torch.Tensor  # [n] float32 on the training device
    device: torch.device

    @property
    def num_micro_steps(self) -> int:
        return self.steps.shape[1]

    def transitions(self, j: int) -> TransitionBatch:
        """The stored transitions of micro-step ``j``: step ``steps[i, j]`` of row ``rows[i]``."""
        return self.rollout.transitions(self.rows, self.steps[:, j], self.device)


class Objective:
    """A training objective: what it needs from a rollout, and the loss of one micro-step.

    Subclasses set ``name`` and the ``needs_*`` flags, and implement :meth:`loss` (and :meth:`prepare` when a
    minibatch needs work across its micro-steps). ``trained_modules`` are extra modules the optimizer trains
    beside the policy (FlowRL's log Z head); the trainer prepares them with accelerate, saves them in
    checkpoints as ``<name>.<parameter>`` and hands them back in this dict.

    Args:
        config: ``config.train`` (``beta``, ``clip_range`` and the objective's own keys).
        pooled_dim: width of ``Conditioning.pooled``, for objectives with a prompt-conditioned head.
    """

    name: ClassVar[str]
    needs_log_probs: ClassVar[bool] = True  # SDE rollouts storing every stochastic step's latents and log-probs
    needs_step_means: ClassVar[bool] = False  # also each stored step's Gaussian mean

    def __init__(self, config, pooled_dim: int = 0):
        self.config = config
        self.trained_modules: dict[str, torch.nn.Module] = {}

    @classmethod
    def needs_reference(cls, config) -> bool:
        """Whether the loss calls ``policy.reference_velocity`` (the trainer then keeps a reference model)."""
        return config.beta > 0

    def prepare(self, policy: FlowPolicy, minibatch: Minibatch) -> tuple[Any, Stats]:
        """Called once per minibatch before its micro-steps, without gradients; returns a state handed to
        every :meth:`loss` call of the minibatch, and statistics to log."""
        return None, {}

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared: Any) -> tuple[torch.Tensor, Stats]:
        """The loss of micro-step ``j`` (a 0-d tensor to back-propagate) and statistics to log."""
        raise NotImplementedError
