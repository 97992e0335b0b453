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
REPO = os.path.dirname(HERE)
TASKS = {"geneval": ("geneval", {"geneval": 1.0}), "ocr": ("ocr", {"ocr": 1.0}), "pickscore": ("pickscore", {"pickscore": 1.0})}


def _qwenimage(task: str, gpu_number: int = 32, groups_per_epoch: int = 32):
    config = base.default()
    config.run_name = f"{task}_qwenimage"
    config.pretrained.model = "Qwen/Qwen-Image"
    config.pretrained.family = "qwenimage"
    config.resolution = 512
    config.max_sequence_length = 512
    config.mixed_precision = "bf16"
    config.sample.num_steps = 10
    config.sample.eval_num_steps = 50
    config.sample.guidance_scale = 4.0  # true CFG, negative prompt " " (QwenImageBackbone.negative_prompt)
    config.sample.eval_guidance_scale = 4.0
    config.sample.noise_level = 1.2
    config.sample.sde_window_size = 2
    config.sample.sde_window_range = (0, config.sample.num_steps // 2)
    base.epoch_sizes(config, gpu_number, groups_per_epoch, num_image_per_prompt=16, max_batch=4)
    config.sample.test_batch_size = 16
    config.train.timestep_fraction = 1.0  # both window steps
    config.train.learning_rate = 3e-4
    config.train.clip_range = 1e-4
    config.train.beta = 0.0
    config.train.global_std = True
    config.train.ema = False
    config.train.gradient_checkpointing = True
    config.lora.rank, config.lora.alpha = 64, 128
    config.save_freq = 60
    config.eval_freq = 60
    dataset, reward = TASKS[task]
    config.dataset = os.path.join(REPO, "dataset", dataset)
    config.reward_fn = reward
    return config


def pickscore_qwenimage():
    return _qwenimage("pickscore")


def pickscore_qwenimage_8gpu():
    """The original's 8-GPU variant: the same 32 groups per epoch in 16 batches per GPU."""
    return _qwenimage("pickscore", gpu_number=8)


def geneval_qwenimage():
    """Derived: pickscore_qwenimage's settings with the GenEval reward."""
    return _qwenimage("geneval")


def geneval_qwenimage_8gpu():
    return _qwenimage("geneval", gpu_number=8)


def general_ocr_qwenimage():
    """Derived: pickscore_qwenimage's settings with the OCR reward."""
    return _qwenimage("ocr")


def general_ocr_qwenimage_8gpu():
    return _qwenimage("ocr", gpu_number=8)


# ---- the forward-process objectives (derived: their papers' SD3.5-M settings, config/forward.py) ----


def _nft(task: str):
    """DiffusionNFT on Qwen-Image: CFG-free ODE rollouts of the 10 steps (the paper's policy), 9 trained at
    random, one optimizer step per epoch on 8 GPUs, the old policy's decay schedule and the warm-up EMA."""
    config = _qwenimage(task, gpu_number=8)
    config.run_name = f"{task}_qwenimage_nft"
    config.sample.guidance_scale = 1.0
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    config.sample.sde_window_size = 0
    config.train.gradient_accumulation_steps *= 2  # one optimizer step per epoch
    return base.nft_settings(config, task)


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
    return base.awm_settings(config, beta=0.001)


def get_config(name):
    return config_by_name(name, globals())
