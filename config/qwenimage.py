"""Flow-GRPO and the forward-process objectives on Qwen-Image (Qwen/Qwen-Image).

    accelerate launch --config_file scripts/accelerate_configs/deepspeed_zero2.yaml --num_processes 32 \\
        scripts/train.py --config config/qwenimage.py:pickscore_qwenimage
    bash scripts/single_node/grpo.sh config/qwenimage.py:pickscore_qwenimage_8gpu

Source (the original flow_grpo, yifan123/flow_grpo ``config/grpo.py`` at the Nov 2025 snapshot, functions
``pickscore_qwenimage`` and ``pickscore_qwenimage_8gpu``, and its ``scripts/train_qwenimage.py``): 512 px,
10 sampling / 50 evaluation steps, true CFG 4 with the negative prompt " " (in training too, with the norm
rescale: it lives in the backbone's one velocity), SDE noise 1.2 in a window of 2 steps starting in steps 0-3
(both trained), 4 images per GPU in groups of 16, 32 groups per epoch on 32 GPUs and two optimizer steps per
epoch, lr 3e-4, clip 1e-4, no KL, no EMA, bf16, LoRA r64 / alpha 128 on the joint attention and both streams'
MLPs (``QWENIMAGE_LORA_TARGET_MODULES``), activation checkpointing, the text encoder's 512 tokens.
What differs: the original shards the 20 B transformer with FSDP; this trainer keeps FSDP for full
fine-tuning and runs a LoRA under DDP or DeepSpeed ZeRO-2 (a LoRA's states are small), with gradient
checkpointing. Not published upstream, derived here and marked so: GenEval and OCR (pickscore_qwenimage's
settings with the task's reward) and the forward-process objectives (their papers' settings, CFG-free).
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))


def _qwenimage(task: str):
    """The original's Qwen-Image run (``families.qwenimage``) on the task's prompts and reward."""
    config = base.task(families.qwenimage(), task)
    config.run_name = f"{task}_qwenimage"
    return config


def pickscore_qwenimage():
    return _qwenimage("pickscore")


def pickscore_qwenimage_8gpu():
    """The original's 8-GPU variant: the same 32 groups per epoch in 16 batches per GPU."""
    return families.on_gpus(pickscore_qwenimage(), 8)


def geneval_qwenimage():
    """Derived: pickscore_qwenimage's settings with the GenEval reward."""
    return _qwenimage("geneval")


def geneval_qwenimage_8gpu():
    return families.on_gpus(geneval_qwenimage(), 8)


def general_ocr_qwenimage():
    """Derived: pickscore_qwenimage's settings with the OCR reward."""
    return _qwenimage("ocr")


def general_ocr_qwenimage_8gpu():
    return families.on_gpus(general_ocr_qwenimage(), 8)


# ---- the forward-process objectives (derived: their papers' SD3.5-M settings, config/forward.py) ----


def _nft(task: str):
    """DiffusionNFT on Qwen-Image: CFG-free ODE rollouts of the 10 steps (the paper's policy), 9 trained at
    random, one optimizer step per epoch on 8 GPUs, the old policy's decay schedule and the warm-up EMA."""
    config = base.optimizer_steps(families.on_gpus(_qwenimage(task), 8), 1)
    config.run_name = f"{task}_qwenimage_nft"
    config.sample.sde_window_size = 0
    return recipes.nft_published(recipes.cfg_free(config), task)


def geneval_qwenimage_nft():
    return _nft("geneval")


def general_ocr_qwenimage_nft():
    return _nft("ocr")


def pickscore_qwenimage_nft():
    return _nft("pickscore")


def geneval_qwenimage_awm():
    """Advantage Weighted Matching on Qwen-Image: CFG-free ODE rollouts, 6 stratified times among the first 90%
    of the 10 steps, power 0.25, clip 1, the KL-EMA snapshot, beta 0.001."""
    config = _nft("geneval")
    config.run_name = "geneval_qwenimage_awm"
    return recipes.awm_published(config, beta=0.001)


def get_config(name):
    return config_by_name(name, globals())
