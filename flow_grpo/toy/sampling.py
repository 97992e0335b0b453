"""Sampling with log-probs for the toy worlds: the same ``sde_step_with_logprob`` as the SD3 pipeline."""

from __future__ import annotations

import torch

from flow_grpo.sde import sde_step_with_logprob


def sigma_schedule(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """``num_steps + 1`` sigmas from 1 to 0, optionally time-shifted as SD3 does (``shift * t / (1 + (shift - 1) t)``)."""
    t = torch.linspace(1.0, 0.0, num_steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def transition(model, sample, sigma, sigma_next, cond, noise_level, sde_type, prev_sample=None, generator=None):
    """One step of the policy: the model's velocity, then the Gaussian step (drawn, or scoring ``prev_sample``).

    Sampling and training both call this, so the log-prob of a stored transition is recomputed by exactly
    the code that produced it.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32).expand(sample.shape[0])
    velocity = model(sample, sigma, cond)
    return sde_step_with_logprob(
        velocity, sigma, sigma_next, sample, noise_level, prev_sample=prev_sample, sde_type=sde_type, generator=generator
    )


@torch.no_grad()
def sample_trajectory(model, cond, init_noise, sigmas, noise_level, sde_type="sde", generator=None, return_means=False):
    """Run every step from ``init_noise``; ``noise_level = 0`` is the Euler ODE.

    Returns the final samples [B, D], every latent [B, T + 1, D] and the step log-probs [B, T] (and, with
    ``return_means``, each step's Gaussian mean [B, T, D], for GRPO-Guard).
    """
    latents = [init_noise.float()]
    log_probs, means = [], []
    sample = latents[0]
    for i in range(len(sigmas) - 1):
        sample, log_prob, mean, _ = transition(
            model, sample, sigmas[i], sigmas[i + 1], cond, noise_level, sde_type, generator=generator
        )
        latents.append(sample)
        log_probs.append(log_prob)
        means.append(mean)
    result = (sample, torch.stack(latents, dim=1), torch.stack(log_probs, dim=1))
    return (*result, torch.stack(means, dim=1)) if return_means else result
