"""A Wan2.1 text-to-video pipeline at tiny size, built from config with the real classes (nothing is
downloaded): ``WanTransformer3DModel`` (self-attention over (frame, row, col) patches with 3-D RoPE, text
cross-attention, 1 x 2 x 2 patches), an ``AutoencoderKLWan`` (the causal 3-D VAE: 16 latent channels,
spatial factor 8, temporal factor 4), a ``UMT5EncoderModel`` text encoder, the
``FlowMatchEulerDiscreteScheduler`` with Wan2.1's flow shift 3 (480p), and a word-level T5-style tokenizer
(``flow_grpo.backbones.tiny_text``). 9 frames of 32 x 48 give latents ``[16, 3, 4, 6]``, 18 tokens.
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.tiny_text import EOS_ID, PAD_ID, make_tokenizer, vocabulary_size


@dataclasses.dataclass
class TinyWanConfig:
    num_layers: int = 2
    num_attention_heads: int = 2
    attention_head_dim: int = 16  # split by the 3-D RoPE over frames, rows and columns
    text_dim: int = 32
    text_layers: int = 2
    max_sequence_length: int = 32
    vae_base_dim: int = 8
    flow_shift: float = 3.0


def build_tiny_wan_pipeline(config: TinyWanConfig | None = None, seed: int = 0, torch_dtype=torch.float32):
    """A ``WanPipeline`` of randomly initialised (seeded) tiny components, in eval mode."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    config = config or TinyWanConfig()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=config.num_attention_heads, attention_head_dim=config.attention_head_dim,
        in_channels=16, out_channels=16, text_dim=config.text_dim, freq_dim=32, ffn_dim=4 * config.text_dim,
        num_layers=config.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )
    # Wan2.1's VAE layout at a small width; its default per-channel latents_mean / latents_std are the real ones
    vae = AutoencoderKLWan(base_dim=config.vae_base_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                           attn_scales=[], temperal_downsample=[False, True, True])
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=vocabulary_size(), d_model=config.text_dim, d_kv=config.text_dim // 4, d_ff=2 * config.text_dim,
        num_layers=config.text_layers, num_heads=4, pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
    ))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=config.flow_shift)
    pipeline = WanPipeline(tokenizer=make_tokenizer("t5", config.max_sequence_length), text_encoder=text_encoder, vae=vae,
                           scheduler=scheduler, transformer=transformer)
    for module in (transformer, vae, text_encoder):
        module.eval()
    return pipeline.to(torch_dtype=torch_dtype)
