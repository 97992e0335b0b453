"""FlowRL: trajectory balance with a learned log-partition function (reward-distribution matching).

Per trajectory (over its J trained timesteps t):

    delta = log Z(prompt) + mean_t log p_theta - tb_coef * A - mean_t log p_ref
    loss  = mean(w * delta^2),   w = min(exp(sum_t (log p_theta - log p_old)), 10), detached
                                     (``importance_sampling``; w = 1 without it)

``log Z`` comes from :class:`LogZHead`, a small MLP (``proj_layer`` layers, GELU, LayerNorm, dropout
``proj_dropout``) on the pooled prompt embedding, trained with the policy. Gradients per timestep: the loss
depends on all of a trajectory's trained timesteps through their mean, so :meth:`FlowRL.prepare` computes
``delta`` and ``w`` without gradients first and each micro-step back-propagates its timestep's surrogate
``mean(2 w delta / J * log p_t)``: the surrogates' gradients sum to exactly the loss's gradient with respect to
the policy while only one timestep's activations are alive at a time. log Z's own loss
``mean(w (log Z + delta - log Z)^2)`` is added once per minibatch, at its first micro-step. The shares are
multiplied by J against the update loop's division by its window, so the optimizer sees the gradient of
``mean(w delta^2)`` itself (averaged over the accumulated minibatches).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from flow_grpo.objectives.base import Minibatch, Objective, Stats, register_objective
from flow_grpo.objectives.grpo import ratio_diagnostics
from flow_grpo.flow_policy import FlowPolicy


class LogZHead(nn.Module):
    """log Z(prompt): ``proj_layer`` linear layers (GELU and LayerNorm between them, dropout ``proj_dropout``)
    on a prompt embedding; with ``input_dim = 0`` (an unconditional model) it is a learned constant."""

    def __init__(self, input_dim: int, hidden_dim: int = 256, proj_layer: int = 3, proj_dropout: float = 0.1):
        super().__init__()
        self.input_dim = input_dim
        layers: list[nn.Module] = []
        width = max(1, input_dim)
        for i in range(max(1, proj_layer) - 1):
            layers += [nn.Linear(width if i == 0 else hidden_dim, hidden_dim), nn.GELU(), nn.LayerNorm(hidden_dim), nn.Dropout(proj_dropout)]
        layers.append(nn.Linear(hidden_dim if proj_layer > 1 else width, 1))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.input_dim == 0:
            embedding = torch.ones(embedding.shape[0], 1, device=embedding.device, dtype=self.net[-1].weight.dtype)
        return self.net(embedding.to(self.net[-1].weight.dtype)).squeeze(-1)


def importance_weight(log_prob_sum: torch.Tensor, old_log_prob_sum: torch.Tensor, max_weight: float = 10.0) -> torch.Tensor:
    """``min(exp(sum_t (log p_theta - log p_old)), max_weight)``, without gradient."""
    return torch.clamp(torch.exp((log_prob_sum - old_log_prob_sum).detach()), max=max_weight)


def trajectory_balance_delta(log_z, mean_log_prob, advantages, mean_ref_log_prob, tb_coef: float) -> torch.Tensor:
    return log_z + mean_log_prob - tb_coef * advantages - mean_ref_log_prob


def trajectory_balance_loss(log_z, mean_log_prob, advantages, mean_ref_log_prob, tb_coef: float, weight=None) -> torch.Tensor:
    """``mean(w * delta^2)`` (w = 1 when ``weight`` is None)."""
    delta = trajectory_balance_delta(log_z, mean_log_prob, advantages, mean_ref_log_prob, tb_coef)
    weight = torch.ones_like(delta) if weight is None else weight
    return torch.mean(weight * delta**2)


def trajectory_balance_surrogate(step_log_prob, delta, weight, num_timesteps: int) -> torch.Tensor:
    """One timestep's share of the trajectory-balance gradient: ``mean(2 w delta / T * log p_t)`` with delta
    and w held fixed. Summed over the T trained timesteps, its gradient is that of ``mean(w delta^2)``
    with respect to the policy."""
    return torch.mean(2.0 * weight.detach() * delta.detach() / num_timesteps * step_log_prob)


@dataclasses.dataclass
class TrajectoryBalanceTerms:
    """A minibatch's trajectory-balance terms, computed once without gradients."""

    delta: torch.Tensor  # [n]
    weight: torch.Tensor  # [n] the importance weight w (1 without importance sampling)
    delta_rest: torch.Tensor  # [n] delta - log Z: what log Z is fitted to


@register_objective
class FlowRL(Objective):
    """``config.train.flowrl``: ``tb_coef``, ``importance_sampling``, ``proj_layer``, ``proj_hidden``,
    ``proj_dropout``; shared: ``clip_range``, only for the logged ``clipfrac``. The reference is the policy's
    (adapters disabled)."""

    name = "flowrl"
    summary = "FlowRL's trajectory balance with a learned log Z head"
    SETTINGS = {
        "tb_coef": 15.0,  # delta = log Z + mean_t log p - tb_coef * A - mean_t log p_ref
        "importance_sampling": True,  # w = min(exp(sum_t log p - log p_old), 10)
        "proj_layer": 3,  # layers of the log Z head on the pooled prompt embedding
        "proj_hidden": 512,
        "proj_dropout": 0.1,
    }

    def __init__(self, config, pooled_dim: int = 0):
        super().__init__(config)
        own = self.settings
        self.trained_modules["log_z"] = LogZHead(pooled_dim, own.proj_hidden, own.proj_layer, own.proj_dropout)

    @classmethod
    def needs_reference(cls, config) -> bool:
        return True

    def _log_z(self, batch_conditioning) -> torch.Tensor:
        return self.trained_modules["log_z"](batch_conditioning.pooled.float())

    @torch.no_grad()
    def prepare(self, policy: FlowPolicy, minibatch: Minibatch) -> tuple[TrajectoryBalanceTerms, Stats]:
        log_probs, ref_log_probs, old_log_probs = [], [], []
        for j in range(minibatch.num_micro_steps):
            batch = minibatch.transitions(j)
            log_probs.append(policy.score(batch).log_prob)
            ref_log_probs.append(policy.reference_score(batch).log_prob)
            old_log_probs.append(batch.old_log_probs)
        z = self._log_z(batch.conditioning)
        log_probs, ref_log_probs, old_log_probs = (torch.stack(x, dim=1).float() for x in (log_probs, ref_log_probs, old_log_probs))
        if self.settings.importance_sampling:
            weight = importance_weight(log_probs.sum(1), old_log_probs.sum(1))
        else:
            weight = torch.ones_like(z)
        delta = trajectory_balance_delta(z, log_probs.mean(1), minibatch.advantages, ref_log_probs.mean(1), self.settings.tb_coef)
        stats = {
            "tb_loss": torch.mean(weight * delta**2),
            "log_z": z.mean(),
            "importance_weight": weight.mean(),
            "policy_ref_log_ratio": (log_probs.mean(1) - ref_log_probs.mean(1)).mean(),
        }
        return TrajectoryBalanceTerms(delta=delta, weight=weight, delta_rest=delta - z), stats

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared: TrajectoryBalanceTerms) -> tuple[torch.Tensor, Stats]:
        batch = minibatch.transitions(j)
        log_prob = policy.score(batch).log_prob
        loss = trajectory_balance_surrogate(log_prob, prepared.delta, prepared.weight, minibatch.num_micro_steps)
        # log Z's own loss once per minibatch; the head runs at every micro-step (times 0 after the first) so
        # that DDP all-reduces its gradient at whichever micro-step synchronises
        z = self._log_z(batch.conditioning)
        if j == 0:
            loss = loss + torch.mean(prepared.weight * (z + prepared.delta_rest) ** 2)
        else:
            loss = loss + 0.0 * z.sum()
        ratio = torch.exp((log_prob - batch.old_log_probs).detach())
        stats = {"policy_loss": loss.detach(), **ratio_diagnostics(log_prob, batch.old_log_probs, ratio, self.config.clip_range)}
        # the update divides every micro-step's loss by its window (accumulation x J micro-steps), which makes a
        # per-timestep loss a mean over timesteps (GRPO); trajectory balance is one loss per trajectory whose J
        # shares sum to it, so they are scaled back by J: the optimizer sees the gradient of mean(w delta^2)
        return loss * minibatch.num_micro_steps, stats
