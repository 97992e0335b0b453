"""Flow-GRPO on Wan2.1 text-to-video (Wan-AI/Wan2.1-T2V-1.3B-Diffusers): videos that render a prompt's text.

    accelerate launch --num_processes 1 scripts/train.py --config config/wan.py:general_ocr_wan2_1
    python inference_demo.py --model_name Wan-AI/Wan2.1-T2V-1.3B-Diffusers --lora_path logs/... \\
        --height 240 --width 416 --num_frames 33 --num_steps 50 --guidance_scale 4.5

Source (the original flow_grpo, yifan123/flow_grpo ``config/grpo.py`` function ``general_ocr_wan2_1`` and its
``scripts/train_wan2_1.py``, added Aug 2025): 33 frames of 240 x 416, 20 sampling / 50 evaluation steps, CFG
4.5 with the empty negative prompt, groups of 4, batches of 8 videos, 2 batches per epoch on one GPU,
int(20 x 0.99) = 19 trained steps, lr 1e-4, clip 1e-3, KL beta 0.004, per-prompt advantages (no global std),
EMA, bf16 (its README: fp16 gives invalid videos), LoRA r32 / alpha 64 on the attention projections
(``WAN_LORA_TARGET_MODULES``), its own negative prompt and T5 at 512 tokens. Its video OCR reward scores
every 4th frame (0, 4, ..., 32) and averages: here the ``ocr`` reward with ``reward_frame_interval = 4``
(the original averages only frames that read something; this averages all).
Departures, stated: the original's Wan SDE step draws noise with std ``sigmas[1] * sigma`` (its Wan pipeline
ignores ``noise_level``); this project's step is Flow-GRPO's own (``noise_level`` 0.7, its base default), the
same step every family uses.
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))


def general_ocr_wan2_1():
    config = base.task(families.wan(), "ocr")
    config.run_name = "ocr_wan2_1"
    return config


def general_ocr_wan2_1_nft():
    """Derived, not published for Wan: DiffusionNFT's settings (config/recipes.py ``nft_published``, its OCR
    strength 0.1) on the Wan run above: ODE rollouts with Wan's CFG, one optimizer step per epoch."""
    config = base.optimizer_steps(general_ocr_wan2_1(), 1)
    config.run_name = "ocr_wan2_1_nft"
    return recipes.nft_published(config, "ocr")


def get_config(name):
    return config_by_name(name, globals())
