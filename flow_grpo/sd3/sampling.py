"""Sampling from a diffusers ``StableDiffusion3Pipeline`` with per-step log-probabilities.

The transformer enters the shared sampling loop (``flow_grpo.sampling.sample_with_logprob``) as a velocity:
:func:`predict_velocity` (CFG included) at ``timestep = sigma * num_train_timesteps``, which is exactly the
scheduler's timestep. The trainer re-scores stored steps with the same function through
``flow_grpo.sd3.policy.SD3Policy``, so sampling and training share one code path.

Latents are float32 from start to end whatever the transformer's dtype: the transformer sees them cast to
its dtype, its output is cast back to float32 by the SDE step.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence

import torch

from flow_grpo.sampling import Trajectory, choose_sde_window, sample_with_logprob
from flow_grpo.sd3.prompt import SD3Conditioning
from flow_grpo.sde import SDEParams, randn_like_sample


@dataclasses.dataclass
class Guidance:
    """Classifier-free guidance: ``v = v_uncond + scale (v_text - v_uncond)`` when ``scale > 1``."""

    scale: float = 4.5
    negative: SD3Conditioning | None = None  # the empty prompt's conditioning: one row, or one per image
    batched: bool = True  # one transformer call on the doubled batch; False: two calls (less memory, slower)


@dataclasses.dataclass
class SD3Trajectory(Trajectory):
    """:class:`flow_grpo.sampling.Trajectory` plus the decoded images and the transformer's timesteps."""

    images: torch.Tensor | None = None  # [B, 3, H, W] in [0, 1], float32 (None when decode=False)
    timesteps: torch.Tensor | None = None  # [K] the transformer's timestep input of each stored step


def sd3_schedule(scheduler, num_inference_steps: int, latent_height: int, latent_width: int, patch_size: int, device=None):
    """The timesteps [T] and sigmas [T + 1] (ending in 0) that ``StableDiffusion3Pipeline`` would use.

    Built on a fresh copy of the scheduler so the pipeline's own scheduler state is left untouched.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    fresh = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
    kwargs = {}
    if fresh.config.get("use_dynamic_shifting", False):
        image_seq_len = (latent_height // patch_size) * (latent_width // patch_size)
        kwargs["mu"] = calculate_shift(
            image_seq_len,
            fresh.config.get("base_image_seq_len", 256),
            fresh.config.get("max_image_seq_len", 4096),
            fresh.config.get("base_shift", 0.5),
            fresh.config.get("max_shift", 1.16),
        )
    fresh.set_timesteps(num_inference_steps, device=device, **kwargs)
    return fresh.timesteps.float(), fresh.sigmas.float()


def predict_velocity(transformer, latents: torch.Tensor, timestep, conditioning: SD3Conditioning, guidance: Guidance,
                     model_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The transformer's velocity for ``latents`` at ``timestep`` (scalar or [B]), with CFG when
    ``guidance.scale > 1`` (unconditional half first, as diffusers does).

    ``model_dtype``: the dtype the latents are cast to (default ``transformer.dtype``, which diffusers
    computes by walking the parameters: pass it in hot loops).
    """
    batch = latents.shape[0]
    timestep = torch.as_tensor(timestep, device=latents.device, dtype=torch.float32).reshape(-1).expand(batch)
    model_input = latents.to(model_dtype or transformer.dtype)

    def call(hidden_states, timesteps, embeds, pooled):
        return transformer(hidden_states=hidden_states, timestep=timesteps, encoder_hidden_states=embeds,
                           pooled_projections=pooled, return_dict=False)[0]

    embeds, pooled = conditioning.prompt_embeds, conditioning.pooled_prompt_embeds
    if guidance.scale <= 1.0:
        return call(model_input, timestep, embeds, pooled)
    if guidance.negative is None:
        raise ValueError("guidance scale > 1 needs negative (empty-prompt) embeddings")
    negative_embeds = guidance.negative.prompt_embeds.expand(batch, -1, -1)
    negative_pooled = guidance.negative.pooled_prompt_embeds.expand(batch, -1)
    if guidance.batched:
        doubled = call(torch.cat([model_input, model_input]), torch.cat([timestep, timestep]),
                       torch.cat([negative_embeds, embeds]), torch.cat([negative_pooled, pooled]))
        velocity_uncond, velocity_text = doubled.chunk(2)
    else:
        velocity_uncond = call(model_input, timestep, negative_embeds, negative_pooled)
        velocity_text = call(model_input, timestep, embeds, pooled)
    return velocity_uncond + guidance.scale * (velocity_text - velocity_uncond)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Latents to float32 images in [0, 1] (SD3's scaling and shift, then the VAE decoder), in chunks."""
    images = []
    batch_size = batch_size or latents.shape[0]
    vae_dtype = next(vae.parameters()).dtype
    shift = vae.config.shift_factor or 0.0
    for chunk in latents.split(batch_size):
        chunk = chunk / vae.config.scaling_factor + shift
        decoded = vae.decode(chunk.to(vae_dtype), return_dict=False)[0]
        images.append((decoded.float() / 2 + 0.5).clamp(0, 1))
    return torch.cat(images)


def initial_latents(shape, generator, device, same_latent_groups: Sequence[Hashable] | None = None) -> torch.Tensor:
    """Standard normal latents (as diffusers' ``randn_tensor``); with ``same_latent_groups`` (one key per
    sample, e.g. its prompt) every sample takes the noise drawn for the first sample of its group."""
    latents = randn_like_sample(shape, generator, device)
    if same_latent_groups is not None:
        if len(same_latent_groups) != shape[0]:
            raise ValueError(f"same_latent_groups has {len(same_latent_groups)} keys for a batch of {shape[0]}")
        first = {}
        source = [first.setdefault(key, i) for i, key in enumerate(same_latent_groups)]
        latents = latents[torch.tensor(source, device=latents.device)]
    return latents


@torch.no_grad()
def sd3_sample_with_logprob(
    pipeline,
    conditioning: SD3Conditioning,
    negative: SD3Conditioning | None = None,
    *,
    num_inference_steps: int = 10,
    guidance_scale: float = 4.5,
    height: int = 512,
    width: int = 512,
    noise_level: float = 0.7,
    sde_type: str = "sde",
    deterministic: bool = False,
    sde_window_size: int = 0,
    sde_window_range=None,
    window_generator: torch.Generator | None = None,
    generator=None,
    latents: torch.Tensor | None = None,
    same_latent_groups: Sequence[Hashable] | None = None,
    decode: bool = True,
    decode_batch_size: int | None = None,
    store_means: bool = False,
    store_latents: bool = True,
    transformer=None,
    progress: bool = False,
    batched_cfg: bool = True,
) -> SD3Trajectory:
    """Sample images and the log-probs of the stochastic steps.

    Args:
        pipeline: a ``StableDiffusion3Pipeline`` (its transformer, VAE and scheduler config are used).
        conditioning: from :func:`flow_grpo.sd3.encode_prompt`, one row per image.
        negative: the empty prompt's conditioning (one row, or one per image); needed when ``guidance_scale > 1``.
        noise_level, sde_type: the SDE of ``flow_grpo.sde``; ``deterministic=True`` gives the ODE.
        sde_window_size, sde_window_range, window_generator: Flow-GRPO-Fast, only one window of steps
            (chosen uniformly inside the range) is stochastic and stored.
        generator: one generator or one per image, for the initial noise and then every SDE step.
        latents: initial noise instead of drawing it. same_latent_groups: one key per image; images with
            equal keys start from the same noise.
        store_means: also keep each stored step's Gaussian mean (GRPO-Guard). store_latents: False keeps
            only the final latents (``latents`` is None), for ODE rollouts.
        transformer: use this module instead of ``pipeline.transformer`` (e.g. an EMA or wrapped copy).
        batched_cfg: one transformer call on the doubled batch for CFG (False: two calls, less memory).
    """
    transformer = transformer if transformer is not None else pipeline.transformer
    batch_size = len(conditioning)
    device = conditioning.prompt_embeds.device
    latent_height, latent_width = height // pipeline.vae_scale_factor, width // pipeline.vae_scale_factor
    config = transformer.config if hasattr(transformer, "config") else pipeline.transformer.config
    if latents is None:
        shape = (batch_size, config.in_channels, latent_height, latent_width)
        latents = initial_latents(shape, generator, device, same_latent_groups)
    timesteps, sigmas = sd3_schedule(pipeline.scheduler, num_inference_steps, latent_height, latent_width, config.patch_size, device)
    window = choose_sde_window(num_inference_steps, sde_window_size, sde_window_range, window_generator)
    guidance = Guidance(guidance_scale, negative, batched_cfg)
    model_dtype = next(transformer.parameters()).dtype
    timestep_scale = pipeline.scheduler.config.num_train_timesteps  # the scheduler's timestep is sigma * this

    def velocity(x, sigma):
        return predict_velocity(transformer, x, sigma * timestep_scale, conditioning, guidance, model_dtype)

    trajectory = sample_with_logprob(
        velocity, latents, sigmas, SDEParams(0.0 if deterministic else noise_level, sde_type),
        window=window, generator=generator, store_means=store_means, store_latents=store_latents, progress=progress,
    )
    images = decode_latents(pipeline.vae, trajectory.final_latents, decode_batch_size) if decode else None
    return SD3Trajectory(**vars(trajectory), images=images, timesteps=timesteps[window[0] : window[1]])
