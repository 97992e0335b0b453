"""Sampling from a diffusers ``StableDiffusion3Pipeline`` with per-step log-probabilities.

One function computes a denoising step, :func:`denoising_step` (velocity with CFG, then
``flow_grpo.sde.sde_step_with_logprob``). The sampler calls it to draw trajectories and the trainer calls it
with ``prev_sample`` to re-score stored transitions, so the two share one code path.

Latents are float32 from start to end whatever the transformer's dtype: the transformer sees them cast to
its dtype, its output is cast back to float32 by the SDE step.

Flow-GRPO-Fast: with ``sde_window_size > 0`` only the steps of one window (chosen uniformly inside
``sde_window_range`` once per call) are stochastic and stored; every other step is the deterministic ODE.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence

import torch

from flow_grpo.sde import randn_like_sample, sde_step_with_logprob


@dataclasses.dataclass
class SD3Trajectory:
    """What a sampling call returns. ``K`` is the number of stored steps (all steps, or the SDE window).

    ``latents[:, j]`` is the input of stored step ``j`` and ``latents[:, j + 1]`` its output.
    """

    images: torch.Tensor | None  # [B, 3, H, W] in [0, 1], float32 (None when decode=False)
    latents: torch.Tensor  # [B, K + 1, C, h, w] float32
    log_probs: torch.Tensor  # [B, K] float32
    timesteps: torch.Tensor  # [K] the transformer's timestep input for each stored step
    sigmas: torch.Tensor  # [K]
    sigmas_next: torch.Tensor  # [K]
    step_indices: torch.Tensor  # [K] position of each stored step in the full schedule
    final_latents: torch.Tensor  # [B, C, h, w]
    prev_sample_means: torch.Tensor | None = None  # [B, K, C, h, w] when store_means
    std_devs: torch.Tensor | None = None  # [B, K] standard deviation of each stored transition


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


def predict_velocity(
    transformer,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None,
    negative_pooled_prompt_embeds: torch.Tensor | None,
    guidance_scale: float,
    model_dtype: torch.dtype | None = None,
    batched_cfg: bool = True,
) -> torch.Tensor:
    """The transformer's velocity for ``latents`` at ``timestep`` (scalar or [B]), with CFG when
    ``guidance_scale > 1``: one call on the doubled batch (unconditional half first, as diffusers does), or
    two calls with ``batched_cfg=False`` (less memory, slower).

    ``model_dtype``: the dtype the latents are cast to (default ``transformer.dtype``, which diffusers
    computes by walking the parameters: pass it in hot loops).
    """
    batch = latents.shape[0]
    timestep = torch.as_tensor(timestep, device=latents.device, dtype=torch.float32).reshape(-1).expand(batch)
    model_input = latents.to(model_dtype or transformer.dtype)
    if guidance_scale > 1.0:
        if negative_prompt_embeds is None or negative_pooled_prompt_embeds is None:
            raise ValueError("guidance_scale > 1 needs negative (empty-prompt) embeddings")
        if not batched_cfg:
            def call(embeds, pooled):
                return transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=embeds,
                                   pooled_projections=pooled, return_dict=False)[0]

            velocity_uncond = call(negative_prompt_embeds, negative_pooled_prompt_embeds)
            velocity_text = call(prompt_embeds, pooled_prompt_embeds)
            return velocity_uncond + guidance_scale * (velocity_text - velocity_uncond)
        model_input = torch.cat([model_input, model_input])
        timestep = torch.cat([timestep, timestep])
        prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
        pooled_prompt_embeds = torch.cat([negative_pooled_prompt_embeds, pooled_prompt_embeds])
    velocity = transformer(
        hidden_states=model_input,
        timestep=timestep,
        encoder_hidden_states=prompt_embeds,
        pooled_projections=pooled_prompt_embeds,
        return_dict=False,
    )[0]
    if guidance_scale > 1.0:
        velocity_uncond, velocity_text = velocity.chunk(2)
        velocity = velocity_uncond + guidance_scale * (velocity_text - velocity_uncond)
    return velocity


def denoising_step(
    transformer,
    latents,
    timestep,
    sigma,
    sigma_next,
    prompt_embeds,
    pooled_prompt_embeds,
    negative_prompt_embeds,
    negative_pooled_prompt_embeds,
    guidance_scale: float,
    noise_level: float,
    sde_type: str = "sde",
    prev_sample: torch.Tensor | None = None,
    generator=None,
    model_dtype: torch.dtype | None = None,
    batched_cfg: bool = True,
):
    """One policy step: velocity (CFG included), then the Gaussian step; draws, or scores ``prev_sample``.

    ``timestep``, ``sigma``, ``sigma_next`` are scalars or per-sample [B] tensors. Returns
    ``(prev_sample, log_prob, prev_sample_mean, std_dev)`` as ``sde_step_with_logprob``.
    """
    velocity = predict_velocity(
        transformer, latents, timestep, prompt_embeds, pooled_prompt_embeds,
        negative_prompt_embeds, negative_pooled_prompt_embeds, guidance_scale, model_dtype, batched_cfg,
    )
    return sde_step_with_logprob(
        velocity, sigma, sigma_next, latents, noise_level, prev_sample=prev_sample, sde_type=sde_type, generator=generator
    )


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
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_pooled_prompt_embeds: torch.Tensor | None = None,
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
    transformer=None,
    progress: bool = False,
    batched_cfg: bool = True,
) -> SD3Trajectory:
    """Sample images and the log-probs of the stochastic steps.

    Args:
        pipeline: a ``StableDiffusion3Pipeline`` (its transformer, VAE and scheduler config are used).
        prompt_embeds, pooled_prompt_embeds: from :func:`encode_prompt`, one row per image.
        negative_*: the empty prompt's embeddings, one row per image; needed when ``guidance_scale > 1``.
        noise_level, sde_type: the SDE of ``flow_grpo.sde``; ``deterministic=True`` gives the ODE.
        sde_window_size, sde_window_range, window_generator: Flow-GRPO-Fast (see module docstring).
        generator: one generator or one per image, for the initial noise and then every SDE step.
        latents: initial noise instead of drawing it. same_latent_groups: one key per image; images with
            equal keys start from the same noise.
        store_means: also keep each stored step's Gaussian mean (GRPO-Guard).
        transformer: use this module instead of ``pipeline.transformer`` (e.g. an EMA or wrapped copy).
    """
    transformer = transformer if transformer is not None else pipeline.transformer
    batch_size = prompt_embeds.shape[0]
    device = prompt_embeds.device
    vae_scale_factor = pipeline.vae_scale_factor
    latent_height, latent_width = height // vae_scale_factor, width // vae_scale_factor
    config = transformer.config if hasattr(transformer, "config") else pipeline.transformer.config
    if latents is None:
        shape = (batch_size, config.in_channels, latent_height, latent_width)
        latents = initial_latents(shape, generator, device, same_latent_groups)
    latents = latents.float()

    model_dtype = next(transformer.parameters()).dtype
    timesteps, sigmas = sd3_schedule(pipeline.scheduler, num_inference_steps, latent_height, latent_width, config.patch_size, device)
    start, end = choose_sde_window(num_inference_steps, sde_window_size, sde_window_range, window_generator)

    stored_latents, log_probs, means, stds = [], [], [], []
    steps = range(num_inference_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
    for i in steps:
        in_window = start <= i < end
        if i == start:
            stored_latents.append(latents)
        latents, log_prob, prev_sample_mean, std_dev = denoising_step(
            transformer, latents, timesteps[i], sigmas[i], sigmas[i + 1],
            prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds,
            guidance_scale, 0.0 if (deterministic or not in_window) else noise_level, sde_type, generator=generator,
            model_dtype=model_dtype, batched_cfg=batched_cfg,
        )
        if in_window:
            stored_latents.append(latents)
            log_probs.append(log_prob)
            stds.append(std_dev.reshape(batch_size))
            if store_means:
                means.append(prev_sample_mean)

    images = decode_latents(pipeline.vae, latents, decode_batch_size) if decode else None
    window = torch.arange(start, end, device=device)
    return SD3Trajectory(
        images=images,
        latents=torch.stack(stored_latents, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        timesteps=timesteps[start:end],
        sigmas=sigmas[start:end],
        sigmas_next=sigmas[start + 1 : end + 1],
        step_indices=window,
        final_latents=latents,
        prev_sample_means=torch.stack(means, dim=1) if store_means else None,
        std_devs=torch.stack(stds, dim=1),
    )
