"""Analytic forward FLOPs of Qwen-Image's transformer (flow_grpo/flops.py: the conventions; tests/test_benchmark.py checks them
against PyTorch's FLOP counter)."""

from __future__ import annotations

from flow_grpo.flops import joint_block_flops


def qwenimage_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``QwenImageTransformer2DModel`` with ``config`` on ``batch`` samples (packed image tokens)."""
    d = config.num_attention_heads * config.attention_head_dim
    n_img, n_txt = image_tokens, text_tokens
    linear = 2 * n_img * config.in_channels * d + 2 * n_txt * config.joint_attention_dim * d + 2 * (256 * d + d * d)
    attention = 0.0
    for _ in range(config.num_layers):  # modulation (6 chunks) per stream, then the joint block
        block_linear, block_attention = joint_block_flops(d, n_img, n_txt)
        linear += 2 * 2 * d * 6 * d + block_linear
        attention += block_attention
    linear += 2 * d * 2 * d + 2 * n_img * d * config.patch_size ** 2 * config.out_channels
    return {"linear": batch * linear, "attention": batch * attention, "total": batch * (linear + attention)}
