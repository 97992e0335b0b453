"""FlowRL's trajectory-balance objective (a learned log-partition function), as plain functions.

Per trajectory:

    delta = log Z(prompt) + mean_t log p_theta - tb_coef * A - mean_t log p_ref
    loss  = mean(w * delta^2),   w = min(exp(sum_t (log p_theta - log p_old)), 10), detached

``log Z`` comes from :class:`LogZHead`, a small MLP on the pooled prompt embedding. Gradients per timestep:
the loss depends on all of a trajectory's trained timesteps through their mean, so the trainer computes
``delta`` and ``w`` without gradients first and then back-propagates each timestep's surrogate
``trajectory_balance_surrogate`` one at a time: their gradients sum to exactly the loss's gradient while
only one timestep's activations are alive at a time.
"""

from __future__ import annotations

import torch
from torch import nn


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
