"""Analytic forward FLOPs of FLUX.1 Kontext's transformer (flow_grpo/flops.py: the conventions; tests/test_benchmark.py checks them
against PyTorch's FLOP counter)."""

from __future__ import annotations

from flow_grpo.backbones.flux.flops import flux_transformer_flops


def kontext_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """FLUX.1 Kontext: FLUX's transformer on the noisy tokens and as many input-image tokens (``image_tokens`` is
    the noisy count; the input image is encoded at the output's size)."""
    return flux_transformer_flops(config, batch, 2 * image_tokens, text_tokens)
