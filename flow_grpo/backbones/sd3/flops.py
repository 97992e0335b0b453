"""Analytic forward FLOPs of Stable Diffusion 3's transformer (flow_grpo/flops.py: the conventions; tests/test_benchmark.py checks them
against PyTorch's FLOP counter)."""

from __future__ import annotations

def sd3_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``SD3Transformer2DModel`` with ``config`` on ``batch`` samples."""
    d = config.num_attention_heads * config.attention_head_dim
    n_img, n_txt, n = image_tokens, text_tokens, image_tokens + text_tokens
    patch = config.patch_size
    dual = set(getattr(config, "dual_attention_layers", ()) or ())
    linear_per_sample = 0.0
    attention_per_sample = 0.0
    # embeddings: patch convolution, caption projection, timestep (256 -> d -> d) and pooled (-> d -> d) MLPs
    linear_per_sample += 2 * n_img * patch * patch * config.in_channels * d
    linear_per_sample += 2 * n_txt * config.joint_attention_dim * config.caption_projection_dim
    linear_per_sample += 2 * (256 * d + d * d) + 2 * (config.pooled_projection_dim * d + d * d)
    for layer in range(config.num_layers):
        context_pre_only = layer == config.num_layers - 1
        # adaLN modulation: 6 (9 with dual attention) chunks for the image stream, 6 or 2 for the context
        linear_per_sample += 2 * d * d * (9 if layer in dual else 6) + 2 * d * d * (2 if context_pre_only else 6)
        # joint attention: q, k, v on both streams, output projections (the context's only if it continues)
        linear_per_sample += 2 * 3 * d * d * (n_img + n_txt) + 2 * d * d * n_img + (0 if context_pre_only else 2 * d * d * n_txt)
        attention_per_sample += 2 * 2 * n * n * d
        if layer in dual:  # a second, image-only attention (SD3.5 "MMDiT-X")
            linear_per_sample += 2 * 4 * d * d * n_img
            attention_per_sample += 2 * 2 * n_img * n_img * d
        # MLPs (4x): the image stream, and the context's unless it ends here
        linear_per_sample += 2 * 2 * 4 * d * d * n_img + (0 if context_pre_only else 2 * 2 * 4 * d * d * n_txt)
    # final adaLN and projection back to patches
    linear_per_sample += 2 * d * 2 * d + 2 * n_img * d * patch * patch * config.out_channels
    return {
        "linear": batch * linear_per_sample,
        "attention": batch * attention_per_sample,
        "total": batch * (linear_per_sample + attention_per_sample),
    }
