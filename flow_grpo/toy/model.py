"""A small prompt-conditioned velocity network for the 1D and 2D toy worlds, and its flow-matching pretraining."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm


class ToyVelocityNet(nn.Module):
    """``v(x, sigma, cond)``: an MLP on the sample, sinusoidal features of sigma and a prompt embedding."""

    def __init__(self, data_dim: int, cond_dim: int, hidden_dim: int = 256, num_layers: int = 4, num_frequencies: int = 8):
        super().__init__()
        self.data_dim = data_dim
        self.cond_dim = cond_dim
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32) / 2)
        in_dim = data_dim + 2 * num_frequencies + cond_dim
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.SiLU()]
        layers.append(nn.Linear(hidden_dim, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)
        angles = sigma * self.frequencies
        features = [x, torch.sin(angles), torch.cos(angles)]
        if self.cond_dim:
            features.append(cond)
        return self.net(torch.cat(features, dim=1))


def pretrain_flow_matching(
    model: ToyVelocityNet,
    sample_batch: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Rectified-flow pretraining: ``x_sigma = (1 - sigma) x0 + sigma eps``, regress ``v = eps - x0``.

    ``sample_batch(n, generator)`` returns data ``x0`` [n, D] and prompt embeddings [n, cond_dim].
    Deterministic for a given seed. Returns the loss curve.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_steps, eta_min=learning_rate * 0.05)
    losses = []
    model.train()
    for _ in tqdm(range(num_steps), desc="pretrain base", disable=not progress, leave=False):
        x0, cond = sample_batch(batch_size, generator)
        noise = torch.randn(x0.shape, generator=generator)
        sigma = torch.rand(batch_size, generator=generator)
        x_sigma = (1 - sigma[:, None]) * x0 + sigma[:, None] * noise
        loss = torch.mean((model(x_sigma, sigma, cond) - (noise - x0)) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses
