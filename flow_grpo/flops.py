"""Analytic FLOP counts of the families' transformers (one multiply-add = 2 FLOPs), for throughput and MFU
figures. Each family brings its own count (``<family>/flops.py`` in flow_grpo/backbones, the Backbone's
``transformer_flops`` and ``image_tokens``); each is checked against PyTorch's FLOP counter
(tests/test_benchmark.py).

``linear`` covers every matrix product with weights (projections, MLPs, adaLN modulation, patch embedding,
output projection); ``attention`` the two products of scaled-dot-product attention (QK^T and AV), which
PyTorch's FLOP counter does not see on every backend. A training micro-step with LoRA costs about two
forwards (the backward pass computes activation gradients; the frozen weights need no weight gradients and
the LoRA's are negligible); a full fine-tuning step about three.
"""

from __future__ import annotations


def joint_block_flops(d: int, n_img: int, n_txt: int) -> tuple[float, float]:
    """(linear, attention) FLOPs of one dual-stream block (FLUX's double blocks, Qwen-Image's blocks): q, k, v and
    output projections of both streams, attention over the joint sequence, a 4x MLP on each stream."""
    linear = 2 * 3 * d * d * (n_img + n_txt) + 2 * d * d * (n_img + n_txt) + 2 * 2 * 4 * d * d * (n_img + n_txt)
    return linear, 2 * 2 * (n_img + n_txt) ** 2 * d

