"""Each family's published defaults, once: the model, its sampler and the run the original flow_grpo published for
it (yifan123/flow_grpo ``config/grpo.py`` at the Nov 2025 snapshot; the family's config file says which function
and what differs). A builder returns that run without its task (``base.task``) and objective (config/recipes.py);
``on_gpus`` resizes it to another process count.

    sd3()           Stable Diffusion 3.5 Medium (config/grpo.py, count.py, forward.py)
    flux()          FLUX.1-dev (config/flux.py)
    qwenimage()     Qwen-Image (config/qwenimage.py)
    flux_kontext()  FLUX.1 Kontext editing (config/kontext.py)
    wan()           Wan2.1 text-to-video (config/wan.py)

The ``*_sampler`` functions are the part of a family's defaults that its tiny model in config/tiny.py keeps too
(guidance and noise level). No function here is a named config (this file has no ``get_config``).
"""

import os

from flow_grpo.config_cli import load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))

# family -> (processes, groups per epoch, images per group, the most images per process and batch) of the published
# run; the last is the original's per-GPU batch on 80 GB: 9 for SD3.5-M, 3 for FLUX.1-dev, 4 for Qwen-Image
PUBLISHED_SIZES = {
    "sd3": (32, 48, 24, 9),
    "flux": (32, 48, 24, 3),
    "qwenimage": (32, 32, 16, 4),
}


def on_gpus(config, gpu_number: int, groups_per_epoch: int | None = None, num_image_per_prompt: int | None = None):
    """The config's epoch on ``gpu_number`` processes: its family's published groups per epoch and group size
    (or those given) at the family's batch limit, two optimizer steps per epoch (``base.epoch_sizes``). A
    ``_4gpu`` variant of a 32-GPU run is ``on_gpus(run(), 4)``: the same data per epoch in more batches."""
    _, groups, k, max_batch = PUBLISHED_SIZES[config.pretrained.family]
    return base.epoch_sizes(config, gpu_number, groups_per_epoch or groups, num_image_per_prompt or k, max_batch)


def sd3():
    """Flow-GRPO's SD3.5-M setup (the paper's): 512 px, 10 SDE steps at noise 0.7 (9 trained), 40 evaluation steps,
    CFG 4.5, 48 groups of 24 per epoch on 32 GPUs, the KL in the paper's form, EMA, fp16."""
    config = base.default()
    config.pretrained.model = "stabilityai/stable-diffusion-3.5-medium"
    config.pretrained.family = "sd3"
    config.resolution = 512
    config.sample.num_steps = 10
    config.sample.eval_num_steps = 40
    config.sample.guidance_scale = 4.5
    config.sample.eval_guidance_scale = 4.5
    on_gpus(config, 32)
    config.sample.test_batch_size = 16
    config.train.global_std = True
    config.sample.same_latent = False
    config.train.timestep_fraction = 0.99  # 9 of the 10 steps
    config.train.kl_form = "paper"  # the scale the paper's betas were tuned with (config/base.py)
    config.train.ema = True
    config.mixed_precision = "fp16"
    config.save_freq = 60
    config.eval_freq = 60
    return config


def _original_run(model: str, family: str, max_sequence_length: int):
    """What the original's FLUX.1-dev, Qwen-Image and Kontext runs share: 512 px, bf16 (fp16 gives invalid FLUX
    images, the original's FAQ), lr 3e-4, clip 1e-4, no KL, global std, LoRA r64 / alpha 128, checkpoints and
    evaluations every 60 epochs."""
    config = base.default()
    config.pretrained.model = model
    config.pretrained.family = family
    config.resolution = 512
    config.max_sequence_length = max_sequence_length
    config.mixed_precision = "bf16"
    config.train.learning_rate = 3e-4
    config.train.clip_range = 1e-4
    config.train.beta = 0.0
    config.train.global_std = True
    config.lora.rank, config.lora.alpha = 64, 128
    config.save_freq = 60
    config.eval_freq = 60
    return config


def flux_sampler(config):
    """FLUX.1-dev's distilled guidance 3.5 as the model's input (no negative pass, the same value in training) and
    Flow-GRPO's FLUX noise level 0.9."""
    config.sample.guidance_scale = 3.5  # distilled guidance: an input of the model, not CFG
    config.sample.eval_guidance_scale = 3.5
    config.sample.noise_level = 0.9
    return config


def flux():
    """The original's ``pickscore_flux`` (config/flux.py's docstring has the list): 512 px, 6 sampling / 28
    evaluation steps, 5 trained, 48 groups of 24 on 32 GPUs, lr 3e-4, clip 1e-4, no KL, EMA, bf16, LoRA r64."""
    config = _original_run("black-forest-labs/FLUX.1-dev", "flux", max_sequence_length=128)
    config.sample.num_steps = 6
    config.sample.eval_num_steps = 28
    flux_sampler(config)
    on_gpus(config, 32)
    config.sample.test_batch_size = 16
    config.train.timestep_fraction = 0.99  # int(6 x 0.99) = 5 of the 6 steps
    config.train.ema = True
    return config


def qwenimage_sampler(config):
    """Qwen-Image's true CFG 4 with the negative prompt " " (QwenImageBackbone.negative_prompt) and Flow-GRPO's
    Qwen-Image SDE: noise 1.2 in a window of 2 steps starting in the first half of the schedule, both trained."""
    config.sample.guidance_scale = 4.0
    config.sample.eval_guidance_scale = 4.0
    config.sample.noise_level = 1.2
    return recipes.sde_window(config, 2, (0, config.sample.num_steps // 2))


def qwenimage():
    """The original's ``pickscore_qwenimage`` (config/qwenimage.py's docstring has the list): 512 px, 10 sampling /
    50 evaluation steps, 32 groups of 16 on 32 GPUs, lr 3e-4, clip 1e-4, no KL, no EMA, bf16, LoRA r64,
    activation checkpointing, 512 text tokens."""
    config = _original_run("Qwen/Qwen-Image", "qwenimage", max_sequence_length=512)
    config.sample.num_steps = 10
    config.sample.eval_num_steps = 50
    qwenimage_sampler(config)
    on_gpus(config, 32)
    config.sample.test_batch_size = 16
    config.train.ema = False
    config.train.gradient_checkpointing = True
    return config


def kontext_sampler(config):
    """FLUX.1 Kontext's distilled guidance 2.5 as the model's input and FLUX's noise level 0.9."""
    config.sample.guidance_scale = 2.5  # distilled guidance: an input of the model, not CFG
    config.sample.eval_guidance_scale = 2.5
    config.sample.noise_level = 0.9
    return config


def flux_kontext():
    """The original's ``counting_flux_kontext`` (config/kontext.py's docstring has the list): 512 px, 6 sampling /
    28 evaluation steps, 3 images per GPU in groups of 21 on 28 GPUs, 12 batches per epoch, two optimizer steps,
    lr 3e-4, clip 1e-4, no KL, EMA, bf16, LoRA r64."""
    config = _original_run("black-forest-labs/FLUX.1-Kontext-dev", "flux_kontext", max_sequence_length=512)
    config.sample.num_steps = 6
    config.sample.eval_num_steps = 28
    kontext_sampler(config)
    # 48 groups of 21 in batches of 3 per GPU: 12 batches per epoch on 28 GPUs, two optimizer steps
    base.epoch_sizes(config, 28, groups_per_epoch=48, num_image_per_prompt=21, max_batch=3)
    config.sample.test_batch_size = 2
    config.train.timestep_fraction = 0.99
    config.train.ema = True
    return config


def wan_sampler(config):
    """Wan2.1's CFG 4.5 with its negative prompt, Flow-GRPO's noise level 0.7 (config/wan.py says how the
    original's Wan step differs)."""
    config.sample.guidance_scale = 4.5
    config.sample.eval_guidance_scale = 4.5
    config.sample.noise_level = 0.7
    return config


def wan():
    """The original's ``general_ocr_wan2_1`` (config/wan.py's docstring has the list): 33 frames of 240 x 416, 20
    sampling / 50 evaluation steps, groups of 4, batches of 8 videos, 2 batches per epoch on one GPU, 19 trained
    steps, lr 1e-4, clip 1e-3, KL 0.004, per-prompt advantages, EMA, bf16, LoRA r32, image rewards on every 4th
    frame."""
    config = base.default()
    config.pretrained.model = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    config.pretrained.family = "wan"
    config.reward_frame_interval = 4
    config.height, config.width, config.num_frames = 240, 416, 33
    config.max_sequence_length = 512
    config.mixed_precision = "bf16"
    config.sample.num_steps = 20
    config.sample.eval_num_steps = 50
    wan_sampler(config)
    config.sample.train_batch_size = 8
    config.sample.num_image_per_prompt = 4
    config.sample.num_batches_per_epoch = 2
    config.sample.test_batch_size = 2
    config.train.batch_size = 8
    config.train.gradient_accumulation_steps = 1  # two optimizer steps per epoch
    config.train.timestep_fraction = 0.99  # 19 of the 20 steps
    config.train.learning_rate = 1e-4
    config.train.clip_range = 1e-3
    config.train.beta = 0.004
    config.train.global_std = False
    config.train.ema = True
    config.lora.rank, config.lora.alpha = 32, 64
    config.save_freq = 60
    config.eval_freq = 30
    return config


def zimage_turbo():
    """Flow-Factory's GRPO run on Z-Image-Turbo (X-GenGroup/Flow-Factory, ``examples/grpo/full/z_image_turbo/
    default.yaml``; no Flow-GRPO run on Z-Image is published): 512 px, 6 sampling / 10 evaluation steps, CFG-free
    (their guidance 0: standard scale 1), one SDE step at noise 0.7 drawn among steps 1-3, every stored step trained,
    48 groups of 16 per epoch on 8 GPUs in two optimizer steps, full fine-tuning at lr 1e-5 (weight decay 1e-4),
    clip 1e-4, advantages clipped at 5 with per-group std, no KL, EMA 0.9 (their every 4 epochs: 8 optimizer steps
    here), bf16. Where this differs, by need: 2 images per GPU and batch (theirs 1; the k-repeat sampler needs whole
    groups per sampling step: 16 / 8 GPUs), one evaluation size (theirs evaluates at 1024 px)."""
    config = base.default()
    config.pretrained.model = "Tongyi-MAI/Z-Image-Turbo"
    config.pretrained.family = "zimage"
    config.resolution = 512
    config.mixed_precision = "bf16"
    config.sample.num_steps = 6
    config.sample.eval_num_steps = 10
    config.sample.guidance_scale = 1.0  # ZImagePipeline's guidance_scale 0: no negative pass
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    config.sample.noise_level = 0.7
    recipes.sde_window(config, 1, (1, 4))  # one stochastic step, its start among steps 1, 2, 3
    base.epoch_sizes(config, 8, groups_per_epoch=48, num_image_per_prompt=16, max_batch=2)
    config.sample.test_batch_size = 8
    config.use_lora = False
    config.train.learning_rate = 1e-5
    config.train.adam_weight_decay = 1e-4
    config.train.clip_range = 1e-4
    config.train.adv_clip_max = 5.0
    config.train.global_std = False
    config.train.beta = 0.0
    config.train.ema = True
    config.train.ema_decay = 0.9
    config.train.ema_update_interval = 8
    config.save_freq = 40
    config.eval_freq = 40
    return config
