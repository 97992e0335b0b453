"""Defaults of scripts/train_sd3.py, close to the original Flow-GRPO's. Experiments in grpo.py, count.py,
tiny.py start from ``default()`` and change what they need."""

import ml_collections

from flow_grpo.config_cli import config_by_name
from flow_grpo.lora import SD3_LORA_TARGET_MODULES


def default():
    config = ml_collections.ConfigDict()

    # ---- run ----
    config.run_name = ""  # folder under logdir; default: the experiment's name
    config.logdir = "logs"
    config.seed = 42
    config.num_epochs = 100000  # stop by hand, or set a number
    config.save_freq = 20  # epochs between checkpoints (a final one is always written)
    config.eval_freq = 20  # epochs between evaluations (epoch 0, the base model, included)
    config.num_checkpoint_limit = 5  # newest complete checkpoints kept; 0 keeps all
    config.resume_from = ""  # a checkpoint folder, a run folder, or "latest" (this run's newest)
    config.mixed_precision = "fp16"  # "fp16", "bf16" or "no"; sampling and training both run under it
    config.allow_tf32 = True
    config.progress = True  # tqdm bars
    config.log_with = "tensorboard"  # comma-separated: tensorboard, wandb; "" for metrics.jsonl only
    config.wandb_project = "flow_grpo"
    config.wandb_mode = "online"  # or "offline" (sync later with `wandb sync`)

    # ---- model ----
    config.pretrained = ml_collections.ConfigDict()
    config.pretrained.model = "stabilityai/stable-diffusion-3.5-medium"  # hub id, local folder, or "builtin:tiny"
    config.pretrained.revision = ""
    config.resolution = 512
    config.max_sequence_length = 128  # T5 tokens
    config.use_lora = True  # False: full fine-tuning of the transformer
    config.lora = ml_collections.ConfigDict()
    config.lora.rank = 32
    config.lora.alpha = 64
    config.lora.target_modules = SD3_LORA_TARGET_MODULES
    config.lora_path = ""  # start the trained LoRA from these weights
    config.merge_lora_path = ""  # a cold-start LoRA fused into the base weights before RL

    # ---- data ----
    config.dataset = ""  # folder with train/test prompts (.txt or _metadata.jsonl)
    config.per_prompt_stat_tracking = True  # GRPO groups by prompt; False: whole-batch normalisation (DDPO)

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
    config.sample.noise_level = 0.7
    config.sample.sde_type = "sde"  # "sde" (Flow-GRPO) or "cps"
    config.sample.same_latent = False  # one initial noise per prompt (shared across processes)
    config.sample.sde_window_size = 0  # Flow-GRPO-Fast: > 0 makes only one window of steps stochastic
    config.sample.sde_window_range = (0, 10)
    config.sample.global_std = True  # advantages divided by the std of all rewards (else per group)
    config.sample.decode_batch_size = 0  # VAE decode chunk; 0: whole batch

    # ---- training ----
    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 1  # samples per micro-step per process
    config.train.learning_rate = 3e-4
    config.train.adam_beta1 = 0.9
    config.train.adam_beta2 = 0.999
    config.train.adam_weight_decay = 1e-4
    config.train.adam_epsilon = 1e-8
    config.train.gradient_accumulation_steps = 1  # in minibatches; x num_train_timesteps micro-steps
    config.train.max_grad_norm = 1.0
    config.train.num_inner_epochs = 1
    config.train.cfg = True  # train with the sampling guidance scale (False: no CFG in training)
    config.train.adv_clip_max = 5.0
    config.train.clip_range = 1e-4
    config.train.timestep_fraction = 1.0  # trained steps = int(stored steps * fraction)
    config.train.timestep_strategy = "first"  # "first" (high-noise steps) or "random" per sample
    # KL to the reference (the model with the LoRA disabled): exact Gaussian KL of the step means, averaged
    # over elements, with the transition std including sqrt(-dt) (flow_grpo.grpo.gaussian_kl). Versions of
    # the original divide by std_t^2 without the dt factor; for a 10-step run the exact KL is 1/|dt|, about
    # 7 to 30 times, larger, so the original's betas (kept below) regularise more strongly here.
    config.train.beta = 0.0
    config.train.ema = True
    config.train.ema_decay = 0.9
    config.train.ema_update_interval = 8  # optimizer steps
    config.train.loss_mode = "grpo"  # "grpo", "grpo_guard" (regulated ratio), "flowrl" (trajectory balance)
    config.train.tb_coef = 15.0  # FlowRL: delta = log Z + mean_t log p - tb_coef * A - mean_t log p_ref
    config.train.importance_sampling = True  # FlowRL: w = min(exp(sum_t log p - log p_old), 10)
    config.train.proj_layer = 3  # FlowRL: layers of the log Z head on the pooled prompt embedding
    config.train.proj_hidden = 512
    config.train.proj_dropout = 0.1
    config.train.gradient_checkpointing = False

    # ---- reward ----
    config.reward_fn = {}  # {"name": weight}; the weighted sum is "avg"
    config.reward_options = {}  # {"name": {option: value}} passed to each reward's factory
    config.reward_nan_policy = "error"  # "error": stop; "drop": leave NaN-reward images out of the update
    return config


def get_config(name):
    return config_by_name(name, globals())
