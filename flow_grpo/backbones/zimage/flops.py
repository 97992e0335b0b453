"""Analytic forward FLOPs of Z-Image's transformer (flow_grpo/flops.py: the conventions; tests/test_benchmark.py
checks them against PyTorch's FLOP counter)."""

from __future__ import annotations

ADALN_EMBED_DIM = 256  # the width of its timestep embedding, ``min(dim, 256)``
TIMESTEP_MID = 1024  # its timestep MLP's hidden width


def _block(d: int, tokens: int, modulated: bool) -> tuple[float, float]:
    """(linear, attention) FLOPs of one single-stream block on ``tokens`` tokens: q, k, v and output projections, the
    SwiGLU MLP (hidden ``int(8 d / 3)``, three matrices), and, when modulated, its adaLN (4 chunks) per sample."""
    hidden = int(d / 3 * 8)
    linear = 2 * 4 * d * d * tokens + 2 * 3 * d * hidden * tokens + (2 * min(d, ADALN_EMBED_DIM) * 4 * d if modulated else 0)
    return linear, 2 * 2 * tokens * tokens * d


def zimage_transformer_flops(config, batch: int, image_tokens: int, text_tokens: int) -> dict[str, float]:
    """Forward FLOPs of ``ZImageTransformer2DModel`` with ``config`` on ``batch`` samples of ``image_tokens``
    patches and ``text_tokens`` caption tokens, each a multiple of 32 (the model pads both to one): the noise
    refiner on the image tokens, the context refiner on the caption's, the main layers and the final projection on both
    joined."""
    d, n_img, n_txt = config.dim, image_tokens, text_tokens
    patch = config.all_patch_size[0] ** 2 * config.all_f_patch_size[0] * config.in_channels
    t_dim = min(d, ADALN_EMBED_DIM)
    linear = 2 * (256 * TIMESTEP_MID + TIMESTEP_MID * t_dim)  # the timestep MLP
    linear += 2 * n_img * patch * d + 2 * n_txt * config.cap_feat_dim * d  # the patch and caption embeddings
    attention = 0.0
    for tokens, modulated, count in ((n_img, True, config.n_refiner_layers), (n_txt, False, config.n_refiner_layers),
                                     (n_img + n_txt, True, config.n_layers)):
        block_linear, block_attention = _block(d, tokens, modulated)
        linear, attention = linear + count * block_linear, attention + count * block_attention
    # the final layer's adaLN, and its projection back to patches of the joint sequence (the caption's rows dropped after)
    linear += 2 * t_dim * d + 2 * (n_img + n_txt) * d * patch
    return {"linear": batch * linear, "attention": batch * attention, "total": batch * (linear + attention)}
