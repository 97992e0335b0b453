"""Sampling any backbone with per-step log-probabilities, and the one image-generation function.

:func:`sample` puts a backbone's velocity (guidance included) into the shared loop
(``flow_grpo.sampling_loop.sample_with_logprob``); the trainer re-scores stored steps with the same velocity
through ``flow_grpo.backbones.policy.BackbonePolicy``, so sampling and training share one code path.
:func:`generate_images` is how every consumer that wants "N ODE images per prompt" gets them (training's
evaluation, ``inference_demo.py``, GenEval generation, the shapes world's evaluation, ``sde_diff/``), with one
seeding scheme: :func:`image_generator`.

Latents are float32 from start to end whatever the transformer's dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from flow_grpo.backbones.base import Backbone, Guidance
from flow_grpo.rollout_types import Conditioning
from flow_grpo.sampling_loop import Trajectory, choose_sde_window, sample_with_logprob
from flow_grpo.sde import SDEParams, randn_like_sample
from flow_grpo.seeding import generator_for


@dataclasses.dataclass
class SamplingSpec:
    """How to sample a batch: steps, guidance, size, and the SDE (``noise_level = 0``: the ODE)."""

    num_steps: int
    guidance_scale: float
    height: int
    width: int
    num_frames: int = 1  # a video family's frames (1 for images)
    noise_level: float = 0.0
    sde_type: str = "sde"
    sde_window_size: int = 0  # Flow-GRPO-Fast: > 0 makes only one window of steps stochastic (and stored)
    sde_window_range: tuple | None = None
    sde_window_start: int | None = None  # a window placed by the caller (MixGRPO's progressive schedule), not at random
    ode_solver: str = "euler"  # the deterministic steps after the window: "euler" or "dpm2" (flow_grpo.sampling_loop)
    store_means: bool = False  # keep each stored step's Gaussian mean (GRPO-Guard)
    store_latents: bool = True  # False keeps only the final latents (ODE rollouts)
    batched_cfg: bool = True  # CFG as one call on the doubled batch
    decode: bool = True
    decode_batch_size: int | None = None


@dataclasses.dataclass
class SampleNoise:
    """The random draws of one batch: its initial latents, the SDE steps' noise, the Fast window's start."""

    latents: torch.Tensor  # [B, *latent] at sigma = 1
    steps: object = None  # a torch.Generator, one per sample, or None (the global generator)
    window: torch.Generator | None = None


@dataclasses.dataclass
class BackboneTrajectory(Trajectory):
    """:class:`flow_grpo.sampling_loop.Trajectory` plus the decoded images."""

    images: torch.Tensor | None = None  # [B, 3, H, W] in [0, 1], float32 (None when spec.decode is False)


def initial_latents(shape, generator, device) -> torch.Tensor:
    """Standard normal latents (as diffusers' ``randn_tensor``): one generator, or one per sample (the
    trainer's ``same_latent`` seeds a sample's generator by its prompt, so a group starts from one noise)."""
    return randn_like_sample(shape, generator, device)


@torch.no_grad()
def sample(backbone: Backbone, conditioning: Conditioning, negative: Conditioning | None, spec: SamplingSpec,
           noise: SampleNoise, transformer=None) -> BackboneTrajectory:
    """Sample ``len(conditioning)`` latents (and images) with the log-probs of the stochastic steps.

    ``negative``: the negative prompt's conditioning (one row or one per sample), needed when the family runs
    a negative pass and ``spec.guidance_scale > 1``. ``transformer``: the module to run instead of the
    backbone's own (an EMA-swapped or wrapped copy).
    """
    transformer = transformer if transformer is not None else backbone.transformer
    sigmas = backbone.sigmas(spec.num_steps, spec.height, spec.width, noise.latents.device)
    if spec.sde_window_start is not None and spec.sde_window_size > 0:
        window = (spec.sde_window_start, spec.sde_window_start + spec.sde_window_size)
    else:
        window = choose_sde_window(spec.num_steps, spec.sde_window_size, spec.sde_window_range, noise.window)
    guidance = Guidance(spec.guidance_scale, negative, spec.batched_cfg)
    model_dtype = next(transformer.parameters()).dtype

    def velocity(x, sigma):
        return backbone.velocity(transformer, x, sigma, conditioning, guidance, model_dtype)

    trajectory = sample_with_logprob(
        velocity, noise.latents, sigmas, SDEParams(spec.noise_level, spec.sde_type, spec.ode_solver), window=window,
        generator=noise.steps, store_means=spec.store_means, store_latents=spec.store_latents,
    )
    images = backbone.decode(trajectory.final_latents, spec.decode_batch_size) if spec.decode else None
    return BackboneTrajectory(**vars(trajectory), images=images)


# ---- N ODE images per prompt ----

def image_generator(seed: int, prompt_index: int, image_index: int) -> torch.Generator:
    """The one seeding scheme of generated images: image ``k`` of prompt ``i`` under ``seed``, whatever the
    model, batch layout or process count (so a base and a trained model see the same noise)."""
    parts = (prompt_index,) if image_index == 0 else (prompt_index, image_index)
    return generator_for(seed, "eval", *parts)


@dataclasses.dataclass
class ImageJob:
    """One image to generate: image ``image_index`` of prompt number ``prompt_index``."""

    prompt: str
    prompt_index: int
    image_index: int = 0
    input_image: torch.Tensor | None = None  # [3, H, W] in [0, 1]: the image an editing family edits


@dataclasses.dataclass
class GenerationOptions:
    """What stays fixed over a generation run."""

    seed: int = 0
    max_sequence_length: int = 256
    batch_size: int = 8
    transformer: torch.nn.Module | None = None  # default: the backbone's own
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # around sampling only
    progress: bool = False
    description: str = "images"


def image_jobs(prompts: Sequence[str], images_per_prompt: int) -> list[ImageJob]:
    return [ImageJob(prompt, i, k) for i, prompt in enumerate(prompts) for k in range(images_per_prompt)]


@torch.no_grad()
def generate_batches(backbone: Backbone, jobs: Sequence[ImageJob], spec: SamplingSpec,
                     options: GenerationOptions) -> Iterator[tuple[list[ImageJob], torch.Tensor]]:
    """``(jobs of the batch, images [b, 3, H, W] (videos [b, F, 3, H, W]) in [0, 1] on the CPU)`` per batch of
    ``options.batch_size``.
    ``spec`` is used as given (set ``noise_level`` 0 for the ODE); the initial noise of each image comes
    from :func:`image_generator` and so does its SDE noise, if any."""
    device = backbone.transformer.device
    negative = backbone.negative_conditioning(options.max_sequence_length, device)
    shape = backbone.latent_shape(spec.height, spec.width, spec.num_frames)
    batches = range(0, len(jobs), options.batch_size)
    for start in tqdm(batches, desc=options.description, disable=not options.progress, leave=False):
        chunk = list(jobs[start : start + options.batch_size])
        generators = [image_generator(options.seed, job.prompt_index, job.image_index) for job in chunk]
        inputs = None if chunk[0].input_image is None else torch.stack([job.input_image for job in chunk]).to(device)
        conditioning = backbone.condition([job.prompt for job in chunk], options.max_sequence_length, device, inputs)
        noise = SampleNoise(latents=initial_latents((len(chunk), *shape), generators, device), steps=generators)
        with options.autocast():
            trajectory = sample(backbone, conditioning, negative, dataclasses.replace(spec, decode=True, store_latents=False),
                                noise, transformer=options.transformer)
        yield chunk, trajectory.images.cpu()


def generate_images(backbone: Backbone, jobs: Sequence[ImageJob], spec: SamplingSpec, options: GenerationOptions) -> torch.Tensor:
    """Every job's image, in job order: ``[len(jobs), 3, H, W]`` in [0, 1]."""
    return torch.cat([images for _, images in generate_batches(backbone, jobs, spec, options)])
