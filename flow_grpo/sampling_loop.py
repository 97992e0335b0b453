"""The sampling loop shared by every model: from noise to a clean sample, one ``flow_grpo.sde`` step per
sigma interval, keeping the latents and log-probs of the stochastic steps.

A model enters only through ``velocity(latents, sigma) -> v`` (conditioning, CFG and dtype are the caller's
closure: ``flow_grpo.backbones.generation`` for every diffusers family, ``flow_grpo.toy.collector`` for the toy
worlds), so all of them draw their trajectories with the same code, and the trainer re-scores them with the
same step.

Flow-GRPO-Fast: with a ``window = (start, end)`` only steps ``start <= i < end`` are stochastic and stored;
every other step is the deterministic ODE. Where the window sits: at random each batch (:func:`choose_sde_window`,
Flow-GRPO-Fast) or moving from high to low noise over training (:func:`progressive_window_start`, MixGRPO).

The deterministic steps after the window (every step of an ODE rollout) take Euler steps ``x + v dt`` or, with
``ode_solver="dpm2"``, DPM-Solver++(2M) steps (MixGRPO-Flash, DGPO's rollouts). For the flow
``x_sigma = (1 - sigma) x0 + sigma eps`` that solver sees ``alpha = 1 - sigma``, ``lambda = log(alpha / sigma)``
and the data prediction ``x0 = x - sigma v``; from ``s`` to ``t`` with ``h = lambda_t - lambda_s``::

    first order:   x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) D0,          D0 = x0(s)
    second order:  x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) (D0 + D1 / 2),
                   D1 = (x0(s) - x0(s_prev)) / r,  r = (lambda_s - lambda_s_prev) / h

The first-order step is exactly Euler's (tested), so the solver differs from Euler only by the correction
``D1``, which needs the previous step's ``x0`` (of whichever step came before, stochastic or not). The first
step from ``sigma = 1`` (``lambda = -inf``) and the last, to ``sigma = 0``, are first order, as diffusers'
``lower_order_final``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from flow_grpo.errors import InputError
from flow_grpo.sde import SDEParams, sde_step_with_logprob

WINDOW_SCHEDULES = ("random", "progressive")

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


def progressive_window_start(iteration: int, window_size: int, window_range, shift_every: int, stride: int) -> int:
    """MixGRPO's sliding window: the first step of the window at training iteration ``iteration`` (0-based).

    The window starts at ``lo`` of ``window_range = (lo, hi)`` and moves ``stride`` steps toward low noise
    every ``shift_every`` iterations; once it would pass ``hi`` it rolls back to ``lo`` (MixGRPO's
    ``roll_back``). It never shrinks: MixGRPO's last positions hold fewer than ``window_size`` steps, which
    would change the number of trained steps from one epoch to the next, so here the window rolls back as soon
    as a whole window no longer fits.
    """
    lo, hi = int(window_range[0]), int(window_range[1])
    if window_size <= 0 or hi - lo < window_size:
        raise InputError(f"sde_window_range {tuple(window_range)} cannot hold a window of {window_size} steps")
    if shift_every < 1 or stride < 0:
        raise InputError(f"sample.sde_window_shift_every must be >= 1 and sde_window_stride >= 0, got {shift_every}, {stride}")
    if stride == 0:
        return lo
    positions = (hi - lo - window_size) // stride + 1  # lo, lo + stride, ... while a whole window fits
    return lo + (iteration // shift_every) % positions * stride


def scheduled_window_start(sample_config, iteration: int) -> int | None:
    """Where ``config.sample``'s schedule puts the SDE window at training iteration ``iteration`` (0-based):
    None for ``sde_window_schedule = "random"`` (the sampler draws it per batch) or without a window."""
    schedule = sample_config.sde_window_schedule
    if schedule not in WINDOW_SCHEDULES:
        raise InputError(f"unknown config.sample.sde_window_schedule {schedule!r}; valid: {', '.join(WINDOW_SCHEDULES)}")
    if schedule == "random" or sample_config.sde_window_size <= 0:
        return None
    return progressive_window_start(iteration, sample_config.sde_window_size, sample_config.sde_window_range,
                                    sample_config.sde_window_shift_every, sample_config.sde_window_stride)


def log_snr(sigma: float) -> float:
    """``lambda = log(alpha / sigma)`` of the flow, ``alpha = 1 - sigma``, for ``0 < sigma < 1``."""
    return math.log((1.0 - sigma) / sigma)


def dpm_solver_step(x: torch.Tensor, x0: torch.Tensor, x0_prev: torch.Tensor | None, sigma, sigma_next,
                    sigma_prev=None) -> torch.Tensor:
    """One DPM-Solver++(2M) step of the flow from ``sigma`` to ``sigma_next`` (module docstring).

    ``x`` [B, *latent] the latents at ``sigma``; ``x0`` their data prediction ``x - sigma v``; ``x0_prev``
    the previous step's, made at ``sigma_prev`` (None: a first-order step). Float32 in, float32 out.
    """
    sigma, sigma_next = float(sigma), float(sigma_next)
    if sigma_next <= 0.0:
        return x0  # alpha_t = 1, sigma_t = 0: the data prediction itself
    alpha_next = 1.0 - sigma_next
    if sigma >= 1.0:  # lambda_s = -inf: e^-h = 0
        return (sigma_next / sigma) * x + alpha_next * x0
    h = log_snr(sigma_next) - log_snr(sigma)
    factor = -alpha_next * math.expm1(-h)  # -alpha_t (e^-h - 1)
    update = x0
    if x0_prev is not None and sigma_prev is not None and float(sigma_prev) < 1.0:
        r = (log_snr(sigma) - log_snr(float(sigma_prev))) / h
        update = x0 + 0.5 * (x0 - x0_prev) / r
    return (sigma_next / sigma) * x + factor * update


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
    the forward-process objectives needs no more. ``sde.ode_solver = "dpm2"`` takes DPM-Solver++(2M) steps
    for the deterministic steps after the window, or every step when ``sde.noise_level = 0`` (module docstring).
    """
    ode_solver = sde.ode_solver
    num_steps = len(sigmas) - 1
    start, end = window if window is not None else (0, num_steps)
    solver_from = 0 if sde.noise_level == 0 else end  # the first step the ODE solver may take
    latents = latents.float()
    stored_latents, log_probs, means = [], [], []
    x0_prev = None
    for i in range(num_steps):
        in_window = start <= i < end
        if i == start and store_latents:
            stored_latents.append(latents)
        model_output = velocity(latents, sigmas[i])
        if ode_solver == "dpm2" and i >= solver_from:
            x0 = latents - float(sigmas[i]) * model_output.float()
            latents_next = dpm_solver_step(latents, x0, x0_prev, sigmas[i], sigmas[i + 1], sigmas[i - 1] if i else None)
            log_prob = torch.zeros(latents.shape[0], device=latents.device)
            prev_sample_mean = latents_next
            x0_prev, latents = x0, latents_next
        else:
            noise_level = sde.noise_level if in_window else 0.0
            if ode_solver == "dpm2":
                x0_prev = latents - float(sigmas[i]) * model_output.float()
            latents, log_prob, prev_sample_mean, _ = sde_step_with_logprob(
                model_output, sigmas[i], sigmas[i + 1], latents, noise_level,
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
