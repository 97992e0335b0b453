"""A FLUX.1 Kontext pipeline at tiny size: the tiny FLUX.1-dev's components (``flow_grpo.backbones.flux.tiny``)
in a ``FluxKontextPipeline``, which joins the input image's tokens to the sequence. The default 32 px matches
the shapes world's editing task (4 x 4 latents: 4 noisy and 4 reference tokens)."""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.flux.tiny import TinyFluxConfig, build_tiny_flux_pipeline


def build_tiny_kontext_pipeline(config: TinyFluxConfig | None = None, seed: int = 0, torch_dtype=torch.float32):
    """A ``FluxKontextPipeline`` of randomly initialised (seeded) tiny components, in eval mode."""
    from diffusers import FluxKontextPipeline

    config = config or dataclasses.replace(TinyFluxConfig(), resolution=32)
    flux = build_tiny_flux_pipeline(config, seed, torch_dtype)
    return FluxKontextPipeline(**{name: module for name, module in flux.components.items()})
