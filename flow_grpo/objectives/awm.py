"""Advantage Weighted Matching (arXiv 2509.25050): the flow-matching loss on freshly noised samples of the
policy's own ODE rollouts, turned into a per-sample surrogate log-likelihood inside a PPO-style ratio.

Per micro-step, for n clean samples ``x0`` [n, *latent], a fresh ``eps`` and a flow time ``t`` [n] from the
sampling schedule (AWM's discrete times: ``timestep_strategy = "stratified"``, ``timestep_count`` strata):

    x_t   = (1 - t) x0 + t eps,          target v* = eps - x0
    mse   = mean((v(x_t, t) - v*)^2)                          per sample
    logp  = -g(mse),  g(m) = ((m + 1e-10)^p - 1e-10^p) / p * t    (p = ``awm_power``, 0.25: a generalised Huber)
    ratio = exp(logp_theta - logp_old)                        logp_old: the weights that sampled the rollout
    A'    = clamp(A, -adv_clip_max, adv_clip_max) / adv_clip_max
    loss  = mean(max(-A' ratio, -A' clip(ratio, 1 - eps, 1 + eps)))
            + beta mean((v_theta - v_ref)^2) + kl_ema_beta mean((v_theta - v_ema)^2)

``eps`` is ``clip_range`` (1.0 in the paper: practically unclipped; with one optimizer step per epoch the
ratio is exactly 1 and the PPO term is the advantage-weighted flow-matching gradient). ``beta`` is 0.001 for
GenEval, 0.003 for OCR. ``v_ema`` comes from a "KL-EMA" snapshot of the trained weights that moves toward
them after every epoch: ``ema <- d ema + (1 - d) theta``, ``d = min(cap, rate * step)`` (``kl_ema_decay =
(rate, cap)`` = ``(0.001, 0.3)``).
"""

from __future__ import annotations

import contextlib

import torch

from flow_grpo.ema import Snapshot
from flow_grpo.objectives.base import Minibatch, Objective, Stats, register_objective, snapshot_velocity
from flow_grpo.objectives.grpo import clipped_policy_loss, ratio_diagnostics
from flow_grpo.flow_policy import FlowPolicy

HUBER_EPS = 1e-10


def surrogate_log_prob(velocity: torch.Tensor, target: torch.Tensor, t: torch.Tensor, power: float) -> torch.Tensor:
    """``-((mse + 1e-10)^p - 1e-10^p) / p * t`` per sample [n], ``mse`` over the non-batch elements."""
    mse = ((velocity.float() - target.float()) ** 2).mean(dim=tuple(range(1, velocity.ndim)))
    return -((mse + HUBER_EPS) ** power - HUBER_EPS**power) / power * t.float()


@register_objective
class AWM(Objective):
    """``config.train.awm``: ``power``, ``kl_ema_beta`` and ``kl_ema_decay`` (the KL-EMA snapshot); shared:
    ``clip_range``, ``adv_clip_max``, ``beta`` (to the reference)."""

    name = "awm"
    summary = "Advantage Weighted Matching: a PPO ratio on a flow-matching surrogate log-likelihood"
    SETTINGS = {
        "power": 0.25,  # the generalised Huber power of the surrogate log-likelihood
        "kl_ema_beta": 1.0,  # weight of the velocity penalty to the KL-EMA snapshot
        "kl_ema_decay": (0.001, 0.3),  # (rate, cap) of the KL-EMA snapshot's decay
    }
    sde_rollouts = False
    skips_zero_advantages = False  # the velocity penalties act on every sample

    def attach(self, parameters, names):
        self.snapshots["old"] = Snapshot(parameters, names=names)  # the weights that sampled this epoch's rollouts
        self.snapshots["kl_ema"] = Snapshot(parameters, names=names)

    @contextlib.contextmanager
    def rollout_weights(self, global_step: int):
        self.snapshots["old"].blend(0.0)  # on-policy: the current weights sample, and are the old policy
        yield

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared=None) -> tuple[torch.Tensor, Stats]:
        x0, t, eps = minibatch.clean_latents(), minibatch.schedule_sigmas(j), minibatch.noise(j)
        shape = (-1, *([1] * (x0.ndim - 1)))
        x_t, target = (1 - t.reshape(shape)) * x0 + t.reshape(shape) * eps, eps - x0
        conditioning = minibatch.conditioning()
        power = self.settings.power
        # snapshots first: they are swapped into the trained weights in place
        old_log_prob = surrogate_log_prob(snapshot_velocity(policy, self.snapshots["old"], x_t, t, conditioning), target, t, power)
        v_ema = None
        if self.settings.kl_ema_beta > 0:
            v_ema = snapshot_velocity(policy, self.snapshots["kl_ema"], x_t, t, conditioning)
        v = policy.velocity(x_t, t, conditioning).float()
        log_prob = surrogate_log_prob(v, target, t, power)
        advantages = torch.clamp(minibatch.advantages, -self.config.adv_clip_max, self.config.adv_clip_max) / self.config.adv_clip_max
        policy_loss, ratio = clipped_policy_loss(log_prob, old_log_prob, advantages, self.config.clip_range)
        stats = {"policy_loss": policy_loss.detach(), **ratio_diagnostics(log_prob, old_log_prob, ratio, self.config.clip_range)}
        loss = policy_loss
        if self.config.beta > 0:
            kl = ((v - policy.reference_velocity(x_t, t, conditioning).float()) ** 2).mean()
            loss = loss + self.config.beta * kl
            stats["kl_loss"] = kl.detach()
        if v_ema is not None:
            ema_kl = ((v - v_ema) ** 2).mean()
            loss = loss + self.settings.kl_ema_beta * ema_kl
            stats["ema_kl_loss"] = ema_kl.detach()
        return loss, stats

    def end_update(self, global_step: int) -> dict[str, float]:
        rate, cap = self.settings.kl_ema_decay
        decay = min(cap, rate * global_step)
        self.snapshots["kl_ema"].blend(decay)
        return {"kl_ema_decay": decay}
