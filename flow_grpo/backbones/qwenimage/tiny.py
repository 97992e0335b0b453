"""A Qwen-Image pipeline at tiny size, built from config with the real classes (nothing is downloaded):
``QwenImageTransformer2DModel`` (dual-stream blocks, masked joint attention, 3-axis RoPE), an
``AutoencoderKLQwenImage`` (the causal 3-D VAE: 16 latent channels, downsampling 8, one frame), a
``Qwen2_5_VLForConditionalGeneration`` text encoder (its vision tower unused for text-to-image), the
``FlowMatchEulerDiscreteScheduler`` with Qwen-Image's dynamic shift and terminal sigma, and a word-level
tokenizer whose chat-template prefix is 34 tokens, as the real one's (``flow_grpo.backbones.tiny_text``).
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.tiny_text import PAD_ID, make_tokenizer, vocabulary_size


@dataclasses.dataclass
class TinyQwenImageConfig:
    resolution: int = 64
    num_layers: int = 2
    num_attention_heads: int = 2
    attention_head_dim: int = 16
    axes_dims_rope: tuple = (4, 6, 6)  # even entries summing to attention_head_dim
    text_hidden_size: int = 32
    text_layers: int = 2
    vae_base_dim: int = 8


def build_tiny_qwenimage_pipeline(config: TinyQwenImageConfig | None = None, seed: int = 0, torch_dtype=torch.float32):
    """A ``QwenImagePipeline`` of randomly initialised (seeded) tiny components, in eval mode."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = config or TinyQwenImageConfig()
    tokenizer = make_tokenizer("qwen", 1024)
    words = vocabulary_size("qwen")
    torch.manual_seed(seed)
    head_dim = config.text_hidden_size // 4
    text_config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=words + 4, hidden_size=config.text_hidden_size, intermediate_size=2 * config.text_hidden_size,
            num_hidden_layers=config.text_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, head_dim // 2 - 2]},
            bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=PAD_ID,
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=config.text_hidden_size,
                           fullatt_block_indexes=[0]),
        image_token_id=words, video_token_id=words + 1, vision_start_token_id=words + 2, vision_end_token_id=words + 3,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(text_config)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=config.num_layers,
        attention_head_dim=config.attention_head_dim, num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.text_hidden_size, guidance_embeds=False, axes_dims_rope=tuple(config.axes_dims_rope),
    )
    # Qwen-Image's VAE layout at a small width; its default per-channel latents_mean / latents_std are the real ones
    vae = AutoencoderKLQwenImage(base_dim=config.vae_base_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                 attn_scales=[], temperal_downsample=[False, True, True])
    # Qwen-Image's scheduler config: dynamic (exponential) shifting up to 8192 tokens, terminal sigma 0.02
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=8192,
        base_shift=0.5, max_shift=0.9, shift_terminal=0.02, time_shift_type="exponential",
    )
    pipeline = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)
    for module in (transformer, vae, text_encoder):
        module.eval()
    return pipeline.to(torch_dtype=torch_dtype)
