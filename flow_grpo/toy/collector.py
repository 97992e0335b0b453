"""One epoch of toy-world rollouts: prompts from the k-repeat sampler, SDE trajectories with their
log-probs (the shared ``flow_grpo.sampling_loop`` loop), and the world's reward."""

from __future__ import annotations

import torch

from flow_grpo.rollout_types import Rollout, concatenate
from flow_grpo.sampling_loop import choose_sde_window, sample_with_logprob, scheduled_window_start
from flow_grpo.sde import SDEParams
from flow_grpo.toy.policy import ToyConditioning
from flow_grpo.toy.schedule import sigma_schedule, toy_velocity


@torch.no_grad()
def collect_toy_rollout(model, world, sampler, sample_config, generator: torch.Generator, stochastic: bool = True,
                        iteration: int = 0) -> Rollout:
    """``sample_config.num_batches_per_epoch`` batches of ``model``'s trajectories in ``world``: the SDE with every
    step stored, or (``stochastic=False``, the forward-process objectives) the ODE keeping the clean samples.

    Groups: samples of one prompt, or, with ``sample_config.same_latent``, the k trajectories that start from
    one initial noise (the grouping of an unconditional world such as the moons), or, with
    ``sample_config.groups_of_k``, runs of k samples of one prompt with their own noises (a one-prompt world
    split into groups the size SD3's are, for objectives that take one pair or the best of a group).

    ``sample_config.sde_window_size > 0``: only a window of steps is stochastic and stored, drawn per batch or
    placed by the schedule at training iteration ``iteration`` (``flow_grpo.sampling_loop``); the other steps
    take ``sample_config.ode_solver``'s steps after the window (every step of an ODE rollout).
    """
    sigmas = sigma_schedule(sample_config.num_steps)
    sde = SDEParams(sample_config.noise_level if stochastic else 0.0, sample_config.sde_type, sample_config.ode_solver)
    k = sample_config.num_image_per_prompt
    parts = []
    for b in range(sample_config.num_batches_per_epoch):
        prompts = [world.train_prompts[i] for i in sampler.next_indices()]
        if sample_config.same_latent or sample_config.groups_of_k:
            prompts = sorted(prompts)  # equal prompts side by side: each run of k is a group
            if sample_config.same_latent:  # ... and shares one noise
                noise = torch.randn(len(prompts) // k, world.data_dim, generator=generator).repeat_interleave(k, dim=0)
            else:
                noise = torch.randn(len(prompts), world.data_dim, generator=generator)
            group_ids = [b * (len(prompts) // k) + i // k for i in range(len(prompts))]
        else:
            noise = torch.randn(len(prompts), world.data_dim, generator=generator)
            group_ids = [world.train_prompts.index(p) for p in prompts]
        cond = world.encode(prompts)
        window_size = sample_config.sde_window_size if stochastic else 0
        start = scheduled_window_start(sample_config, iteration) if stochastic else None
        if start is not None:
            window = (start, start + window_size)
        else:  # drawn only with a window, so runs without one keep their random stream
            window = choose_sde_window(sample_config.num_steps, window_size, sample_config.sde_window_range,
                                       generator if window_size else None)
        trajectory = sample_with_logprob(toy_velocity(model, cond), noise, sigmas, sde, window=window, generator=generator,
                                         store_means=stochastic, store_latents=stochastic)
        parts.append(Rollout(
            prompts=prompts, metadata=[{} for _ in prompts], group_ids=torch.tensor(group_ids),
            conditioning=ToyConditioning(cond), final_latents=trajectory.final_latents,
            rewards={"avg": world.reward(trajectory.final_latents, prompts)},
            latents=trajectory.latents, log_probs=trajectory.log_probs if stochastic else None,
            sigmas=trajectory.sigmas.expand(len(prompts), -1), sigmas_next=trajectory.sigmas_next.expand(len(prompts), -1),
            prev_sample_means=trajectory.prev_sample_means,
        ))
    return concatenate(parts)
