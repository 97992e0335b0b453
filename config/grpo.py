"""Flow-GRPO experiments on Stable Diffusion 3.5 Medium (the paper's settings).

    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml --num_processes 8 \
        scripts/train_sd3.py --config config/grpo.py:geneval_sd3

FLUX.1-dev and Qwen-Image have their own files (config/flux.py, config/qwenimage.py) on the same sizes.

Every experiment keeps the number of prompt groups per epoch of the 32-GPU original; the `_1gpu` and
`_4gpu` variants reach it with more sampling batches per epoch (and as much gradient accumulation), so
one epoch is the same amount of data whatever the machine.
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

base = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sd3(gpu_number=32, groups_per_epoch=48, num_image_per_prompt=24, max_batch=9):
    """The paper's SD3.5-M setup on ``gpu_number`` processes (sizes: ``base.epoch_sizes``)."""
    config = base.default()
    config.pretrained.model = "stabilityai/stable-diffusion-3.5-medium"
    config.pretrained.family = "sd3"
    config.resolution = 512
    config.sample.num_steps = 10
    config.sample.eval_num_steps = 40
    config.sample.guidance_scale = 4.5
    config.sample.eval_guidance_scale = 4.5
    base.epoch_sizes(config, gpu_number, groups_per_epoch, num_image_per_prompt, max_batch)
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


def _geneval(gpu_number):
    config = _sd3(gpu_number)
    config.dataset = os.path.join(REPO, "dataset", "geneval")
    config.train.beta = 0.04
    config.reward_fn = {"geneval": 1.0}
    return config


def _ocr(gpu_number):
    config = _sd3(gpu_number)
    config.dataset = os.path.join(REPO, "dataset", "ocr")
    config.train.beta = 0.04
    config.reward_fn = {"ocr": 1.0}
    return config


def _pickscore(gpu_number):
    config = _sd3(gpu_number)
    config.dataset = os.path.join(REPO, "dataset", "pickscore")
    config.train.beta = 0.01
    config.reward_fn = {"pickscore": 1.0}
    return config


def geneval_sd3():
    return _geneval(32)


def geneval_sd3_4gpu():
    return _geneval(4)


def geneval_sd3_1gpu():
    return _geneval(1)


def general_ocr_sd3():
    return _ocr(32)


def general_ocr_sd3_4gpu():
    return _ocr(4)


def general_ocr_sd3_1gpu():
    return _ocr(1)


def pickscore_sd3():
    return _pickscore(32)


def pickscore_sd3_4gpu():
    return _pickscore(4)


def pickscore_sd3_1gpu():
    return _pickscore(1)


def clipscore_sd3():
    config = _sd3()
    config.dataset = os.path.join(REPO, "dataset", "pickscore")
    config.train.beta = 0.02
    config.sample.same_latent = True
    config.reward_fn = {"clipscore": 1.0}
    return config


def _fast_nocfg(config):
    """Flow-GRPO-Fast without CFG: CPS steps at noise 0.8 in one window of 3 among the first 5 steps, ODE
    elsewhere; only the window is stored and trained. No KL, CPS clip range."""
    config.sample.guidance_scale = 1.0
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    config.sample.noise_level = 0.8
    config.sample.sde_type = "cps"
    config.sample.sde_window_size = 3
    config.sample.sde_window_range = (0, config.sample.num_steps // 2)
    config.train.timestep_fraction = 1.0  # every window step
    config.train.clip_range = 1e-5
    config.train.beta = 0.0
    return config


def geneval_sd3_fast_nocfg():
    config = _fast_nocfg(_sd3())
    config.dataset = os.path.join(REPO, "dataset", "geneval")
    config.reward_fn = {"geneval": 1.0}
    return config


def pickscore_sd3_fast_nocfg():
    config = _fast_nocfg(_sd3(groups_per_epoch=64, num_image_per_prompt=18))
    config.dataset = os.path.join(REPO, "dataset", "pickscore")
    config.reward_fn = {"pickscore": 1.0}
    return config


# ---- other policy objectives (config.train.objective) on the paper's GenEval and PickScore setups ----


def _grpo_guard(config):
    """GRPO-Guard: ratio = exp((log p - log p_old + bias) * std), re-centred per step; loss / (-dt). The ratio's
    deviations are the log-prob's times the step std (about 0.1-0.5 at noise 0.7 over 10 steps), so the SDE
    clip range 1e-4 on log-probs becomes about 2e-5 on this ratio."""
    config.train.objective = "grpo_guard"
    config.train.clip_range = 2e-5
    return config


def _flowrl(config):
    """FlowRL trajectory balance: log Z head on the pooled prompt embedding, tb_coef 15, clamped importance
    weight, reference = the adapter-disabled model (its log-probs are computed whatever beta is)."""
    config.train.objective = "flowrl"
    config.train.beta = 0.0
    return config


def geneval_sd3_grpo_guard():
    return _grpo_guard(geneval_sd3())


def pickscore_sd3_grpo_guard():
    return _grpo_guard(pickscore_sd3())


def geneval_sd3_flowrl():
    return _flowrl(geneval_sd3())


def pickscore_sd3_flowrl():
    return _flowrl(pickscore_sd3())


# ---- MixGRPO (Tencent-Hunyuan/MixGRPO, scripts/finetune/finetune_flux_grpo_MixGRPO.sh) on SD3.5-M -----------


def _mixgrpo(config):
    """MixGRPO's sampler and loss as its authors publish them (for FLUX.1-dev; config/flux.py has that run): 25
    steps, Flow-GRPO's SDE at noise 0.7 on a window of 4 that starts at step 0 and moves one step toward low
    noise every 25 epochs within steps 0-23 (then back to 0), Euler elsewhere; every window step trained, clip
    1e-4, no KL. Kept from Flow-GRPO's SD3.5-M run: LoRA at lr 3e-4 (the authors fine-tune FLUX fully at
    1e-5), groups of 24, 48 groups per epoch, CFG 4.5."""
    return base.mixgrpo_settings(config)


def pickscore_sd3_mixgrpo():
    return _mixgrpo(pickscore_sd3())


def pickscore_sd3_mixgrpo_flash():
    """MixGRPO-Flash: DPM-Solver++(2M) after the window (the authors' dpmsolver++ "post", order 2) and the window
    moved every 20 epochs. Their Flash also shortens the schedule after the window (compress ratio 0.4),
    which this sampler does not."""
    config = _mixgrpo(pickscore_sd3())
    config.sample.ode_solver = "dpm2"
    config.sample.sde_window_shift_every = 20
    return config


# ---- GARDO (tinnerhrhe/GARDO, config/gardo.py: geneval_sd3, general_ocr_sd3) --------------------------------


def _gardo(config, beta: float, main: str):
    """GARDO's Flow-GRPO runs: Flow-GRPO's SD3.5-M setup (10 steps, CFG 4.5, noise 0.7, groups of 24, 48 groups
    per epoch, two optimizer steps per epoch), int(10 x 0.89) = 8 trained steps, lr 3e-4, clip 1e-4, the KL in
    the paper's form to a reference reset on KL 3e-4 or every 15 epochs, gated against the aesthetic and
    ImageReward judges (weight 0: the advantages use the main reward alone, as the authors' code), LoRA r32.
    The authors measure diversity on DINOv3 features; here it is measured on the final latents."""
    config.train.objective = "grpo_gardo"
    config.train.beta = beta
    config.train.timestep_fraction = 0.89
    config.train.learning_rate = 3e-4
    config.train.clip_range = 1e-4
    config.lora.rank, config.lora.alpha = 32, 64
    config.reward_fn = {main: 1.0, "aesthetic": 0.0, "imagereward": 0.0}
    config.train.gardo.aux_rewards = ("aesthetic", "imagereward")
    config.train.gardo.reset_kl = 3e-4
    config.train.gardo.reset_every = 15
    return config


def geneval_sd3_grpo_gardo():
    return _gardo(geneval_sd3(), beta=0.07, main="geneval")


def general_ocr_sd3_grpo_gardo():
    return _gardo(general_ocr_sd3(), beta=0.04, main="ocr")


def get_config(name):
    return config_by_name(name, globals())
