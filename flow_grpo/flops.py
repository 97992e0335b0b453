"""Analytic FLOP counts of each family's transformer (SD3, FLUX.1, Qwen-Image, Wan2.1, FLUX.1 Kontext; one
multiply-add = 2 FLOPs),
for throughput and MFU figures. Each is checked against PyTorch's FLOP counter (tests/test_benchmark.py).

``linear`` covers every matrix product with weights (projections, MLPs, adaLN modulation, patch embedding,
output projection); ``attention`` the two products of scaled-dot-product attention (QK^T and AV), which
PyTorch's FLOP counter does not see on every backend. A training micro-step with LoRA costs about two
forwards (the backward pass computes activation gradients; the frozen weights need no weight gradients and
the LoRA's are negligible); a full fine-tuning step about three.
"""

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


def _joint_block(d: int, n_img: int, n_txt: int) -> tuple[float, float]:
    """(linear, attention) FLOPs of one dual-stream block (FLUX's double blocks, Qwen-Image's blocks): q, k, v and
    output projections of both streams, attention over the joint sequence, a 4x MLP on each stream."""
    linear = 2 * 3 * d * d * (n_img + n_txt) + 2 * d * d * (n_img + n_txt) + 2 * 2 * 4 * d * d * (n_img + n_txt)
    return linear, 2 * 2 * (n_img + n_txt) ** 2 * d


def flux_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``FluxTransformer2DModel`` with ``config`` on ``batch`` samples (packed image tokens)."""
    d = config.num_attention_heads * config.attention_head_dim
    n_img, n_txt, n = image_tokens, text_tokens, image_tokens + text_tokens
    out_channels = config.out_channels or config.in_channels
    linear = 2 * n_img * config.in_channels * d + 2 * n_txt * config.joint_attention_dim * d
    linear += 2 * (256 * d + d * d) * (2 if config.guidance_embeds else 1) + 2 * (config.pooled_projection_dim * d + d * d)
    attention = 0.0
    for _ in range(config.num_layers):  # double blocks: adaLN (6 chunks) per stream, then the joint block
        block_linear, block_attention = _joint_block(d, n_img, n_txt)
        linear += 2 * 2 * d * 6 * d + block_linear
        attention += block_attention
    for _ in range(config.num_single_layers):  # single blocks: adaLN (3), q k v and a 4x MLP in, one projection out
        linear += 2 * d * 3 * d + 2 * 3 * d * d * n + 2 * n * d * 4 * d + 2 * n * 5 * d * d
        attention += 2 * 2 * n * n * d
    linear += 2 * d * 2 * d + 2 * n_img * d * config.patch_size ** 2 * out_channels
    return {"linear": batch * linear, "attention": batch * attention, "total": batch * (linear + attention)}


def qwenimage_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``QwenImageTransformer2DModel`` with ``config`` on ``batch`` samples (packed image tokens)."""
    d = config.num_attention_heads * config.attention_head_dim
    n_img, n_txt = image_tokens, text_tokens
    linear = 2 * n_img * config.in_channels * d + 2 * n_txt * config.joint_attention_dim * d + 2 * (256 * d + d * d)
    attention = 0.0
    for _ in range(config.num_layers):  # modulation (6 chunks) per stream, then the joint block
        block_linear, block_attention = _joint_block(d, n_img, n_txt)
        linear += 2 * 2 * d * 6 * d + block_linear
        attention += block_attention
    linear += 2 * d * 2 * d + 2 * n_img * d * config.patch_size ** 2 * config.out_channels
    return {"linear": batch * linear, "attention": batch * attention, "total": batch * (linear + attention)}


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


def kontext_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """FLUX.1 Kontext: FLUX's transformer on the noisy tokens and as many input-image tokens (``image_tokens`` is
    the noisy count; the input image is encoded at the output's size)."""
    return flux_transformer_flops(config, batch, 2 * image_tokens, text_tokens)


TRANSFORMER_FLOPS = {"sd3": sd3_transformer_flops, "flux": flux_transformer_flops, "qwenimage": qwenimage_transformer_flops,
                     "wan": wan_transformer_flops, "flux_kontext": kontext_transformer_flops}


def transformer_flops(family: str, config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """The forward FLOPs of ``family``'s transformer (``TRANSFORMER_FLOPS``)."""
    return TRANSFORMER_FLOPS[family](config, batch, image_tokens, text_tokens)


def image_tokens(config, resolution: int, vae_scale_factor: int, family: str = "sd3") -> int:
    """Image tokens of the transformer at ``resolution``: SD3 and Qwen-Image patchify by ``patch_size`` (Qwen's 2
    is its 2x2 packing); FLUX's patch 1 works on latents already packed 2x2."""
    latent = resolution // vae_scale_factor
    step = 2 * config.patch_size if family == "flux" else config.patch_size
    return (latent // step) ** 2
