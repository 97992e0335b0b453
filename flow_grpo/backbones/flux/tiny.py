"""A FLUX.1-dev pipeline at tiny size, built from config with the real classes (nothing is downloaded):
``FluxTransformer2DModel`` (double and single blocks, guidance embedding, RoPE over (0, row, col) ids), an
``AutoencoderKL`` with 16 latent channels and downsampling 8, ``CLIPTextModel`` and ``T5EncoderModel``, the
``FlowMatchEulerDiscreteScheduler`` with FLUX.1-dev's dynamic shift, and word-level tokenizers
(``flow_grpo.backbones.tiny_text``). 64 px gives 8 x 8 latents, 16 packed tokens.
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.tiny_text import BOS_ID, EOS_ID, PAD_ID, make_tokenizer, vocabulary_size


@dataclasses.dataclass
class TinyFluxConfig:
    resolution: int = 64
    num_layers: int = 1  # double-stream blocks
    num_single_layers: int = 1
    num_attention_heads: int = 2
    attention_head_dim: int = 16
    axes_dims_rope: tuple = (4, 6, 6)  # sums to attention_head_dim
    clip_hidden_size: int = 32
    t5_d_model: int = 32
    t5_max_length: int = 32
    vae_block_out_channels: tuple = (8, 8, 8, 8)  # downsampling 2 ** (len - 1) = 8, as FLUX's VAE


def build_tiny_flux_pipeline(config: TinyFluxConfig | None = None, seed: int = 0, torch_dtype=torch.float32):
    """A ``FluxPipeline`` of randomly initialised (seeded) tiny components, in eval mode."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    config = config or TinyFluxConfig()
    vocab_size = vocabulary_size()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=config.num_layers, num_single_layers=config.num_single_layers,
        attention_head_dim=config.attention_head_dim, num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.t5_d_model, pooled_projection_dim=config.clip_hidden_size, guidance_embeds=True,
        axes_dims_rope=tuple(config.axes_dims_rope),
    )
    blocks = len(config.vae_block_out_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=tuple(config.vae_block_out_channels),
        layers_per_block=1, norm_num_groups=4, sample_size=config.resolution, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False,
    )
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=config.clip_hidden_size, intermediate_size=2 * config.clip_hidden_size,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
        eos_token_id=EOS_ID, hidden_act="gelu",
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=config.t5_d_model, d_kv=config.t5_d_model // 4, d_ff=2 * config.t5_d_model,
        num_layers=2, num_heads=4, pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
    ))
    # FLUX.1-dev's scheduler config: dynamic shifting between 256 and 4096 image tokens
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    pipeline = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=make_tokenizer("clip", 77),
                            text_encoder_2=t5, tokenizer_2=make_tokenizer("t5", config.t5_max_length), transformer=transformer)
    for module in (transformer, vae, clip, t5):
        module.eval()  # text encoders built from a config start in train mode (dropout)
    return pipeline.to(torch_dtype=torch_dtype)
