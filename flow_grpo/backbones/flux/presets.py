"""FLUX.1-dev at its published sizes (parameter counts, and the benchmark's full-size preset 'flux-dev'), or a
CPU-sized analogue of the same structure (``reduced``), built from config with random weights: nothing is
downloaded. ``build(reduced, device, dtype)`` returns (pipeline, resolution); scripts/benchmark.py asks the
family for it (``Backbone.presets``)."""

from __future__ import annotations

import torch

from flow_grpo.backbones.base import default_dtype


def flux_dev_components(reduced: bool):
    """FLUX.1-dev's parts (black-forest-labs/FLUX.1-dev's configs: 19 double and 38 single blocks of width 3072,
    CLIP-L, T5-XXL, a 16-channel VAE), or a CPU-sized analogue with the same structure."""
    if reduced:
        return dict(
            transformer=dict(num_layers=2, num_single_layers=2, attention_head_dim=64, num_attention_heads=4,
                             joint_attention_dim=256, pooled_projection_dim=64, axes_dims_rope=(8, 28, 28)),
            vae=dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16),
            clip_l=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
            t5=dict(d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4),
            resolution=128,
        )
    return dict(
        transformer=dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                         joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56)),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        clip_l=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        t5=dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
        resolution=512,
    )


def build_flux_dev(reduced: bool, device, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from flow_grpo.backbones.tiny_text import BOS_ID, EOS_ID, PAD_ID, make_tokenizer, vocabulary_size

    parts = flux_dev_components(reduced)
    vocab = vocabulary_size()
    with torch.device(device), default_dtype(dtype):
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, guidance_embeds=True, **parts["transformer"])
        blocks = len(parts["vae"]["block_out_channels"])
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                            latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                            use_post_quant_conv=False, **parts["vae"])
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                                            eos_token_id=EOS_ID, **parts["clip_l"]))
        t5 = T5EncoderModel(T5Config(vocab_size=vocab, feed_forward_proj="gated-gelu", pad_token_id=PAD_ID, eos_token_id=EOS_ID, **parts["t5"]))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                                max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    pipeline = FluxPipeline(scheduler=scheduler, vae=vae.float(), text_encoder=clip, tokenizer=make_tokenizer("clip", 77),
                            text_encoder_2=t5, tokenizer_2=make_tokenizer("t5", 512), transformer=transformer)
    return pipeline, parts["resolution"]
