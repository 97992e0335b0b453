"""Stable Diffusion 3.5 Medium at its published sizes (parameter counts, and the benchmark's full-size preset 'sd35m'), or a
CPU-sized analogue of the same structure (``reduced``), built from config with random weights: nothing is
downloaded. ``build(reduced, device, dtype)`` returns (pipeline, resolution); scripts/benchmark.py asks the
family for it (``Backbone.presets``)."""

from __future__ import annotations

import torch



def sd35m_components(reduced: bool):
    """Configs of SD3.5 Medium's parts (published sizes), or a CPU-sized analogue with the same structure."""
    if reduced:
        return dict(
            transformer=dict(num_layers=2, attention_head_dim=64, num_attention_heads=4, caption_projection_dim=256,
                             joint_attention_dim=256, pooled_projection_dim=128, dual_attention_layers=(0,)),
            vae=dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16),
            clip_l=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, projection_dim=64),
            clip_g=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, projection_dim=64),
            t5=dict(d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4),
            resolution=128,
        )
    return dict(
        transformer=dict(num_layers=24, attention_head_dim=64, num_attention_heads=24, caption_projection_dim=1536,
                         joint_attention_dim=4096, pooled_projection_dim=2048, dual_attention_layers=tuple(range(13))),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        clip_l=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, projection_dim=768),
        clip_g=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120, projection_dim=1280),
        t5=dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
        resolution=512,
    )


def build_sd35m(reduced: bool, device, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from flow_grpo.backbones.tiny_text import BOS_ID, EOS_ID, PAD_ID, make_tokenizer, vocabulary_size

    parts = sd35m_components(reduced)
    vocab = vocabulary_size()
    with torch.device(device):  # allocate on the target device: no 8 B-parameter CPU initialisation
        transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, out_channels=16,
                                            pos_embed_max_size=384, qk_norm="rms_norm", **parts["transformer"])
        blocks = len(parts["vae"]["block_out_channels"])
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                            latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                            use_post_quant_conv=False, **parts["vae"])
        clips = [CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, pad_token_id=PAD_ID,
                                                            bos_token_id=BOS_ID, eos_token_id=EOS_ID, **parts[k]))
                 for k in ("clip_l", "clip_g")]
        t5 = T5EncoderModel(T5Config(vocab_size=vocab, feed_forward_proj="gated-gelu", pad_token_id=PAD_ID, eos_token_id=EOS_ID, **parts["t5"]))
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clips[0], tokenizer=make_tokenizer("clip", 77), text_encoder_2=clips[1], tokenizer_2=make_tokenizer("clip", 77),
        text_encoder_3=t5, tokenizer_3=make_tokenizer("t5", 512),
    )
    for module in (transformer, clips[0], clips[1], t5):
        module.to(dtype)
    return pipeline, parts["resolution"]
