"""Analytic forward FLOPs of Wan2.1's video transformer (flow_grpo/flops.py: the conventions; tests/test_benchmark.py checks them
against PyTorch's FLOP counter)."""

from __future__ import annotations

def wan_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``WanTransformer3DModel`` with ``config`` on ``batch`` clips of ``image_tokens`` video
    patches (frames x rows x cols after the 1 x 2 x 2 patching): self-attention over the patches, cross-attention
    to the text, a ``ffn_dim`` MLP; the patch embedding is a convolution (PyTorch counts it apart)."""
    d = config.num_attention_heads * config.attention_head_dim
    n_vid, n_txt = image_tokens, text_tokens
    patch = config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
    out_channels = config.out_channels or config.in_channels
    linear = 2 * n_vid * patch * config.in_channels * d  # the patch embedding
    linear += 2 * (config.freq_dim * d + d * d) + 2 * d * 6 * d  # timestep MLP and its 6 modulation chunks
    linear += 2 * n_txt * (config.text_dim * d + d * d)  # the text projection MLP
    attention = 0.0
    for _ in range(config.num_layers):
        linear += 2 * 4 * d * d * n_vid + 2 * 2 * d * d * n_vid + 2 * 2 * d * d * n_txt  # self q k v o; cross q o on video, k v on text
        linear += 2 * 2 * d * config.ffn_dim * n_vid
        attention += 2 * 2 * n_vid * n_vid * d + 2 * 2 * n_vid * n_txt * d
    linear += 2 * n_vid * d * patch * out_channels
    return {"linear": batch * linear, "attention": batch * attention, "total": batch * (linear + attention)}
