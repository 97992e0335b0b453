"""Defaults of scripts/train.py, close to the original Flow-GRPO's, and two of a run's axes.

A named config is task x family x objective x scale (docs/running.md, "How a named config is composed"):

- ``default()``: what every image run starts from (toy.py's worlds take ``train_config()``);
- the task: ``TASKS`` and ``task()``, a prompt folder and its rewards;
- the scale: ``epoch_sizes()`` and ``optimizer_steps()``, the batches of an epoch on a number of processes;
- the family: config/families.py; the objective: config/recipes.py.

This file holds no experiment of its own (no ``get_config``)."""

import os

import ml_collections

from flow_grpo.objectives import OBJECTIVES
from flow_grpo.training.sizes import accumulate_into_steps, size_epoch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default():
    config = ml_collections.ConfigDict()

    # ---- run ----
    config.run_name = ""  # folder under logdir; default: the experiment's name
    config.logdir = "logs"
    config.seed = 42
    config.num_epochs = 100000  # stop by hand, or set a number
    config.max_minutes = 0.0  # stop after the epoch that reaches this much training time (0: no limit)
    config.save_freq = 20  # epochs between checkpoints (a final one is always written)
    config.eval_freq = 20  # epochs between evaluations (epoch 0, the base model, included)
    config.num_checkpoint_limit = 5  # newest complete checkpoints kept; 0 keeps all
    config.resume_from = ""  # a checkpoint folder, a run folder, or "latest" (this run's newest)
    # stopping (docs/operations.md): these signals stop the run at the next clean point with a checkpoint, exit 75
    config.stop_signals = "SIGTERM,SIGUSR1"
    config.dist_timeout_s = 1800.0  # a collective with no answer this long (a hung or lost process) ends the run
    config.reward_deadline_s = 1800.0  # the longest wait for one batch's rewards once they are needed (0: none)
    config.mixed_precision = "fp16"  # "fp16", "bf16" or "no"; sampling and training both run under it
    config.allow_tf32 = True
    config.progress = True  # tqdm bars
    config.log_with = "tensorboard"  # comma-separated: tensorboard, wandb; "" for metrics.jsonl only
    config.wandb_project = "flow_grpo"
    config.wandb_mode = "online"  # or "offline" (sync later with `wandb sync`)

    # ---- model ----
    config.pretrained = ml_collections.ConfigDict()
    config.pretrained.model = "stabilityai/stable-diffusion-3.5-medium"  # hub id, local folder, or "builtin:tiny[_flux|_qwenimage|_wan|_kontext]"
    config.pretrained.family = ""  # "sd3", "flux", "qwenimage", "wan", "flux_kontext"; "": read from the model's model_index.json
    config.pretrained.revision = ""
    config.resolution = 512  # the side of a square image or video frame
    config.height = 0  # a frame of another shape: height and width in pixels (0: config.resolution)
    config.width = 0
    config.num_frames = 1  # frames per video for a video family (Wan: 4k + 1, e.g. 33); 1 for images
    config.max_sequence_length = 128  # T5 tokens
    config.use_lora = True  # False: full fine-tuning of the transformer
    config.lora = ml_collections.ConfigDict()
    config.lora.rank = 32
    config.lora.alpha = 64
    config.lora.target_modules = ()  # (): the family's Flow-GRPO targets (docs/backbones.md)
    config.lora_path = ""  # start the trained LoRA from these weights
    config.merge_lora_path = ""  # a cold-start LoRA fused into the base weights before RL

    # ---- data ----
    config.dataset = ""  # folder with train/test prompts (.txt or _metadata.jsonl)

    # ---- sampling ----
    config.sample = ml_collections.ConfigDict()
    config.sample.num_steps = 10  # denoising reduction: train on 10 steps ...
    config.sample.eval_num_steps = 40  # ... evaluate with 40 ODE steps
    config.sample.guidance_scale = 4.5
    config.sample.eval_guidance_scale = 4.5
    config.sample.train_batch_size = 1  # images per process per sampling batch
    config.sample.num_image_per_prompt = 1  # group size k
    config.sample.num_batches_per_epoch = 2
    config.sample.test_batch_size = 1
    config.sample.eval_max_prompts = 0  # 0: the whole test split
    config.sample.eval_images_per_prompt = 1
    config.sample.noise_level = 0.7
    config.sample.sde_type = "sde"  # "sde" (Flow-GRPO) or "cps"
    config.sample.same_latent = False  # one initial noise per prompt (shared across processes)
    rollout_steps_config(config.sample)
    config.sample.decode_batch_size = 0  # VAE decode chunk; 0: whole batch (SD3.5-M at 512 px: 16 or less, see benchmark.py)

    # ---- training: train_config() below, the keys the toy worlds' trainer shares ----
    config.train = train_config()
    config.train.cfg = True  # train with the sampling guidance scale (False: no CFG in training)
    config.train.gradient_checkpointing = False
    config.batched_cfg = True  # CFG as one transformer call on the doubled batch (False: two calls, less memory)
    config.compile = False  # torch.compile the transformer for sampling and training

    # ---- reward ----
    config.reward_fn = {}  # {"name": weight}; the weighted sum is "avg"
    config.reward_options = {}  # {"name": {option: value}} passed to each reward's factory
    config.reward_frame_interval = 4  # videos: image rewards score frames 0, 4, 8, ... and average them
    config.reward_nan_policy = "error"  # "error": stop; "drop": leave NaN-reward images out of the update
    # ---- scale: the epoch a run's batches are sized for (flow_grpo.training.sizes.size_epoch); launched on
    # another number of processes, the same epoch is resized for it (0 groups: the batches as written) ----
    config.scale = ml_collections.ConfigDict()
    config.scale.processes = 0  # the process count the batch keys are sized for (0: not recorded)
    config.scale.groups_per_epoch = 0
    config.scale.group_size = 0
    config.scale.max_batch = 0  # the most images per process and sampling batch
    config.scale.optimizer_steps_per_epoch = 0
    return config


def rollout_steps_config(sample) -> None:
    """The keys of ``config.sample`` that say which rollout steps are stochastic and how the others are
    integrated (shared with the toy worlds' configs)."""
    sample.sde_window_size = 0  # Flow-GRPO-Fast: > 0 makes only one window of steps stochastic
    sample.sde_window_range = (0, 10)
    # where the window sits: "random" (Flow-GRPO-Fast: drawn per batch inside the range) or "progressive"
    # (MixGRPO: from the range's start, sde_window_stride steps toward low noise every sde_window_shift_every
    # epochs, rolling back at the end; flow_grpo.sampling_loop.progressive_window_start)
    sample.sde_window_schedule = "random"
    sample.sde_window_shift_every = 25
    sample.sde_window_stride = 1
    # the deterministic steps after the window (every step of an ODE rollout): "euler", or "dpm2"
    # (DPM-Solver++(2M), MixGRPO-Flash's and DGPO's); evaluation samples with Euler whatever this says
    sample.ode_solver = "euler"


def train_config():
    """``config.train``: the update, the same keys for scripts/train.py and scripts/train_toy.py."""
    train = ml_collections.ConfigDict()
    # one of flow_grpo.objectives.OBJECTIVES (python -m flow_grpo.objectives lists them, with their rollouts)
    train.objective = "grpo"
    train.batch_size = 1  # samples per micro-step per process
    train.learning_rate = 3e-4
    train.adam_beta1 = 0.9
    train.adam_beta2 = 0.999
    train.adam_weight_decay = 1e-4
    train.adam_epsilon = 1e-8
    train.gradient_accumulation_steps = 1  # in minibatches; x trained timesteps micro-steps
    train.max_grad_norm = 1.0
    train.max_nonfinite_steps = 10  # optimizer steps in a row with a NaN/inf gradient norm (each skipped) that stop the run
    train.num_inner_epochs = 1
    # advantages: (r - group mean) / (std + 1e-4), the std of all rewards (global_std) or of the group
    train.per_prompt_stat_tracking = True  # group by prompt (GRPO); False: normalise over the whole batch (DDPO)
    train.global_std = True
    train.adv_clip_max = 5.0
    train.clip_range = 1e-4
    train.timestep_fraction = 1.0  # trained steps = int(stored steps * fraction)
    train.timestep_strategy = "first"  # "first" (high-noise steps), "random" per sample, or "stratified" (AWM)
    train.timestep_count = 0  # "stratified": this many strata over steps 1 .. int(steps * fraction)
    # KL to the reference (the model with the LoRA disabled), averaged over elements (flow_grpo.objectives.grpo):
    # kl_form "exact" is the Gaussian KL of the two steps (std including sqrt(-dt)); "paper" is the original
    # flow_grpo's scale, (mean - mean_ref)^2 / (2 std_t^2) without the step's sqrt(-dt): -dt times the exact
    # KL for the sde step (1/7 to 1/30 of it over 10 steps), equal for cps. The paper's betas (config/grpo.py,
    # count.py) were tuned with "paper", so those configs use it.
    train.beta = 0.0
    train.kl_form = "exact"
    train.ema = True
    train.ema_decay = 0.9
    train.ema_update_interval = 8  # optimizer steps
    train.ema_warmup = False  # the evaluation EMA's decay min(ema_decay, (1 + n) / (10 + n)) (DiffusionNFT)
    # each objective's own settings, in its own section (config.train.nft.mix_strength, ...): declared, with their
    # defaults and meaning, in its file (flow_grpo/objectives/<name>.py, SETTINGS)
    for objective in OBJECTIVES.values():
        for section, settings in objective.settings_sections().items():
            train[section] = ml_collections.ConfigDict(settings)
    return train


def epoch_sizes(config, gpu_number: int, groups_per_epoch: int, num_image_per_prompt: int, max_batch: int):
    """``groups_per_epoch`` groups of ``num_image_per_prompt`` images per epoch on ``gpu_number`` processes, at most
    ``max_batch`` images per process and batch, two optimizer steps per epoch (the original's epochs, every family),
    recorded in ``config.scale`` so that a launch on another number of processes keeps the same epoch
    (``flow_grpo.training.sizes.size_epoch``: the batch arithmetic)."""
    config.scale.update(groups_per_epoch=groups_per_epoch, group_size=num_image_per_prompt, max_batch=max_batch,
                        optimizer_steps_per_epoch=2)
    size_epoch(config, gpu_number)
    return config


def optimizer_steps(config, per_epoch: int):
    """Accumulate an epoch's minibatches into ``per_epoch`` optimizer steps (at least one minibatch each)."""
    accumulate_into_steps(config, per_epoch)
    return config


# task -> (prompt folder under dataset/, rewards {name: weight}, their options); the shapes and toy worlds and the
# editing datasets (config/shapes.py, toy.py, kontext.py) set their own
TASKS = {
    "geneval": ("geneval", {"geneval": 1.0}, {}),
    "ocr": ("ocr", {"ocr": 1.0}, {}),
    "pickscore": ("pickscore", {"pickscore": 1.0}, {}),
    "clipscore": ("pickscore", {"clipscore": 1.0}, {}),  # PickScore's prompts, scored by CLIP
    # GenEval-style counting prompts with the partial-credit GenEval reward (config/count.py)
    "counting_10": ("counting_10", {"geneval": 1.0}, {"geneval": {"strict": False, "binary": False}}),
    "counting_1_5": ("counting_1_5", {"geneval": 1.0}, {"geneval": {"strict": False, "binary": False}}),
    "counting_6_10": ("counting_6_10", {"geneval": 1.0}, {"geneval": {"strict": False, "binary": False}}),
    "tiny": ("tiny", {"brightness": 1.0}, {}),  # the CPU runs of config/tiny.py
}


def task(config, name: str):
    """The task's prompts (``config.dataset``) and rewards (``config.reward_fn``, ``config.reward_options``)."""
    folder, rewards, options = TASKS[name]
    config.dataset = os.path.join(REPO, "dataset", folder)
    config.reward_fn = dict(rewards)
    config.reward_options = {reward: dict(values) for reward, values in options.items()}
    return config
