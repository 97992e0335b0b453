"""CPU-sized runs of scripts/train.py on tiny models built in code (real diffusers classes): SD3, FLUX.1-dev,
Qwen-Image, Wan2.1 text-to-video and FLUX.1 Kontext editing.

    python scripts/train.py --config config/tiny.py:tiny
    python scripts/train.py --config config/tiny.py:tiny_flux --config.train.objective=nft
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config config/tiny.py:tiny_qwenimage
(on a machine without GPU the script runs its processes on the CPU with gloo; `accelerate launch --cpu
--num_processes 2` starts a single process unless an MPI hostfile is given)
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))
recipes = load_module(os.path.join(HERE, "recipes.py"))
REPO = os.path.dirname(HERE)


def tiny():
    """Brightness reward on the tiny (random) pipeline: under a second per epoch on 2 cores.

    The random VAE decodes to nearly uniform grey (reward std within a batch about 0.003), so the absolute
    gain is small; measured: batch reward 0.489 -> 0.505 over 24 epochs, many standard deviations.
    """
    config = base.default()
    config.run_name = "tiny"
    config.pretrained.model = "builtin:tiny"
    config.resolution = 64
    config.max_sequence_length = 32
    config.mixed_precision = "no"
    config.log_with = ""
    base.task(config, "tiny")  # brightness
    config.lora.rank = 4
    config.lora.alpha = 8
    config.num_epochs = 24
    config.save_freq = 8
    config.eval_freq = 8
    config.num_checkpoint_limit = 3
    config.sample.num_steps = 6
    config.sample.eval_num_steps = 10
    config.sample.train_batch_size = 8  # per process
    config.sample.num_image_per_prompt = 4
    config.sample.num_batches_per_epoch = 2
    config.sample.test_batch_size = 4
    config.train.batch_size = 8
    config.train.gradient_accumulation_steps = 1
    config.train.learning_rate = 1e-2
    config.train.clip_range = 1e-3
    config.train.timestep_fraction = 0.5
    config.train.beta = 0.004
    config.train.ema_update_interval = 1
    return config


def tiny_fast():
    """Flow-GRPO-Fast flags on the tiny pipeline: CPS window of 2 among the first 3 steps, no CFG."""
    config = tiny()
    config.run_name = "tiny_fast"
    return recipes.fast(recipes.cfg_free(config), window_size=2, window_range=(0, 3), clip_range=1e-3)


def tiny_full_finetune():
    config = tiny()
    config.run_name = "tiny_full"
    config.use_lora = False
    config.train.learning_rate = 1e-3
    return config


def tiny_grpo_guard():
    config = tiny()
    config.run_name = "tiny_grpo_guard"
    return recipes.grpo_guard(config, clip_range=config.train.clip_range)  # the tiny run's clip range


def tiny_flowrl():
    config = tiny()
    config.run_name = "tiny_flowrl"
    return recipes.flowrl(config)


def _tiny_forward(objective):
    """The forward-process objectives on the tiny pipeline (the run folder ``tiny_<objective>``): ODE rollouts
    without CFG (as their papers sample), no penalty unless the objective's recipe sets one."""
    config = recipes.cfg_free(tiny())
    config.run_name = f"tiny_{objective}"
    config.train.beta = 0.0
    return config


def tiny_nft():
    config = recipes.nft(_tiny_forward("nft"), timestep_fraction=0.9)  # 5 of the 6 steps (the paper: 9 of 10)
    config.train.nft.old_policy_decay = (0.0, 0.05, 0.5)  # the paper's schedule, faster: a run here is 48 steps
    return config


def tiny_awm():
    return recipes.awm(_tiny_forward("awm"), beta=0.001, timestep_count=2)


def tiny_dpo():
    # online: the reference (and sampler) follows the policy every 4 steps
    return recipes.dpo(_tiny_forward("dpo"), ref_update_step=4)


def tiny_sft():
    return recipes.sft(_tiny_forward("sft"), ref_update_step=4, beta=0.01)


def tiny_dgpo():
    """DGPO's group sigmoid on the tiny pipeline: groups of 4 in minibatches of 8 (two whole groups each), the
    high-noise half of the schedule, the trust region's old policy sampling after 4 optimizer steps."""
    config = recipes.dgpo(_tiny_forward("dgpo"), timestep_fraction=0.5, beta=0.01, ode_solver="euler")
    config.train.dgpo.old_samples_after = 4
    return config


def tiny_mixgrpo():
    """MixGRPO on the tiny pipeline: an SDE window of 2 that moves one step toward low noise every epoch over
    the first 4 of the 6 steps, DPM-Solver++(2M) after it (MixGRPO-Flash)."""
    config = tiny()
    config.run_name = "tiny_mixgrpo"
    return recipes.mixgrpo(config, window_size=2, window_range=(0, 4), shift_every=1, ode_solver="dpm2")


def tiny_grpo_gardo():
    """Flow-GRPO with GARDO: the KL only where brightness rates an image above the (weight-0) JPEG
    compressibility judge, a reference reset every 3 epochs, diversity-weighted advantages."""
    config = tiny()
    config.run_name = "tiny_grpo_gardo"
    recipes.gardo(config, "grpo_gardo", beta=config.train.beta, judges=("jpeg_compressibility",))  # the tiny run's KL
    config.train.gardo.kl_share = 0.2
    config.train.gardo.reset_every = 3
    return config


def tiny_nft_gardo():
    """DiffusionNFT with GARDO (no judge: every sample's velocity penalty counts, against a reference reset
    every 3 epochs), diversity-weighted advantages."""
    config = recipes.gardo(tiny_nft(), "nft_gardo", beta=0.01)
    config.run_name = "tiny_nft_gardo"
    config.train.gardo.reset_every = 3
    return config


def tiny_flux():
    """The tiny run on a tiny FLUX.1-dev (``builtin:tiny_flux``): distilled guidance 3.5 as the model's input
    (no negative pass), FLUX's dynamic shift, 2x2-packed latents; FLUX's noise level 0.9 (config/flux.py)."""
    config = tiny()
    config.run_name = "tiny_flux"
    config.pretrained.model = "builtin:tiny_flux"
    return families.flux_sampler(config)


def tiny_qwenimage():
    """The tiny run on a tiny Qwen-Image (``builtin:tiny_qwenimage``): true CFG 4 with the negative prompt " "
    and the norm rescale, Qwen-Image's shift and terminal sigma; noise level 1.2 with an SDE window of 2 among
    the first 3 steps (Flow-GRPO's Qwen-Image settings, config/qwenimage.py)."""
    config = tiny()
    config.run_name = "tiny_qwenimage"
    config.pretrained.model = "builtin:tiny_qwenimage"
    return families.qwenimage_sampler(config)


def tiny_zimage():
    """The tiny run on a tiny Z-Image (``builtin:tiny_zimage``): standard CFG 4.5 on the empty prompt (ZImagePipeline's
    guidance_scale 3.5), the Qwen3 chat-template captions, Z-Image's static shift 3, the tiny run's SDE. Derived: no
    Flow-GRPO run on Z-Image is published upstream."""
    config = tiny()
    config.run_name = "tiny_zimage"
    config.pretrained.model = "builtin:tiny_zimage"
    return config


def tiny_wan():
    """The tiny run on a tiny Wan2.1 text-to-video model (``builtin:tiny_wan``): 9 frames of 32 x 48 (latents
    ``[16, 3, 4, 6]``), CFG 4.5 with the empty negative prompt, Wan's flow shift; the reward is brightness on
    frames 0, 4 and 8 (every 4th, averaged) plus the video-native temporal consistency. Flow-GRPO's Wan2.1
    settings where they fit a CPU (config/wan.py): lr 1e-4 is too slow here, so the tiny run's 1e-2 stays."""
    config = tiny()
    config.run_name = "tiny_wan"
    config.pretrained.model = "builtin:tiny_wan"
    config.height, config.width, config.num_frames = 32, 48, 9
    families.wan_sampler(config)
    config.reward_fn = {"brightness": 1.0, "temporal_consistency": 0.5}
    return config


def tiny_kontext():
    """The tiny run on a tiny FLUX.1 Kontext (``builtin:tiny_kontext``): the shapes world's editing task at its
    32 px (dataset/shapes_edit: input scene, instruction, edited scene's metadata), FLUX's distilled guidance
    2.5 and noise 0.9 (config/kontext.py). The reward is the detector's edit check times preservation
    (``shapes_edit``; a random model scores 0 on it) plus the dense pixel match to the edited scene at half
    weight, which gives the random model a signal."""
    config = tiny()
    config.run_name = "tiny_kontext"
    config.pretrained.model = "builtin:tiny_kontext"
    config.resolution = 32
    config.dataset = os.path.join(REPO, "dataset", "shapes_edit")
    families.kontext_sampler(config)
    config.sample.eval_max_prompts = 8
    config.reward_fn = {"shapes_edit": 1.0, "shapes_edit_pixels": 0.5}
    return config


def get_config(name):
    return config_by_name(name, globals())
