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

base = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    config.dataset = os.path.join(REPO, "dataset", "tiny")
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
    config.reward_fn = {"brightness": 1.0}
    return config


def tiny_fast():
    """Flow-GRPO-Fast flags on the tiny pipeline: CPS window of 2 among the first 3 steps, no CFG."""
    config = tiny()
    config.run_name = "tiny_fast"
    config.sample.guidance_scale = 1.0
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    config.sample.sde_type = "cps"
    config.sample.noise_level = 0.8
    config.sample.sde_window_size = 2
    config.sample.sde_window_range = (0, 3)
    config.train.timestep_fraction = 1.0
    config.train.clip_range = 1e-3
    config.train.beta = 0.0
    return config


def tiny_full_finetune():
    config = tiny()
    config.run_name = "tiny_full"
    config.use_lora = False
    config.train.learning_rate = 1e-3
    return config


def tiny_grpo_guard():
    config = tiny()
    config.run_name = "tiny_grpo_guard"
    config.train.objective = "grpo_guard"
    return config


def tiny_flowrl():
    config = tiny()
    config.run_name = "tiny_flowrl"
    config.train.objective = "flowrl"
    return config


def _tiny_forward(objective):
    """The forward-process objectives on the tiny pipeline: ODE rollouts without CFG (as their papers sample)."""
    config = tiny()
    config.run_name = f"tiny_{objective}"
    config.train.objective = objective
    config.sample.guidance_scale = 1.0
    config.sample.eval_guidance_scale = 1.0
    config.train.cfg = False
    config.train.beta = 0.0
    return config


def tiny_nft():
    config = _tiny_forward("nft")
    config.train.timestep_fraction = 0.9  # 5 of the 6 schedule steps, at random (the paper: 9 of 10)
    config.train.timestep_strategy = "random"
    config.train.nft.old_policy_decay = (0.0, 0.05, 0.5)  # the paper's schedule, faster: a run here is 48 steps
    return config


def tiny_awm():
    config = _tiny_forward("awm")
    config.train.timestep_strategy = "stratified"
    config.train.timestep_fraction = 0.9
    config.train.timestep_count = 2
    config.train.clip_range = 1.0
    config.train.beta = 0.001
    return config


def tiny_dpo():
    config = _tiny_forward("dpo")
    config.train.dpo.ref_update_step = 4  # online: the reference (and sampler) follows the policy every 4 steps
    return config


def tiny_sft():
    config = _tiny_forward("sft")
    config.train.sft.ref_update_step = 4
    config.train.beta = 0.01
    return config


def tiny_dgpo():
    """DGPO's group sigmoid on the tiny pipeline: groups of 4 in minibatches of 8 (two whole groups each), the
    high-noise half of the schedule, the trust region's old policy sampling after 4 optimizer steps."""
    config = _tiny_forward("dgpo")
    config.train.timestep_fraction = 0.5
    config.train.dgpo.old_samples_after = 4
    config.train.beta = 0.01
    return config


def tiny_mixgrpo():
    """MixGRPO on the tiny pipeline: an SDE window of 2 that moves one step toward low noise every epoch over
    the first 4 of the 6 steps, DPM-Solver++(2M) after it (MixGRPO-Flash)."""
    config = tiny()
    config.run_name = "tiny_mixgrpo"
    config.train.objective = "mixgrpo"
    config.sample.sde_window_size = 2
    config.sample.sde_window_range = (0, 4)
    config.sample.sde_window_schedule = "progressive"
    config.sample.sde_window_shift_every = 1
    config.sample.ode_solver = "dpm2"
    config.train.timestep_fraction = 1.0
    return config


def tiny_grpo_gardo():
    """Flow-GRPO with GARDO: the KL only where brightness rates an image above the (weight-0) JPEG
    compressibility judge, a reference reset every 3 epochs, diversity-weighted advantages."""
    config = tiny()
    config.run_name = "tiny_grpo_gardo"
    config.train.objective = "grpo_gardo"
    config.reward_fn = {"brightness": 1.0, "jpeg_compressibility": 0.0}
    config.train.gardo.aux_rewards = ("jpeg_compressibility",)
    config.train.gardo.kl_share = 0.2
    config.train.gardo.reset_every = 3
    return config


def tiny_nft_gardo():
    """DiffusionNFT with GARDO (no judge: every sample's velocity penalty counts, against a reference reset
    every 3 epochs), diversity-weighted advantages."""
    config = tiny_nft()
    config.run_name = "tiny_nft_gardo"
    config.train.objective = "nft_gardo"
    config.train.beta = 0.01
    config.train.gardo.reset_every = 3
    return config


def tiny_flux():
    """The tiny run on a tiny FLUX.1-dev (``builtin:tiny_flux``): distilled guidance 3.5 as the model's input
    (no negative pass), FLUX's dynamic shift, 2x2-packed latents; FLUX's noise level 0.9 (config/flux.py)."""
    config = tiny()
    config.run_name = "tiny_flux"
    config.pretrained.model = "builtin:tiny_flux"
    config.sample.guidance_scale = 3.5
    config.sample.eval_guidance_scale = 3.5
    config.sample.noise_level = 0.9
    return config


def tiny_qwenimage():
    """The tiny run on a tiny Qwen-Image (``builtin:tiny_qwenimage``): true CFG 4 with the negative prompt " "
    and the norm rescale, Qwen-Image's shift and terminal sigma; noise level 1.2 with an SDE window of 2 among
    the first 3 steps (Flow-GRPO's Qwen-Image settings, config/qwenimage.py)."""
    config = tiny()
    config.run_name = "tiny_qwenimage"
    config.pretrained.model = "builtin:tiny_qwenimage"
    config.sample.guidance_scale = 4.0
    config.sample.eval_guidance_scale = 4.0
    config.sample.noise_level = 1.2
    config.sample.sde_window_size = 2
    config.sample.sde_window_range = (0, 3)
    config.train.timestep_fraction = 1.0
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
    config.sample.guidance_scale = 4.5
    config.sample.eval_guidance_scale = 4.5
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
    config.sample.guidance_scale = 2.5
    config.sample.eval_guidance_scale = 2.5
    config.sample.noise_level = 0.9
    config.sample.eval_max_prompts = 8
    config.reward_fn = {"shapes_edit": 1.0, "shapes_edit_pixels": 0.5}
    return config


def get_config(name):
    return config_by_name(name, globals())
