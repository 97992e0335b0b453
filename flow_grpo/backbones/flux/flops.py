"""Analytic forward FLOPs of FLUX.1's transformer (flow_grpo/flops.py: the conventions; tests/test_benchmark.py checks them
against PyTorch's FLOP counter)."""

from __future__ import annotations

from flow_grpo.flops import joint_block_flops


def flux_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``FluxTransformer2DModel`` with ``config`` on ``batch`` samples (packed image tokens)."""
    d = config.num_attention_heads * config.attention_head_dim
    n_img, n_txt, n = image_tokens, text_tokens, image_tokens + text_tokens
    out_channels = config.out_channels or config.in_channels
    linear = 2 * n_img * config.in_channels * d + 2 * n_txt * config.joint_attention_dim * d
    linear += 2 * (256 * d + d * d) * (2 if config.guidance_embeds else 1) + 2 * (config.pooled_projection_dim * d + d * d)
    attention = 0.0
    for _ in range(config.num_layers):  # double blocks: adaLN (6 chunks) per stream, then the joint block
        block_linear, block_attention = joint_block_flops(d, n_img, n_txt)
        linear += 2 * 2 * d * 6 * d + block_linear
        attention += block_attention
    for _ in range(config.num_single_layers):  # single blocks: adaLN (3), q k v and a 4x MLP in, one projection out
        linear += 2 * d * 3 * d + 2 * 3 * d * d * n + 2 * n * d * 4 * d + 2 * n * 5 * d * d
        attention += 2 * 2 * n * n * d
    linear += 2 * d * 2 * d + 2 * n_img * d * config.patch_size ** 2 * out_channels
    return {"linear": batch * linear, "attention": batch * attention, "total": batch * (linear + attention)}
