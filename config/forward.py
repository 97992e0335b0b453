"""The forward-process objectives on Stable Diffusion 3.5 Medium with their papers' settings: DiffusionNFT,
Advantage Weighted Matching, and the original flow_grpo's online DPO and reward-filtered SFT.

    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml --num_processes 8 \
        scripts/train_sd3.py --config config/forward.py:geneval_sd3_nft
    accelerate launch --num_processes 1 scripts/train_sd3.py --config config/forward.py:geneval_sd3_dpo

Sized as their sources ran them: NFT and AWM on one node of 8 GPUs, DPO and SFT on 1 GPU. Every one samples
with the ODE (no log-probs stored) and trains LoRA r32 / alpha 64 at lr 3e-4 (all four sources). What differs
from the sources: NFT samples with Euler where DiffusionNFT uses a 2nd-order DPM solver, and AWM with Euler
where AWM's code uses SA-Solver with its stochastic fraction at 0 (also an ODE).
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

grpo = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpo.py"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {"geneval": ("geneval", {"geneval": 1.0}), "ocr": ("ocr", {"ocr": 1.0}), "pickscore": ("pickscore", {"pickscore": 1.0})}


def _sized(task: str, gpu_number: int, groups_per_epoch: int, optimizer_steps_per_epoch: int):
    """``groups_per_epoch`` groups of 24 images on ``gpu_number`` processes (config/grpo.py's batch rules),
    ``optimizer_steps_per_epoch`` optimizer steps per epoch, the task's prompts and reward."""
    config = grpo._sd3(gpu_number, groups_per_epoch=groups_per_epoch, num_image_per_prompt=24)
    minibatches = config.sample.num_batches_per_epoch * config.sample.train_batch_size // config.train.batch_size
    config.train.gradient_accumulation_steps = max(1, minibatches // optimizer_steps_per_epoch)
    dataset, reward = TASKS[task]
    config.dataset = os.path.join(REPO, "dataset", dataset)
    config.reward_fn = reward
    config.train.learning_rate = 3e-4
    config.lora.rank, config.lora.alpha = 32, 64
    config.train.kl_form = "exact"  # not used: the forward objectives' penalties are velocity distances
    return config


def _cfg_free(config, num_steps: int):
    """The papers' CFG-free policy: rollouts and evaluation at guidance 1, the conditional velocity trained."""
    config.sample.num_steps = num_steps
    config.sample.eval_num_steps = 40
    config.sample.guidance_scale = 1.0
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    return config


# ---- DiffusionNFT (NVlabs/DiffusionNFT, config/nft.py and config/base.py) ----------------------------------------


def _nft(task: str, optimizer_steps_per_epoch: int = 1):
    """48 groups of 24 per epoch on 8 GPUs, 10 ODE steps without CFG, 9 of them trained per image at random,
    nft_beta 1, velocity penalty 1e-4 to the base, advantages clipped at 5, the old policy's decay schedule
    "1" (flat 0, rate 0.001, cap 0.5), the evaluation EMA with warm-up."""
    config = _cfg_free(_sized(task, 8, 48, optimizer_steps_per_epoch), num_steps=10)
    config.run_name = f"{task}_sd3_nft"
    config.train.objective = "nft"
    config.train.timestep_fraction = 0.99  # int(10 x 0.99) = 9 of the 10 steps
    config.train.timestep_strategy = "random"
    config.train.nft_beta = 1.0
    config.train.beta = 1e-4
    config.train.adv_clip_max = 5.0
    config.train.old_policy_decay = (0.0, 0.001, 0.5)
    config.train.global_std = True
    config.train.ema_warmup = True
    return config


def geneval_sd3_nft():
    return _nft("geneval")


def general_ocr_sd3_nft():
    """OCR: two optimizer steps per epoch, nft_beta 0.1 and the decay schedule "2" (flat for 75 steps, then
    0.0075 per step up to 0.999)."""
    config = _nft("ocr", optimizer_steps_per_epoch=2)
    config.train.nft_beta = 0.1
    config.train.old_policy_decay = (75.0, 0.0075, 0.999)
    return config


def pickscore_sd3_nft():
    return _nft("pickscore")


# ---- Advantage Weighted Matching (scxue/advantage_weighted_matching, config/dgx_awm.py, the 1-node configs) -----


def _awm(task: str, groups_per_epoch: int, beta: float):
    """``groups_per_epoch`` groups of 24 on 8 GPUs, one optimizer step per epoch, 14 ODE steps without CFG,
    6 stratified flow times among the first 90% of them, generalised-Huber power 0.25, clip range 1 (the
    ratio is 1 with one step per epoch), advantages clipped at 1, the KL-EMA snapshot (weight 1, decay up to
    0.3), the evaluation EMA at 0.99 every step."""
    config = _cfg_free(_sized(task, 8, groups_per_epoch, 1), num_steps=14)
    config.run_name = f"{task}_sd3_awm"
    config.train.objective = "awm"
    config.train.timestep_strategy = "stratified"
    config.train.timestep_fraction = 0.9
    config.train.timestep_count = 6
    config.train.awm_power = 0.25
    config.train.clip_range = 1.0
    config.train.adv_clip_max = 1.0
    config.train.beta = beta
    config.train.awm_ema_beta = 1.0
    config.train.awm_ema_decay = (0.001, 0.3)
    config.train.global_std = True
    config.train.ema_decay = 0.99
    config.train.ema_update_interval = 1
    return config


def geneval_sd3_awm():
    return _awm("geneval", groups_per_epoch=72, beta=0.001)


def general_ocr_sd3_awm():
    return _awm("ocr", groups_per_epoch=72, beta=0.003)


def pickscore_sd3_awm():
    return _awm("pickscore", groups_per_epoch=24, beta=1e-4)


# ---- online DPO and reward-filtered SFT (yifan123/flow_grpo, config/dpo.py and config/sft.py) --------------------


def _reward_pairs(task: str, objective: str):
    """One GPU, one group of 24 images per epoch and one optimizer step, 40 ODE steps at CFG 4.5 (as the
    sources sample), the sampling reference replaced by the policy every 40 steps ("change ref_update_step to
    a small number, e.g. 40, to switch to online" DPO / SFT)."""
    config = _sized(task, 1, 1, 1)
    config.run_name = f"{task}_sd3_{objective}"
    config.train.objective = objective
    config.sample.num_steps = 40
    config.train.timestep_fraction = 0.99
    config.train.ref_update_step = 40
    config.train.time_shift = 3.0
    config.train.global_std = True
    config.train.beta = 0.0
    return config


def geneval_sd3_dpo():
    config = _reward_pairs("geneval", "dpo")
    config.train.dpo_beta = 100.0
    return config


def pickscore_sd3_dpo():
    config = _reward_pairs("pickscore", "dpo")
    config.train.dpo_beta = 100.0
    return config


def geneval_sd3_sft():
    return _reward_pairs("geneval", "sft")


def pickscore_sd3_sft():
    return _reward_pairs("pickscore", "sft")


def get_config(name):
    return config_by_name(name, globals())
