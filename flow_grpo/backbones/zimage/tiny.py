"""A Z-Image pipeline at tiny size, built from config with the real classes (nothing is downloaded):
``ZImageTransformer2DModel`` (the noise and context refiners, single-stream blocks over image and caption tokens,
3-axis RoPE), a ``Qwen3Model`` text encoder (Z-Image's is Qwen3-4B), FLUX's ``AutoencoderKL`` layout (16 latent
channels at full size; 4 here, downsampling 8), the ``FlowMatchEulerDiscreteScheduler`` with Z-Image's static
shift 3, and a word-level tokenizer with Qwen3's chat template (``flow_grpo.backbones.tiny_text``).
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.tiny_text import PAD_ID, make_tokenizer, vocabulary_size

# Qwen3's chat template, the part ZImagePipeline uses: one user turn, the assistant's turn opened; with
# enable_thinking=False (not Z-Image's choice) an empty thinking block follows
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@dataclasses.dataclass
class TinyZImageConfig:
    resolution: int = 64
    latent_channels: int = 4
    vae_block_out_channels: tuple = (8, 16, 16, 16)  # 4 levels: downsampling 8, as the real VAE
    dim: int = 32
    n_layers: int = 2
    n_refiner_layers: int = 1
    n_heads: int = 2
    axes_dims: tuple = (4, 6, 6)  # even entries summing to the head dim (dim / n_heads)
    text_hidden_size: int = 32
    text_layers: int = 2


def build_tiny_zimage_pipeline(config: TinyZImageConfig | None = None, seed: int = 0, torch_dtype=torch.float32):
    """A ``ZImagePipeline`` of randomly initialised (seeded) tiny components, in eval mode."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    config = config or TinyZImageConfig()
    tokenizer = make_tokenizer("qwen", 1024)
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=vocabulary_size("qwen"), hidden_size=config.text_hidden_size, intermediate_size=2 * config.text_hidden_size,
        num_hidden_layers=config.text_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=config.text_hidden_size // 4,
        max_position_embeddings=2048, pad_token_id=PAD_ID,
    ))
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=config.latent_channels, dim=config.dim, n_layers=config.n_layers,
        n_refiner_layers=config.n_refiner_layers, n_heads=config.n_heads, n_kv_heads=config.n_heads,
        cap_feat_dim=config.text_hidden_size, axes_dims=list(config.axes_dims), axes_lens=[1024, 64, 64],
    )
    blocks = len(config.vae_block_out_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                        up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=tuple(config.vae_block_out_channels),
                        layers_per_block=1, latent_channels=config.latent_channels, norm_num_groups=4,
                        sample_size=config.resolution, scaling_factor=0.3611, shift_factor=0.1159,  # FLUX's VAE values
                        use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
    pipeline = ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)
    for module in (transformer, vae, text_encoder):
        module.eval()
    return pipeline.to(torch_dtype=torch_dtype)
