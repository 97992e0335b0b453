"""Stable Diffusion 3 pipelines at tiny sizes, built from config with the real diffusers and transformers classes.

Nothing is downloaded: the transformer (``SD3Transformer2DModel``), VAE (``AutoencoderKL``), the two CLIP
text encoders (``CLIPTextModelWithProjection``), the T5 encoder (``T5EncoderModel``) and the
``FlowMatchEulerDiscreteScheduler`` are initialised from a seed, and the tokenizers are made in code: a
WordPiece vocabulary of whole words (the GenEval classes, colours, counts, relations, shapes and common
prompt words) that falls back to single characters for any other word, wrapped in transformers'
``PreTrainedTokenizerFast``. Such a pipeline runs the exact code path of SD3.5 (prompt encoding with CLIP x 2
+ T5, joint attention, CFG, flow-matching schedule with shift) in milliseconds per step on a CPU.

    python -m flow_grpo.backbones.sd3.tiny --out models/tiny-sd3          # write one in diffusers layout
    StableDiffusion3Pipeline.from_pretrained("models/tiny-sd3")  # loads it back
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from flow_grpo.backbones.tiny_text import BOS_ID, EOS_ID, PAD_ID, make_tokenizer, vocabulary_size

@dataclasses.dataclass
class TinySD3Config:
    """Sizes of a tiny SD3. The defaults give a 64 px model: VAE downsampling 4, 16x16x4 latents, patch 2."""

    resolution: int = 64
    vae_block_out_channels: tuple = (8, 16, 16)  # len - 1 = log2 of the VAE downsampling factor
    vae_norm_num_groups: int = 4
    latent_channels: int = 4
    patch_size: int = 2
    num_layers: int = 2
    num_attention_heads: int = 2
    attention_head_dim: int = 8
    caption_projection_dim: int = 16
    clip_hidden_size: int = 16
    clip_projection_dim: int = 16
    clip_num_layers: int = 2
    clip_max_length: int = 77
    t5_d_model: int = 32
    t5_num_layers: int = 2
    t5_max_length: int = 32
    shift: float = 3.0
    scaling_factor: float = 1.5305  # SD3's VAE values
    shift_factor: float = 0.0609
    dual_attention_layers: tuple = ()
    qk_norm: str | None = None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)


def build_tiny_sd3_pipeline(config: TinySD3Config | None = None, seed: int = 0, torch_dtype=torch.float32):
    """A ``StableDiffusion3Pipeline`` of randomly initialised (seeded) tiny components."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    config = config or TinySD3Config()
    if 2 * config.clip_hidden_size > config.t5_d_model:
        raise ValueError("the two CLIP hidden sizes are concatenated and padded to the T5 width: need 2 * clip_hidden_size <= t5_d_model")
    vocab_size = vocabulary_size()
    latent_size = config.resolution // config.vae_scale_factor

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=config.patch_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        num_layers=config.num_layers,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.t5_d_model,
        caption_projection_dim=config.caption_projection_dim,
        pooled_projection_dim=2 * config.clip_projection_dim,
        pos_embed_max_size=latent_size // config.patch_size,
        dual_attention_layers=tuple(config.dual_attention_layers),
        qk_norm=config.qk_norm,
    )
    num_blocks = len(config.vae_block_out_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * num_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_blocks,
        block_out_channels=tuple(config.vae_block_out_channels),
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=config.vae_norm_num_groups,
        sample_size=config.resolution,
        scaling_factor=config.scaling_factor,
        shift_factor=config.shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )

    def clip():
        return CLIPTextModelWithProjection(
            CLIPTextConfig(
                vocab_size=vocab_size,
                hidden_size=config.clip_hidden_size,
                intermediate_size=4 * config.clip_hidden_size,
                projection_dim=config.clip_projection_dim,
                num_hidden_layers=config.clip_num_layers,
                num_attention_heads=2,
                max_position_embeddings=config.clip_max_length,
                pad_token_id=PAD_ID,
                bos_token_id=BOS_ID,
                eos_token_id=EOS_ID,
                hidden_act="gelu",
            )
        )

    text_encoder, text_encoder_2 = clip(), clip()
    text_encoder_3 = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=config.t5_d_model,
            d_kv=config.t5_d_model // 4,
            d_ff=2 * config.t5_d_model,
            num_layers=config.t5_num_layers,
            num_heads=4,
            pad_token_id=PAD_ID,
            eos_token_id=EOS_ID,
            decoder_start_token_id=PAD_ID,
        )
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=config.shift)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=make_tokenizer("clip", config.clip_max_length),
        text_encoder_2=text_encoder_2,
        tokenizer_2=make_tokenizer("clip", config.clip_max_length),
        text_encoder_3=text_encoder_3,
        tokenizer_3=make_tokenizer("t5", config.t5_max_length),
    )
    for module in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        module.eval()
    return pipeline.to(torch_dtype=torch_dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the pipeline to (diffusers layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=TinySD3Config.resolution)
    args = parser.parse_args()
    pipeline = build_tiny_sd3_pipeline(TinySD3Config(resolution=args.resolution), seed=args.seed)
    pipeline.save_pretrained(args.out)
    print(f"wrote a tiny SD3 pipeline ({sum(p.numel() for p in pipeline.transformer.parameters()):,} transformer parameters) to {args.out}")


if __name__ == "__main__":
    main()
