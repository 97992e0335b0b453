"""Flow-GRPO experiments on Stable Diffusion 3.5 Medium (the paper's settings).

    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml --num_processes 8 \
        scripts/train.py --config config/grpo.py:geneval_sd3

FLUX.1-dev and Qwen-Image have their own files (config/flux.py, config/qwenimage.py) on the same sizes.

Every experiment keeps the number of prompt groups per epoch of the 32-GPU original; the `_1gpu` and
`_4gpu` variants reach it with more sampling batches per epoch (and as much gradient accumulation), so
one epoch is the same amount of data whatever the machine.
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))
KL_BETA = {"geneval": 0.04, "ocr": 0.04, "pickscore": 0.01}  # the paper's, in its KL form (config/base.py: kl_form)


def _grpo(task: str):
    """Flow-GRPO on the paper's SD3.5-M setup (``families.sd3``), the task's prompts and reward and its beta."""
    config = base.task(families.sd3(), task)
    config.train.beta = KL_BETA[task]
    return config


def geneval_sd3():
    return _grpo("geneval")


def geneval_sd3_4gpu():
    return families.on_gpus(geneval_sd3(), 4)


def geneval_sd3_1gpu():
    return families.on_gpus(geneval_sd3(), 1)


def general_ocr_sd3():
    return _grpo("ocr")


def general_ocr_sd3_4gpu():
    return families.on_gpus(general_ocr_sd3(), 4)


def general_ocr_sd3_1gpu():
    return families.on_gpus(general_ocr_sd3(), 1)


def pickscore_sd3():
    return _grpo("pickscore")


def pickscore_sd3_4gpu():
    return families.on_gpus(pickscore_sd3(), 4)


def pickscore_sd3_1gpu():
    return families.on_gpus(pickscore_sd3(), 1)


def clipscore_sd3():
    config = base.task(families.sd3(), "clipscore")
    config.train.beta = 0.02
    config.sample.same_latent = True
    return config


def geneval_sd3_fast_nocfg():
    """Flow-GRPO-Fast without CFG (``recipes.fast``): CPS steps at noise 0.8 in one window of 3 among the first 5
    steps, ODE elsewhere; only the window is stored and trained. No KL, CPS clip range."""
    return recipes.fast(recipes.cfg_free(base.task(families.sd3(), "geneval")))


def pickscore_sd3_fast_nocfg():
    config = families.on_gpus(families.sd3(), 32, groups_per_epoch=64, num_image_per_prompt=18)
    return recipes.fast(recipes.cfg_free(base.task(config, "pickscore")))


# ---- other policy objectives (config.train.objective) on the paper's GenEval and PickScore setups ----


def geneval_sd3_grpo_guard():
    return recipes.grpo_guard(geneval_sd3())


def pickscore_sd3_grpo_guard():
    return recipes.grpo_guard(pickscore_sd3())


def geneval_sd3_flowrl():
    config = recipes.flowrl(geneval_sd3())
    config.train.beta = 0.0  # not read by FlowRL: its balance has the reference's log-probs
    return config


def pickscore_sd3_flowrl():
    config = recipes.flowrl(pickscore_sd3())
    config.train.beta = 0.0
    return config


# ---- MixGRPO (Tencent-Hunyuan/MixGRPO, scripts/finetune/finetune_flux_grpo_MixGRPO.sh) on SD3.5-M -----------


def pickscore_sd3_mixgrpo():
    """MixGRPO's sampler and loss as its authors publish them (``recipes.mixgrpo_published``, for FLUX.1-dev;
    config/flux.py has that run). Kept from Flow-GRPO's SD3.5-M run: LoRA at lr 3e-4 (the authors fine-tune
    FLUX fully at 1e-5), groups of 24, 48 groups per epoch, CFG 4.5."""
    return recipes.mixgrpo_published(pickscore_sd3())


def pickscore_sd3_mixgrpo_flash():
    """MixGRPO-Flash (``recipes.mixgrpo_flash``) on the run above."""
    return recipes.mixgrpo_flash(pickscore_sd3_mixgrpo())


# ---- GARDO (tinnerhrhe/GARDO, config/gardo.py: geneval_sd3, general_ocr_sd3) --------------------------------


def _gardo(config, beta: float):
    """GARDO's Flow-GRPO runs: Flow-GRPO's SD3.5-M setup (10 steps, CFG 4.5, noise 0.7, groups of 24, 48 groups
    per epoch, two optimizer steps per epoch), int(10 x 0.89) = 8 trained steps, lr 3e-4, clip 1e-4, the KL in
    the paper's form to a reference reset on KL 3e-4 or every 15 epochs, gated against the aesthetic and
    ImageReward judges (weight 0: the advantages use the main reward alone, as the authors' code), LoRA r32.
    The authors measure diversity on DINOv3 features; here it is measured on the final latents."""
    recipes.gardo(config, "grpo_gardo", beta, judges=recipes.GARDO_JUDGES)
    config.train.timestep_fraction = 0.89
    config.train.learning_rate = 3e-4
    config.train.clip_range = 1e-4
    config.lora.rank, config.lora.alpha = 32, 64
    config.train.gardo.reset_kl = 3e-4
    config.train.gardo.reset_every = 15
    return config


def geneval_sd3_grpo_gardo():
    return _gardo(geneval_sd3(), beta=0.07)


def general_ocr_sd3_grpo_gardo():
    return _gardo(general_ocr_sd3(), beta=0.04)


def get_config(name):
    return config_by_name(name, globals())
