"""Qwen-Image at its published sizes (parameter counts, and the benchmark's full-size preset 'qwenimage'), or a
CPU-sized analogue of the same structure (``reduced``), built from config with random weights: nothing is
downloaded. ``build(reduced, device, dtype)`` returns (pipeline, resolution); scripts/benchmark.py asks the
family for it (``Backbone.presets``)."""

from __future__ import annotations

import torch

from flow_grpo.backbones.base import default_dtype


def qwenimage_components(reduced: bool):
    """Qwen-Image's parts (Qwen/Qwen-Image's configs: 60 dual-stream blocks of width 3072, the Qwen2.5-VL-7B
    text encoder, the causal 3-D VAE), or a CPU-sized analogue with the same structure."""
    if reduced:
        return dict(
            transformer=dict(num_layers=2, attention_head_dim=64, num_attention_heads=4, joint_attention_dim=256,
                             axes_dims_rope=(8, 28, 28)),
            vae=dict(base_dim=16, num_res_blocks=1),
            text=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      mrope_section=[8, 12, 12]),
            vision=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, fullatt_block_indexes=[0]),
            resolution=128,
        )
    return dict(
        transformer=dict(num_layers=60, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=3584,
                         axes_dims_rope=(16, 56, 56)),
        vae=dict(base_dim=96, num_res_blocks=2),
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  mrope_section=[16, 24, 24]),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31]),
        resolution=512,
    )


def build_qwenimage(reduced: bool, device, dtype):
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from flow_grpo.backbones.tiny_text import PAD_ID, make_tokenizer

    parts = qwenimage_components(reduced)
    tokenizer = make_tokenizer("qwen", 1024)
    text = dict(parts["text"])
    section = text.pop("mrope_section")
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, max_position_embeddings=32768, pad_token_id=PAD_ID, bos_token_id=None,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": section}, **text),
        vision_config=dict(out_hidden_size=text["hidden_size"], **parts["vision"]),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    )
    with torch.device(device), default_dtype(dtype):
        transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, guidance_embeds=False,
                                                  **parts["transformer"])
        vae = AutoencoderKLQwenImage(z_dim=16, dim_mult=[1, 2, 4, 4], attn_scales=[], temperal_downsample=[False, True, True],
                                     **parts["vae"])
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=8192, base_shift=0.5, max_shift=0.9,
        shift_terminal=0.02, time_shift_type="exponential",
    )
    pipeline = QwenImagePipeline(scheduler=scheduler, vae=vae.float(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                 transformer=transformer)
    return pipeline, parts["resolution"]
