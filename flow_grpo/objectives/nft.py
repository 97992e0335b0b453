"""DiffusionNFT (arXiv 2509.16117): negative-aware fine-tuning on the forward process, from the old policy's
own samples (ODE rollouts, no log-probs).

Per micro-step, for n clean samples ``x0`` [n, *latent] drawn by the old policy, their group advantages ``A``
[n] (clipped to +-``adv_clip_max`` = 5), a fresh ``eps`` and a flow time ``t`` [n] from the sampler's own schedule:

    x_t  = (1 - t) x0 + t eps
    r    = clamp(A / (2 adv_clip_max) + 1/2, 0, 1)                 optimality in [0, 1]: r = 1/2 for A = 0
    v+   = beta v_theta + (1 - beta) v_old                         the implicit positive policy
    v-   = (1 + beta) v_old - beta v_theta                         and the implicit negative one
    x0+- = x_t - t v+-
    L+-  = mean((x0+- - x0)^2) / sg(max(mean|x0+- - x0|, 1e-5))   adaptive weight, per sample
    loss = adv_clip_max * mean(r L+ / beta + (1 - r) L- / beta) + kl_beta * mean((v_theta - v_ref)^2)

``beta`` is ``config.train.nft.mix_strength`` (1.0; 0.1 for OCR and several rewards), ``kl_beta`` is
``config.train.beta`` (1e-4 in the paper's configs), ``v_ref`` the base (adapters off, or a frozen copy).

The old policy is a snapshot of the trained weights: it samples the rollouts, gives ``v_old``, and after
every epoch's update moves toward the current weights, ``old <- d old + (1 - d) theta`` with
``d = 0`` for ``step < flat`` else ``min(rate (step - flat), cap)`` (``config.train.nft.old_policy_decay =
(flat, rate, cap)``: ``(0, 0.001, 0.5)`` for GenEval and PickScore, ``(75, 0.0075, 0.999)`` for OCR, in
optimizer steps).
"""

from __future__ import annotations

import torch

from flow_grpo.ema import Snapshot
from flow_grpo.objectives.base import Minibatch, Objective, Stats, register_objective, snapshot_velocity, snapshot_weights
from flow_grpo.flow_policy import FlowPolicy

ADAPTIVE_WEIGHT_FLOOR = 1e-5


def old_policy_decay(step: int, flat: float, rate: float, cap: float) -> float:
    """``0`` before ``flat`` optimizer steps, then ``min(rate (step - flat), cap)``."""
    return 0.0 if step < flat else min(rate * (step - flat), cap)


def optimality(advantages: torch.Tensor, adv_clip_max: float) -> torch.Tensor:
    """r = clamp(clamp(A, -m, m) / (2 m) + 1/2, 0, 1) for ``m = adv_clip_max``: [n]."""
    clipped = torch.clamp(advantages, -adv_clip_max, adv_clip_max)
    return torch.clamp(clipped / (2 * adv_clip_max) + 0.5, 0.0, 1.0)


def adaptive_x0_loss(x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``mean((x0_pred - x0)^2) / sg(max(mean|x0_pred - x0|, 1e-5))`` per sample: [n]."""
    dims = tuple(range(1, x0.ndim))
    with torch.no_grad():
        weight = torch.clamp((x0_pred - x0).abs().mean(dim=dims), min=ADAPTIVE_WEIGHT_FLOOR)
    return ((x0_pred - x0) ** 2).mean(dim=dims) / weight


def nft_policy_loss(v: torch.Tensor, v_old: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
                    r: torch.Tensor, beta: float) -> tuple[torch.Tensor, Stats]:
    """``mean(r L+ / beta + (1 - r) L- / beta)`` (without the ``adv_clip_max`` factor) and its parts.

    ``v`` [n, *latent] with gradient, ``v_old`` without; ``x_t``, ``x0`` [n, *latent]; ``t``, ``r`` [n].
    """
    t = t.reshape(-1, *([1] * (x0.ndim - 1)))
    positive = beta * v + (1 - beta) * v_old
    negative = (1 + beta) * v_old - beta * v
    loss_positive = adaptive_x0_loss(x_t - t * positive, x0)
    loss_negative = adaptive_x0_loss(x_t - t * negative, x0)
    loss = torch.mean(r * loss_positive / beta + (1 - r) * loss_negative / beta)
    return loss, {"positive_loss": loss_positive.mean().detach(), "negative_loss": loss_negative.mean().detach()}


@register_objective
class DiffusionNFT(Objective):
    """``config.train.nft``: ``mix_strength`` (the paper's beta: how far v+- move from v_old) and ``old_policy_decay``; shared: ``beta``
    (velocity penalty to the reference), ``adv_clip_max``; the trained flow times come from
    ``timestep_fraction`` / ``timestep_strategy`` over the sampling schedule (the paper: 9 of 10 steps, at random)."""

    name = "nft"
    summary = "DiffusionNFT: implicit positive and negative policies around an old-policy snapshot"
    SETTINGS = {
        "mix_strength": 1.0,  # beta in the paper: the v+- mix strength (0.1 for OCR and several rewards in the paper)
        "old_policy_decay": (0.0, 0.001, 0.5),  # (flat, rate, cap) of the old policy's EMA decay
    }
    sde_rollouts = False
    skips_zero_advantages = False  # r = 1/2 still pulls toward the old policy

    def attach(self, parameters, names):
        self.snapshots["old"] = Snapshot(parameters, names=names)

    def rollout_weights(self, global_step: int):
        return snapshot_weights(self.snapshots["old"])  # the old policy samples

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared=None) -> tuple[torch.Tensor, Stats]:
        x0, t, eps = minibatch.clean_latents(), minibatch.schedule_sigmas(j), minibatch.noise(j)
        x_t = (1 - t.reshape(-1, *([1] * (x0.ndim - 1)))) * x0 + t.reshape(-1, *([1] * (x0.ndim - 1))) * eps
        conditioning = minibatch.conditioning()
        # the snapshots' velocities before the forward with gradients (their weights are swapped in place)
        v_old = snapshot_velocity(policy, self.snapshots["old"], x_t, t, conditioning)
        v_ref = self.reference_velocity(policy, x_t, t, conditioning) if self.config.beta > 0 else None
        v = policy.velocity(x_t, t, conditioning).float()
        r = optimality(minibatch.advantages, self.config.adv_clip_max)
        policy_loss, stats = nft_policy_loss(v, v_old, x_t, x0, t, r, self.settings.mix_strength)
        loss = self.config.adv_clip_max * policy_loss
        stats = {"policy_loss": loss.detach(), **stats, "old_deviation": ((v - v_old) ** 2).mean().detach()}
        if v_ref is not None:
            kl = self.reduce_kl(((v - v_ref) ** 2).mean(dim=tuple(range(1, v.ndim))), minibatch)
            loss = loss + self.config.beta * kl
            stats["kl_loss"] = kl.detach()
        return loss, stats

    def reference_velocity(self, policy: FlowPolicy, x_t, t, conditioning) -> torch.Tensor:
        """The reference's velocity [n, *latent], float32, without gradients (the base's; GARDO's moves)."""
        with torch.no_grad():
            return policy.reference_velocity(x_t, t, conditioning).float()

    def reduce_kl(self, kl: torch.Tensor, minibatch: Minibatch) -> torch.Tensor:
        """The per-sample velocity penalty [n] as the loss's term (0-d): the mean (GARDO: over its uncertain samples)."""
        return kl.mean()

    def end_update(self, global_step: int) -> dict[str, float]:
        decay = old_policy_decay(global_step, *self.settings.old_policy_decay)
        self.snapshots["old"].blend(decay)
        return {"old_policy_decay": decay}
