"""The sampling loop shared by every model: from noise to a clean sample, one ``flow_grpo.sde`` step per
sigma interval, keeping the latents and log-probs of the stochastic steps.

A model enters only through ``velocity(latents, sigma) -> v`` (conditioning, CFG and dtype are the caller's
closure: ``flow_grpo.backbones.sampling`` for every diffusers family, ``flow_grpo.toy.rollout`` for the toy
worlds), so all of them draw their trajectories with the same code, and the trainer re-scores them with the
same step.

Flow-GRPO-Fast: with a ``window = (start, end)`` only steps ``start <= i < end`` are stochastic and stored;
every other step is the deterministic ODE.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from flow_grpo.sde import SDEParams, sde_step_with_logprob

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (latents [B, *latent], sigma []) -> v [B, *latent]


@dataclasses.dataclass
class Trajectory:
    """What :func:`sample_with_logprob` returns. ``K`` is the number of stored (stochastic) steps."""

    latents: torch.Tensor | None  # [B, K + 1, *latent] float32: [:, j] enters stored step j, [:, j + 1] leaves it
    log_probs: torch.Tensor  # [B, K] float32
    sigmas: torch.Tensor  # [K]
    sigmas_next: torch.Tensor  # [K]
    final_latents: torch.Tensor  # [B, *latent] the clean sample
    prev_sample_means: torch.Tensor | None = None  # [B, K, *latent] with store_means


def choose_sde_window(num_steps: int, window_size: int, window_range, generator: torch.Generator | None = None):
    """``(start, end)`` of the stochastic steps. ``window_size = 0`` means every step.

    The window ``[start, start + window_size)`` lies inside ``window_range = (lo, hi)`` (step indices,
    ``hi`` exclusive) with ``start`` uniform over the ``hi - lo - window_size + 1`` possible positions.
    """
    if window_size <= 0:
        return 0, num_steps
    lo, hi = (0, num_steps) if window_range is None else (int(window_range[0]), int(window_range[1]))
    if not (0 <= lo < hi <= num_steps and hi - lo >= window_size):
        raise ValueError(
            f"sde_window_range {tuple(window_range)} cannot hold a window of {window_size} steps within {num_steps} steps"
        )
    start = lo + int(torch.randint(hi - lo - window_size + 1, (1,), generator=generator).item())
    return start, start + window_size


@torch.no_grad()
def sample_with_logprob(
    velocity: Velocity,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    sde: SDEParams,
    *,
    window: tuple[int, int] | None = None,
    generator=None,
    store_means: bool = False,
    store_latents: bool = True,
) -> Trajectory:
    """Integrate from ``latents`` (noise at ``sigmas[0]``) down the ``T + 1`` ``sigmas``.

    ``sde.noise_level = 0`` gives the ODE (log-probs 0). ``window``: only those steps are stochastic and
    stored (default: all). ``generator``: one generator, or one per sample, for the step noise.
    ``store_latents=False`` keeps only the final latents (``Trajectory.latents`` is None): an ODE rollout for
    the forward-process objectives needs no more.
    """
    num_steps = len(sigmas) - 1
    start, end = window if window is not None else (0, num_steps)
    latents = latents.float()
    stored_latents, log_probs, means = [], [], []
    for i in range(num_steps):
        in_window = start <= i < end
        if i == start and store_latents:
            stored_latents.append(latents)
        noise_level = sde.noise_level if in_window else 0.0
        latents, log_prob, prev_sample_mean, _ = sde_step_with_logprob(
            velocity(latents, sigmas[i]), sigmas[i], sigmas[i + 1], latents, noise_level,
            sde_type=sde.sde_type, generator=generator,
        )
        if in_window:
            if store_latents:
                stored_latents.append(latents)
            log_probs.append(log_prob)
            if store_means:
                means.append(prev_sample_mean)
    return Trajectory(
        latents=torch.stack(stored_latents, dim=1) if store_latents else None,
        log_probs=torch.stack(log_probs, dim=1),
        sigmas=sigmas[start:end],
        sigmas_next=sigmas[start + 1 : end + 1],
        final_latents=latents,
        prev_sample_means=torch.stack(means, dim=1) if store_means else None,
    )
