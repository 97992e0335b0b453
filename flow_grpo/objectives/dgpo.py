"""DGPO, Direct Group Preference Optimization (Luo et al., arXiv 2510.08425, ICLR 2026; code Luo-Yihong/DGPO):
a group-level Diffusion-DPO on the forward process. ODE rollouts, no per-step policy, no log-probabilities.

The paper's objective (its README: ``max log sigmoid(R(G+|c) - R(G-|c))``; the paper text was not at hand, so
no equation numbers) raises the implicit reward of a group's better half against its worse half, each sample
weighted by its advantage. Per micro-step, for a group ``g`` of clean samples ``x0_i`` with advantages
``A_i`` (the usual group advantages, clipped to +-``adv_clip_max``; the sign says which half, ``|A_i|`` how
much), one shared ``eps`` and one shared flow time ``t`` for the whole group:

    x_t  = (1 - t) x0_i + t eps,    e_i = mean((v_theta(x_t, t) - (eps - x0_i))^2),    e_ref_i likewise
    S_g  = dgpo_beta / |g| * sum_{i in g} A_i (e_i - e_ref_i)          = R(G-) - R(G+),  R = -dgpo_beta e
    loss = mean over rows i of softplus(S_g(i)) / dgpo_beta  +  beta mean((v_theta - v_ref)^2)

``softplus(S) = -log sigmoid(-S)``, so the first term is the paper's ``-log sigmoid(R(G+) - R(G-))`` per group,
weighted by the group's rows. Its gradient is ``sigmoid(S_g) A_i grad e_i / n`` per row, which is the authors'
code exactly (``w_g = sigmoid(S_g)`` detached, ``loss = mean(w_g A_i e_i)``): dividing by ``dgpo_beta`` keeps
their gradient scale, so ``dgpo_beta`` sets only how soon the sigmoid saturates and their learning rates
carry over. The reference is the base (adapters off, or a frozen copy), as the authors' default.

Their trust region (``clip_dsm``, on in every published config): an old policy, a snapshot blended toward the
trained weights after each update with decay ``min(rate step, cap)`` (``old_policy_decay = (0, 0.001, 0.3)``:
at least 70% current weights), gives ``ratio_i = exp(e_old_i - e_i)``; a row whose ratio already left
``1 +- trust_region`` in its advantage's direction (``A > 0`` and ``ratio > 1 + c``, or ``A < 0`` and
``ratio < 1 - c``) keeps its value in ``S_g`` but passes no gradient. After ``old_samples_after`` optimizer
steps the old policy also samples the rollouts (their ``switch_ema_ref``; -1: never).

Groups: the update keeps each group's rows side by side (``keeps_groups_together``) so a minibatch holds whole
groups when ``train.batch_size`` is a multiple of the group's share on this process; ``S_g`` sums over the
group's rows in the minibatch (``dgpo_group_rows`` logs how many). With several processes a group is spread
over them (the k-repeat sampler) and each process takes its own share, where the authors all-reduce the group
sums across GPUs (each of their GPUs holds whole groups).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flow_grpo.ema import Snapshot
from flow_grpo.objectives.base import Minibatch, Objective, Stats, register_objective, snapshot_velocity, snapshot_weights
from flow_grpo.objectives.dpo import flow_matching_error
from flow_grpo.objectives.nft import old_policy_decay
from flow_grpo.flow_policy import FlowPolicy
from flow_grpo.seeding import generator_for


def group_index(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``first`` [n]: the row of each row's group that comes first, ``inverse`` [n]: each row's group number
    0 .. G-1 among the groups present) for group ids ``groups`` [n]."""
    unique, inverse = torch.unique(groups, return_inverse=True)
    positions = torch.arange(len(groups))
    first = torch.full((len(unique),), len(groups), dtype=torch.long).scatter_reduce(0, inverse, positions, reduce="amin")
    return first[inverse], inverse


def trust_region_mask(error: torch.Tensor, old_error: torch.Tensor, advantages: torch.Tensor, clip_range: float) -> torch.Tensor:
    """Rows [n] (bool) whose ``ratio = exp(e_old - e)`` left ``1 +- clip_range`` in their advantage's direction."""
    ratio = torch.exp(old_error - error.detach())
    return torch.where(advantages > 0, ratio > 1.0 + clip_range, ratio < 1.0 - clip_range)


def dgpo_loss(error: torch.Tensor, ref_error: torch.Tensor, advantages: torch.Tensor, groups: torch.Tensor,
              dgpo_beta: float) -> tuple[torch.Tensor, Stats]:
    """``mean_i softplus(S_g(i)) / dgpo_beta`` with ``S_g = dgpo_beta / |g| sum_{i in g} A_i (e_i - e_ref_i)``.

    ``error`` [n] (with gradient), ``ref_error`` [n] (without), ``advantages`` [n], ``groups`` [n] group ids.
    Returns the loss (0-d) and ``dgpo_weight`` (the mean of ``sigmoid(S_g)`` over rows) and
    ``dgpo_group_rows`` (rows per group present).
    """
    _, inverse = group_index(groups)
    num_groups = int(inverse.max()) + 1
    rows = torch.zeros(num_groups, device=error.device).index_add_(0, inverse, torch.ones_like(error))
    weighted = advantages * (error - ref_error.detach())
    group_sum = torch.zeros(num_groups, dtype=weighted.dtype, device=error.device).index_add(0, inverse, weighted)
    score = dgpo_beta * group_sum / rows  # S_g [G]
    loss = (F.softplus(score)[inverse]).mean() / dgpo_beta
    return loss, {"dgpo_weight": torch.sigmoid(score.detach())[inverse].mean(), "dgpo_group_rows": rows.mean()}


@register_objective
class DGPO(Objective):
    """``config.train.dgpo``: ``temperature`` (the preference temperature ``dgpo_beta``), the trust region's
    ``trust_region`` (its ``clip_dsm`` range) and ``old_policy_decay``, ``old_samples_after``; shared: ``beta`` (velocity penalty to the
    reference), ``adv_clip_max``, the trained flow times (``timestep_fraction`` / ``timestep_strategy`` over the
    sampling schedule; each group trains at its first row's)."""

    name = "dgpo"
    summary = "DGPO: group-level DPO, every sample weighted by its advantage inside one sigmoid per group"
    SETTINGS = {
        "temperature": 100.0,  # dgpo_beta: 100 for GenEval and OCR, 10 for PickScore (the authors' config/dgpo.py)
        "trust_region": 0.01,  # the trust region on exp(e_old - e) (0: none, and no old policy forward)
        "old_policy_decay": (0.0, 0.001, 0.3),  # (flat, rate, cap) of the old policy's decay per update
        "old_samples_after": 500,  # optimizer steps after which the old policy samples (-1: never); 200 for OCR
    }
    sde_rollouts = False
    skips_zero_advantages = False  # as the authors': every sample enters its group's sum
    keeps_groups_together = True

    @classmethod
    def needs_reference(cls, config) -> bool:
        return True  # the preference is measured against the base

    def attach(self, parameters, names):
        self.snapshots["old"] = Snapshot(parameters, names=names)

    def rollout_weights(self, global_step: int):
        after = self.settings.old_samples_after
        return snapshot_weights(self.snapshots["old"] if 0 <= after < global_step else None)

    def end_update(self, global_step: int) -> dict[str, float]:
        decay = old_policy_decay(global_step, *self.settings.old_policy_decay)
        self.snapshots["old"].blend(decay)
        return {"old_policy_decay": decay}

    def group_noise(self, minibatch: Minibatch, j: int, groups: torch.Tensor) -> torch.Tensor:
        """One standard normal draw per group, shared by its rows [n, *latent] (seeded by minibatch, step, group)."""
        shape = minibatch.rollout.final_latents.shape[1:]
        draws = {int(g): torch.randn(shape, generator=generator_for(minibatch.noise_seed, "dgpo_noise", j, int(g)))
                 for g in torch.unique(groups)}
        return torch.stack([draws[int(g)] for g in groups]).to(minibatch.device)

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared=None) -> tuple[torch.Tensor, Stats]:
        x0 = minibatch.clean_latents()
        groups = minibatch.rollout.group_ids[minibatch.rows.to(minibatch.rollout.group_ids.device)].cpu()
        first, _ = group_index(groups)
        t = minibatch.schedule_sigmas(j)[first.to(minibatch.device)]  # one flow time per group
        eps = self.group_noise(minibatch, j, groups)
        shape = (-1, *([1] * (x0.ndim - 1)))
        x_t = (1 - t.reshape(shape)) * x0 + t.reshape(shape) * eps
        conditioning = minibatch.conditioning()
        with torch.no_grad():
            v_ref = policy.reference_velocity(x_t, t, conditioning).float()
        clip_range = self.settings.trust_region
        if clip_range > 0:  # before the forward with gradients: the snapshot is swapped in place
            old_error = flow_matching_error(snapshot_velocity(policy, self.snapshots["old"], x_t, t, conditioning), x0, eps)
        v = policy.velocity(x_t, t, conditioning).float()
        error, ref_error = flow_matching_error(v, x0, eps), flow_matching_error(v_ref, x0, eps)
        stats = {}
        if clip_range > 0:
            clipped = trust_region_mask(error, old_error, minibatch.advantages, clip_range)
            error = torch.where(clipped, error.detach(), error)
            stats["clipfrac"] = clipped.float().mean()
        policy_loss, group_stats = dgpo_loss(error, ref_error, minibatch.advantages, groups.to(minibatch.device), self.settings.temperature)
        loss = policy_loss
        stats = {"policy_loss": policy_loss.detach(), **stats, **group_stats, "error_gain": (ref_error - error).mean().detach()}
        if self.config.beta > 0:
            kl = ((v - v_ref) ** 2).mean()
            loss = loss + self.config.beta * kl
            stats["kl_loss"] = kl.detach()
        return loss, stats
