"""Tiny models built from config, saved in the layout their loaders expect: for tests and CPU runs of the
model-based rewards (no download). The diffusion pipelines live in flow_grpo/backbones/<family>/tiny.py."""

from __future__ import annotations

import torch

from flow_grpo.backbones.tiny_text import BOS_ID, EOS_ID, PAD_ID, _vocabulary, make_tokenizer


def save_tiny_clip(folder: str, seed: int = 0, image_size: int = 32, projection_dim: int = 16) -> str:
    """A random ``CLIPModel`` with its tokenizer and ``CLIPImageProcessor`` in ``folder``; returns ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(_vocabulary()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
        ),
        vision_config=dict(
            image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(folder)
    make_tokenizer("clip", 77).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    return folder


def save_tiny_mask2former(folder: str, labels=None, seed: int = 0, image_size: int = 64) -> str:
    """A random Mask2Former instance-segmentation model (tiny Swin backbone) and its image processor."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

    from flow_grpo.geneval.metadata import COCO_CLASSES

    labels = list(labels or COCO_CLASSES)
    torch.manual_seed(seed)
    backbone = SwinConfig(
        image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone, num_queries=10, hidden_dim=32, mask_feature_size=32, feature_size=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=64, encoder_feedforward_dim=64,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)}, use_pretrained_backbone=False,
    )
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
