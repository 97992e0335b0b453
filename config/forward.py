"""The forward-process objectives on Stable Diffusion 3.5 Medium with their papers' settings: DiffusionNFT,
Advantage Weighted Matching, the original flow_grpo's online DPO and reward-filtered SFT, DGPO, and GARDO on NFT.

    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml --num_processes 8 \
        scripts/train.py --config config/forward.py:geneval_sd3_nft
    accelerate launch --num_processes 1 scripts/train.py --config config/forward.py:geneval_sd3_dpo

Sized as their sources ran them: NFT and AWM on one node of 8 GPUs, DGPO on 4, DPO and SFT on 1 GPU. Every one samples
with the ODE (no log-probs stored) and trains LoRA r32 / alpha 64 at lr 3e-4 (all four sources). What differs
from the sources: NFT samples with Euler where DiffusionNFT uses a 2nd-order DPM solver, and AWM with Euler
where AWM's code uses SA-Solver with its stochastic fraction at 0 (also an ODE).
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))


def _sized(task: str, gpu_number: int, groups_per_epoch: int, optimizer_steps_per_epoch: int):
    """``groups_per_epoch`` groups of 24 images on ``gpu_number`` processes (``families.on_gpus``),
    ``optimizer_steps_per_epoch`` optimizer steps per epoch, the task's prompts and reward."""
    config = families.on_gpus(families.sd3(), gpu_number, groups_per_epoch, num_image_per_prompt=24)
    base.optimizer_steps(config, optimizer_steps_per_epoch)
    base.task(config, task)
    config.train.learning_rate = 3e-4
    config.lora.rank, config.lora.alpha = 32, 64
    config.train.kl_form = "exact"  # not used: the forward objectives' penalties are velocity distances
    return config


def _cfg_free(config, num_steps: int):
    """The papers' CFG-free policy (``recipes.cfg_free``) on ``num_steps`` rollout steps, 40 evaluation steps."""
    config.sample.num_steps = num_steps
    config.sample.eval_num_steps = 40
    return recipes.cfg_free(config)


# ---- DiffusionNFT (NVlabs/DiffusionNFT, config/nft.py and config/base.py) ----------------------------------------


def _nft(task: str, optimizer_steps_per_epoch: int = 1):
    """48 groups of 24 per epoch on 8 GPUs, 10 ODE steps without CFG, 9 of them trained per image at random,
    and the rest of DiffusionNFT's settings (``recipes.nft_published``)."""
    config = _cfg_free(_sized(task, 8, 48, optimizer_steps_per_epoch), num_steps=10)
    config.run_name = f"{task}_sd3_nft"
    return recipes.nft_published(config, task)


def geneval_sd3_nft():
    return _nft("geneval")


def general_ocr_sd3_nft():
    """OCR: two optimizer steps per epoch, nft_beta 0.1 and the decay schedule "2" (flat for 75 steps, then
    0.0075 per step up to 0.999)."""
    return _nft("ocr", optimizer_steps_per_epoch=2)


def pickscore_sd3_nft():
    return _nft("pickscore")


# ---- Advantage Weighted Matching (scxue/advantage_weighted_matching, config/dgx_awm.py, the 1-node configs) -----


def _awm(task: str, groups_per_epoch: int, beta: float):
    """``groups_per_epoch`` groups of 24 on 8 GPUs, one optimizer step per epoch, 14 ODE steps without CFG,
    and the rest of AWM's settings (``recipes.awm_published``: 6 stratified flow times, power 0.25, clip 1, ...)."""
    config = _cfg_free(_sized(task, 8, groups_per_epoch, 1), num_steps=14)
    config.run_name = f"{task}_sd3_awm"
    return recipes.awm_published(config, beta)


def geneval_sd3_awm():
    return _awm("geneval", groups_per_epoch=72, beta=0.001)


def general_ocr_sd3_awm():
    return _awm("ocr", groups_per_epoch=72, beta=0.003)


def pickscore_sd3_awm():
    return _awm("pickscore", groups_per_epoch=24, beta=1e-4)


# ---- online DPO and reward-filtered SFT (yifan123/flow_grpo, config/dpo.py and config/sft.py) --------------------


def _reward_pairs(task: str, objective: str):
    """One GPU, one group of 24 images per epoch and one optimizer step, 40 ODE steps at CFG 4.5 (as the
    sources sample); the objective's recipe replaces the sampling reference by the policy every 40 steps
    ("change ref_update_step to a small number, e.g. 40, to switch to online" DPO / SFT)."""
    config = _sized(task, 1, 1, 1)
    config.run_name = f"{task}_sd3_{objective}"
    config.sample.num_steps = 40
    config.train.timestep_fraction = 0.99
    config.train.global_std = True
    config.train.beta = 0.0
    return config


def geneval_sd3_dpo():
    return recipes.dpo(_reward_pairs("geneval", "dpo"), ref_update_step=40)


def pickscore_sd3_dpo():
    return recipes.dpo(_reward_pairs("pickscore", "dpo"), ref_update_step=40)


def geneval_sd3_sft():
    return recipes.sft(_reward_pairs("geneval", "sft"), ref_update_step=40, beta=0.0)


def pickscore_sd3_sft():
    return recipes.sft(_reward_pairs("pickscore", "sft"), ref_update_step=40, beta=0.0)


# ---- DGPO (Luo-Yihong/DGPO, config/dgpo.py and scripts/train_sd3_dgpo.py) -------------------------------------


def _dgpo(task: str, num_image_per_prompt: int, max_batch: int):
    """DGPO as its authors ran it: 4 GPUs, 8 groups per epoch and one optimizer step per epoch, 10 ODE steps of
    DPM-Solver++(2M) at CFG 4.5, 4 trained high-noise steps per image (the authors: 4 of the first 5 at random,
    here the first 4), dgpo_beta 100, the trust region 1e-2 around an old policy that samples after 500 steps,
    a 0.02 velocity penalty to the base, lr 3e-4, LoRA r64 / alpha 128. Their evaluation samples 14 DPM steps;
    ours samples 40 Euler steps."""
    config = base.epoch_sizes(families.sd3(), 4, 8, num_image_per_prompt, max_batch)
    config.run_name = f"{task}_sd3_dgpo"
    base.optimizer_steps(config, 1)
    recipes.dgpo(base.task(config, task), timestep_fraction=0.4, beta=0.02)
    config.train.learning_rate = 3e-4
    config.lora.rank, config.lora.alpha = 64, 128
    config.train.kl_form = "exact"  # not used: DGPO's penalty is a velocity distance
    config.train.global_std = task != "geneval"
    return config


def geneval_sd3_dgpo():
    return _dgpo("geneval", num_image_per_prompt=16, max_batch=16)


def general_ocr_sd3_dgpo():
    config = _dgpo("ocr", num_image_per_prompt=16, max_batch=16)
    config.train.timestep_fraction = 0.6  # the authors' trunc_steps 6
    config.train.dgpo.old_samples_after = 200
    return config


def pickscore_sd3_dgpo():
    config = _dgpo("pickscore", num_image_per_prompt=24, max_batch=12)
    config.train.timestep_fraction = 0.6
    config.train.dgpo.temperature = 10.0
    config.train.dgpo.trust_region = 5e-2
    config.train.dgpo.old_samples_after = 200
    config.train.beta = 0.001
    return config


# ---- GARDO on DiffusionNFT (tinnerhrhe/GARDO, config/gardo.py: nft_sd3_geneval) ------------------------------


def geneval_sd3_nft_gardo():
    """GARDO's NFT run: DiffusionNFT's GenEval setup with DPM-Solver++(2M) rollouts, every step trained, a 0.04
    velocity penalty gated against the aesthetic and ImageReward judges, to a reference reset when the KL
    passes 0.15 (the authors' NFT threshold) or every 15 epochs."""
    config = recipes.gardo(geneval_sd3_nft(), "nft_gardo", beta=0.04, judges=recipes.GARDO_JUDGES)
    config.run_name = "geneval_sd3_nft_gardo"
    config.sample.ode_solver = "dpm2"
    config.train.timestep_fraction = 1.0
    config.train.gardo.reset_kl = 0.15
    return config


def get_config(name):
    return config_by_name(name, globals())
