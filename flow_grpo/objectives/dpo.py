"""Online Diffusion-DPO on the forward process (the original flow_grpo's train_sd3_dpo.py): per group, the
best image against the worst, with the same noise and flow time for both, relative to a reference.

For a pair (winner ``w``, loser ``l``) of one prompt's clean samples, a shared ``eps`` and a shared flow time
``t`` ~ logit-normal (mean 0, std 1, then shifted by ``time_shift`` as SD3's schedule is):

    x_t  = (1 - t) x0 + t eps,     e = mean((v(x_t, t) - (eps - x0))^2)     per image
    loss = -log sigmoid(-dpo_beta / 2 ((e_w - e_ref_w) - (e_l - e_ref_l)))

The reference is a snapshot of the trained weights, which also samples the rollouts (as the original's "ref"
adapter): the base at the start, replaced by the current weights every ``ref_update_step`` optimizer steps
(0: never, offline DPO against the base; the original's online DPO uses 40).

Pairs: the rows of the update are the winners (training advantage 1), each finding its loser, the lowest
reward of its group among this process's samples; groups whose rewards are all equal give no pair. With
several processes a group is spread over them (the k-repeat sampler), so each process pairs its own share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flow_grpo.objectives.base import Minibatch, RefreshedSnapshotObjective, Stats, register_objective, snapshot_velocity
from flow_grpo.flow_policy import FlowPolicy
from flow_grpo.rollout_types import Rollout


def logit_normal_times(uniform_a: torch.Tensor, uniform_b: torch.Tensor, shift: float) -> torch.Tensor:
    """t = shift u / (1 + (shift - 1) u) with u = sigmoid(z), z ~ N(0, 1) drawn by Box-Muller from two
    uniform draws [n]; clamped away from 0 and 1."""
    z = torch.sqrt(-2 * torch.log(torch.clamp(uniform_a, min=1e-7))) * torch.cos(2 * torch.pi * uniform_b)
    u = torch.sigmoid(z)
    return torch.clamp(shift * u / (1 + (shift - 1) * u), 1e-3, 1 - 1e-3)


def group_extremes(rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(best [N] bool, partner [N] long): the highest reward of each group with a reward spread (first on ties),
    and for those rows the row of their group's lowest reward (-1 elsewhere)."""
    rewards = torch.as_tensor(rollout.rewards["avg"], dtype=torch.float64)
    best = torch.zeros(len(rewards), dtype=torch.bool)
    partner = torch.full((len(rewards),), -1, dtype=torch.long)
    for group in torch.unique(rollout.group_ids):
        members = torch.nonzero((rollout.group_ids == group) & torch.isfinite(rewards)).flatten()
        if len(members) < 2 or rewards[members].max() == rewards[members].min():
            continue
        winner = members[torch.argmax(rewards[members])]
        best[winner] = True
        partner[winner] = members[torch.argmin(rewards[members])]
    return best, partner


def flow_matching_error(velocity: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``mean((v - (eps - x0))^2)`` per sample [n]."""
    return ((velocity.float() - (eps - x0)) ** 2).mean(dim=tuple(range(1, x0.ndim)))


def dpo_loss(error_w, error_l, ref_error_w, ref_error_l, beta: float) -> torch.Tensor:
    """``-log sigmoid(-beta / 2 ((e_w - e_ref_w) - (e_l - e_ref_l)))`` per pair [n]."""
    return -F.logsigmoid(-0.5 * beta * ((error_w - ref_error_w) - (error_l - ref_error_l)))


@register_objective
class OnlineDPO(RefreshedSnapshotObjective):
    """``config.train.dpo``: ``temperature`` (the paper's beta), ``ref_update_step``, ``time_shift``."""

    name = "dpo"
    summary = "online Diffusion-DPO between each group's best and worst image"
    SETTINGS = {
        "temperature": 100.0,  # beta in the paper: the DPO temperature on the flow-matching errors
        "ref_update_step": 0,  # refresh the sampling reference every this many optimizer steps (0: never)
        "time_shift": 3.0,  # logit-normal flow times shifted as SD3's schedule (shift 3)
    }
    sde_rollouts = False

    @classmethod
    def needs_reference(cls, config) -> bool:
        return False  # its reference is its own snapshot

    def attach(self, parameters, names):
        super().attach(parameters, names)  # the reference, which is also the sampler
        self.partner = None

    def training_advantages(self, rollout: Rollout, advantages: torch.Tensor) -> torch.Tensor:
        best, self.partner = group_extremes(rollout)
        return best.float()

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared=None) -> tuple[torch.Tensor, Stats]:
        partner = self.partner[minibatch.rows]
        losers = torch.where(partner >= 0, partner, minibatch.rows)  # refill rows (weight 0) pair with themselves
        pair = Minibatch(rollout=minibatch.rollout, rows=torch.cat([minibatch.rows, losers]),
                         steps=minibatch.steps.repeat(2, 1), advantages=minibatch.advantages.repeat(2),
                         device=minibatch.device, noise_seed=minibatch.noise_seed)
        n = len(minibatch.rows)
        x0 = pair.clean_latents()
        eps = minibatch.noise(j).repeat(2, *([1] * (x0.ndim - 1)))  # the same noise for winner and loser
        t = logit_normal_times(minibatch.uniform(j, "t_a"), minibatch.uniform(j, "t_b"), self.settings.time_shift).repeat(2)
        shape = (-1, *([1] * (x0.ndim - 1)))
        x_t = (1 - t.reshape(shape)) * x0 + t.reshape(shape) * eps
        conditioning = pair.conditioning()
        ref_error = flow_matching_error(snapshot_velocity(policy, self.snapshots["ref"], x_t, t, conditioning), x0, eps)
        error = flow_matching_error(policy.velocity(x_t, t, conditioning), x0, eps)
        per_pair = dpo_loss(error[:n], error[n:], ref_error[:n], ref_error[n:], self.settings.temperature)
        weight = minibatch.advantages
        loss = (weight * per_pair).sum() / torch.clamp(weight.sum(), min=1.0)
        margin = ((ref_error[:n] - error[:n]) - (ref_error[n:] - error[n:])).detach()
        stats = {"policy_loss": loss.detach(), "dpo_accuracy": ((margin > 0).float() * weight).sum() / torch.clamp(weight.sum(), min=1.0),
                 "dpo_margin": (margin * weight).sum() / torch.clamp(weight.sum(), min=1.0)}
        return loss, stats
