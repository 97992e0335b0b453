"""Flow-GRPO and the forward-process objectives on FLUX.1-dev (black-forest-labs/FLUX.1-dev).

    accelerate launch --config_file scripts/accelerate_configs/deepspeed_zero2.yaml --num_processes 32 \\
        scripts/train.py --config config/flux.py:pickscore_flux
    bash scripts/single_node/grpo.sh config/flux.py:pickscore_flux_8gpu

Sources (the original flow_grpo, yifan123/flow_grpo ``config/grpo.py`` at the Nov 2025 snapshot, functions
``pickscore_flux``, ``pickscore_flux_8gpu``, ``geneval_flux_fast``, ``pickscore_flux_fast``, and its
``scripts/train_flux.py``): 512 px, 6 sampling / 28 evaluation steps, FLUX.1-dev's distilled guidance 3.5 as
the model's input (no negative pass, the same value in training), SDE noise 0.9, int(6 x 0.99) = 5 trained
steps, 3 images per GPU in groups of 24, 48 groups per epoch on 32 GPUs and two optimizer steps per epoch,
lr 3e-4, clip 1e-4, no KL (beta 0), EMA, bf16 (fp16 gives invalid FLUX images, the original's FAQ), LoRA r64 /
alpha 128 on every attention projection and both streams' MLPs (``FLUX_LORA_TARGET_MODULES``), T5 at 128
tokens. Fast (GenEval, as published): CPS at noise 0.8 in a window of the first 3 steps, clip 1e-5.
Not published upstream, derived here and marked so: GenEval without Fast and OCR (the original's issue #110:
beta 0.04 crashed FLUX OCR, beta 0 trained; #141: FLUX trained on many steps showed bright spots until only
the high-noise steps were trained), and the forward-process objectives (their SD3.5-M papers' settings,
config/forward.py, with FLUX's guidance, steps and LoRA).
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))


def _flux(task: str):
    """The original's FLUX.1-dev run (``families.flux``) on the task's prompts and reward."""
    config = base.task(families.flux(), task)
    config.run_name = f"{task}_flux"
    return config


def _fast(config):
    """The original's train_flux_fast.py settings (``recipes.fast``): CPS at noise 0.8 in a window of 3 steps
    starting in the first half (6 // 2 = 3 positions, so always steps 0-2), every window step trained, clip
    1e-5."""
    return recipes.fast(config)


def pickscore_flux():
    return _flux("pickscore")


def pickscore_flux_8gpu():
    """The original's 8-GPU variant: the same 48 groups per epoch in 48 batches per GPU."""
    return families.on_gpus(pickscore_flux(), 8)


def pickscore_flux_fast():
    config = _fast(_flux("pickscore"))
    config.train.global_std = False  # as published for this one
    return config


def geneval_flux():
    """Published as Fast only (``geneval_flux_fast``): this is that."""
    config = _fast(_flux("geneval"))
    config.sample.test_batch_size = 14
    return config


def geneval_flux_8gpu():
    return families.on_gpus(geneval_flux(), 8)


def general_ocr_flux():
    """Derived (no FLUX OCR config upstream): pickscore_flux's settings, the OCR reward, no KL (#110)."""
    return _flux("ocr")


def general_ocr_flux_8gpu():
    return families.on_gpus(general_ocr_flux(), 8)


# ---- the forward-process objectives (derived: their papers' SD3.5-M settings, config/forward.py) ----


def _nft(task: str):
    """DiffusionNFT on FLUX: ODE rollouts with FLUX's own guidance (it has no negative pass to drop), 48 groups
    of 24 per epoch on 8 GPUs, one optimizer step per epoch, 5 of the 6 steps trained at random, the old
    policy's decay schedule, the evaluation EMA with warm-up; NFT's strength 0.1 for OCR as in its paper."""
    config = base.optimizer_steps(families.on_gpus(_flux(task), 8), 1)
    config.run_name = f"{task}_flux_nft"
    return recipes.nft_published(config, task)


def geneval_flux_nft():
    return _nft("geneval")


def general_ocr_flux_nft():
    return _nft("ocr")


def pickscore_flux_nft():
    return _nft("pickscore")


def geneval_flux_awm():
    """Advantage Weighted Matching on FLUX: stratified times in the first 90% of the steps (AWM draws 6 of its
    14 steps; with FLUX's 6 steps, 4 strata), power 0.25, clip 1, the KL-EMA snapshot, beta 0.001."""
    config = base.optimizer_steps(families.on_gpus(_flux("geneval"), 8), 1)
    config.run_name = "geneval_flux_awm"
    return recipes.awm_published(config, beta=0.001, timestep_count=4)


def pickscore_flux_mixgrpo():
    """MixGRPO as published (Tencent-Hunyuan/MixGRPO, scripts/finetune/finetune_flux_grpo_MixGRPO.sh): FLUX.1-dev
    at 720 px, 25 steps, Flow-GRPO's SDE at noise 0.7 on a window of 4 that moves one step every 25 epochs
    within steps 0-23, 12 images per prompt, 32 groups per epoch on 32 GPUs, 4 optimizer steps per epoch, clip
    1e-4, no KL. Their reward is HPS-v2.1 + ImageReward + PickScore, each normalised per group before the sum;
    here PickScore + ImageReward are summed before the normalisation. Kept from this file: LoRA r64 at lr 3e-4
    (the authors fine-tune every weight at 1e-5)."""
    config = recipes.mixgrpo_published(_flux("pickscore"))
    config.run_name = "pickscore_flux_mixgrpo"
    config.resolution = 720
    families.on_gpus(config, 32, groups_per_epoch=32, num_image_per_prompt=12)
    base.optimizer_steps(config, 4)
    config.reward_fn = {"pickscore": 1.0, "imagereward": 1.0}
    return config


def pickscore_flux_mixgrpo_flash():
    """MixGRPO-Flash (``recipes.mixgrpo_flash``) on the run above."""
    config = recipes.mixgrpo_flash(pickscore_flux_mixgrpo())
    config.run_name = "pickscore_flux_mixgrpo_flash"
    return config


def get_config(name):
    return config_by_name(name, globals())
