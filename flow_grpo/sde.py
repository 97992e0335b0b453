"""One denoising step of a flow-matching sampler as a Gaussian action with a log-probability.

Conventions (docs/architecture.md, "The math"): sigma in [0, 1] is the flow time with 1 = pure noise, a step goes
from ``sigma`` to ``sigma_next < sigma`` so ``dt = sigma_next - sigma < 0``, and ``model_output`` is the
velocity ``v`` of ``x_sigma = (1 - sigma) * x_0 + sigma * noise`` (after classifier-free guidance).

Two step types:

``sde`` (Flow-GRPO)
    The reverse-time SDE whose marginals equal those of the ODE ``dx = v dt``. With
    ``std_t = a * sqrt(sigma / (1 - sigma_hat))`` (``sigma_hat = sigma`` except at ``sigma == 1``, where it
    is ``sigma_next`` to stay finite) the Euler-Maruyama step is::

        mean = x * (1 + std_t^2 * dt / (2 sigma)) + v * (1 + std_t^2 * (1 - sigma) / (2 sigma)) * dt
        prev = mean + std_t * sqrt(-dt) * eps

    The drift correction is ``std_t^2 / 2`` times the score, written with the velocity:
    ``score = -(x + (1 - sigma) v) / sigma``.

``cps`` (coefficient-preserving sampling)
    Re-noises a fixed share of the predicted noise::

        std_t = sigma_next * sin(a * pi / 2)
        x0 = x - sigma * v,  x1 = x + (1 - sigma) * v
        mean = (1 - sigma_next) * x0 + sqrt(sigma_next^2 - std_t^2) * x1
        prev = mean + std_t * eps

    Its log-probability is, as in the original implementation, the *unnormalised* ``-mean((prev - mean)^2)``
    (no ``1 / (2 std^2)`` and no normaliser). The clip ranges of the CPS configs (1e-5) were tuned for that
    scale, so it stays the step's score; :func:`gaussian_log_prob` of the step's outputs gives the exact
    Gaussian density.

Log-probabilities are averaged over every non-batch element (C x H x W for images), not summed, so
probability ratios stay close to 1. With ``noise_level = 0`` both types reduce exactly to the Euler step
``x + v * dt``; the step is then deterministic and its ``log_prob`` is defined as 0.

Everything is computed in float32 whatever the dtype of the model output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

from flow_grpo.errors import InputError

SDE_TYPES = ("sde", "cps")


ODE_SOLVERS = ("euler", "dpm2")


@dataclasses.dataclass(frozen=True)
class SDEParams:
    """How a sampler steps: its stochastic steps' ``noise_level`` (``a`` above; 0 is the ODE) and ``sde_type``,
    and ``ode_solver``, how the deterministic steps after an SDE window (every step of an ODE rollout) are
    integrated: ``"euler"``, or ``"dpm2"`` (DPM-Solver++(2M), ``flow_grpo.sampling_loop``). Re-scoring a stored
    step uses only the first two."""

    noise_level: float = 0.7
    sde_type: str = "sde"
    ode_solver: str = "euler"

    def __post_init__(self):
        if self.sde_type not in SDE_TYPES:
            raise ValueError(f"unknown sde_type {self.sde_type!r}; valid: {', '.join(SDE_TYPES)}")
        if self.ode_solver not in ODE_SOLVERS:
            raise InputError(f"unknown config.sample.ode_solver {self.ode_solver!r}; valid: {', '.join(ODE_SOLVERS)}")

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _per_sample(value, batch_size: int, ndim: int, device: torch.device) -> torch.Tensor:
    """A float, 0-d tensor or [B] tensor as a float32 tensor of shape [B, 1, ..., 1] (``ndim`` dims)."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    if value.ndim == 0:
        value = value.expand(batch_size)
    value = value.reshape(-1)
    if value.shape[0] != batch_size:
        raise ValueError(f"expected a scalar or {batch_size} values, got shape {tuple(value.shape)}")
    return value.reshape(batch_size, *([1] * (ndim - 1)))


def randn_like_sample(
    shape: Sequence[int],
    generator: torch.Generator | Sequence[torch.Generator] | None,
    device: torch.device,
) -> torch.Tensor:
    """Standard normal float32 noise of ``shape``; one generator for all or one per sample (first dim).

    Noise is drawn on each generator's own device and moved, so a CPU generator gives the same numbers
    whatever ``device`` is (as in diffusers' ``randn_tensor``).
    """
    shape = tuple(shape)
    if generator is None:
        return torch.randn(shape, device=device, dtype=torch.float32)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)
    generators = list(generator)
    if len(generators) != shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}")
    return torch.stack(
        [torch.randn(shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generators]
    ).to(device)


def sde_step_with_logprob(
    model_output: torch.Tensor,
    sigma,
    sigma_next,
    sample: torch.Tensor,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    sde_type: str = "sde",
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
):
    """Take (or score) one stochastic step from ``sigma`` to ``sigma_next``.

    Args:
        model_output: velocity ``v``, shape [B, ...].
        sigma, sigma_next: floats or per-sample tensors of shape [B]; ``sigma_next < sigma``.
        sample: the current latent ``x``, same shape as ``model_output``.
        noise_level: ``a`` in the formulas above; 0 gives the Euler ODE step.
        prev_sample: if given, this sample is scored instead of drawing a new one (training time).
        sde_type: ``"sde"`` or ``"cps"``.
        generator: a generator, or one per sample, for the noise.

    Returns:
        ``(prev_sample, log_prob, prev_sample_mean, std_dev)``: the next latent (float32), its log-prob of
        shape [B], the mean of the Gaussian transition and its standard deviation (shape [B, 1, ..., 1]).
    """
    if sde_type not in SDE_TYPES:
        raise ValueError(f"unknown sde_type {sde_type!r}; valid: {', '.join(SDE_TYPES)}")
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} differ")

    noise_level_arg = noise_level
    v = model_output.float()
    x = sample.float()
    batch_size, ndim, device = x.shape[0], x.ndim, x.device
    sigma = _per_sample(sigma, batch_size, ndim, device)
    sigma_next = _per_sample(sigma_next, batch_size, ndim, device)
    noise_level = _per_sample(noise_level, batch_size, ndim, device)
    dt = sigma_next - sigma

    if sde_type == "sde":
        sigma_hat = torch.where(sigma == 1, sigma_next, sigma)
        std_t = noise_level * torch.sqrt(sigma / (1 - sigma_hat))
        prev_sample_mean = (
            x * (1 + std_t**2 * dt / (2 * sigma)) + v * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
        )
        std_dev = std_t * torch.sqrt(-dt)
    else:
        std_dev = sigma_next * torch.sin(noise_level * math.pi / 2)
        pred_x0 = x - sigma * v
        pred_x1 = x + (1 - sigma) * v
        # clamp: sigma_next^2 - std^2 >= 0 always holds mathematically; guard rounding.
        prev_sample_mean = (1 - sigma_next) * pred_x0 + torch.sqrt(
            torch.clamp(sigma_next**2 - std_dev**2, min=0)
        ) * pred_x1

    if prev_sample is None:
        if isinstance(noise_level_arg, (int, float)) and noise_level_arg == 0:
            prev_sample = prev_sample_mean  # the ODE step: no noise drawn, generators left untouched
        else:
            prev_sample = prev_sample_mean + std_dev * randn_like_sample(x.shape, generator, device)
    else:
        if prev_sample.shape != x.shape:
            raise ValueError(f"prev_sample {tuple(prev_sample.shape)} and sample {tuple(x.shape)} differ")
        prev_sample = prev_sample.float()

    if sde_type == "cps":  # the original's unnormalised score (module docstring)
        stochastic = std_dev > 0
        log_prob = -((prev_sample.detach() - prev_sample_mean) ** 2)
        log_prob = torch.where(stochastic, log_prob, torch.zeros_like(log_prob)).mean(dim=tuple(range(1, ndim)))
    else:
        log_prob = gaussian_log_prob(prev_sample, prev_sample_mean, std_dev)
    return prev_sample, log_prob, prev_sample_mean, std_dev


def gaussian_log_prob(prev_sample: torch.Tensor, mean: torch.Tensor, std_dev: torch.Tensor) -> torch.Tensor:
    """The Gaussian log-density of ``prev_sample`` under ``N(mean, std_dev^2)``, averaged over every non-batch
    element: shape [B]; 0 for samples whose step is deterministic (``std_dev == 0``). The ``sde`` step's score,
    and the exact density of a ``cps`` step from its outputs."""
    stochastic = std_dev > 0
    safe_std = torch.where(stochastic, std_dev, torch.ones_like(std_dev))
    log_prob = -((prev_sample.detach() - mean) ** 2) / (2 * safe_std**2) - torch.log(safe_std) - _LOG_SQRT_2PI
    return torch.where(stochastic, log_prob, torch.zeros_like(log_prob)).mean(dim=tuple(range(1, prev_sample.ndim)))
