"""Flow-GRPO for Stable Diffusion 3 with LoRA (or full fine-tuning), on one process or many.

    accelerate launch scripts/train_sd3.py --config config/grpo.py:geneval_sd3
    python scripts/train_sd3.py --config config/tiny.py:tiny                      # CPU, tiny SD3
    accelerate launch --multi_gpu --num_processes 2 scripts/train_sd3.py --config config/tiny.py:tiny   # 2 CPU processes

Per epoch (DESIGN.md section 3):
  1. sample groups of k images per prompt with the SDE (prompts from the distributed k-repeat sampler, so a
     group spreads over processes), keeping every stored latent and log-prob; rewards run in a background
     thread while the next batch is sampled;
  2. gather rewards over processes and turn them into per-prompt advantages;
  3. train: one micro-step per (minibatch, trained timestep) re-scoring the stored transition, clipped
     policy loss + beta KL to the LoRA-disabled model, an optimizer step every accumulation window, EMA;
  4. every eval_freq epochs evaluate with the EMA weights (ODE, eval steps, eval guidance), every
     save_freq epochs write a checkpoint (and both after the last epoch).
Flow-GRPO-Fast, CPS and the counting variants are config flags of this script.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from flow_grpo import grpo
from flow_grpo.checkpoint import CheckpointError, resolve_resume
from flow_grpo.config_cli import ConfigError, parse_args
from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
from flow_grpo.diffusers_patch import encode_prompt
from flow_grpo.ema import EMA
from flow_grpo.flowrl import LogZHead
from flow_grpo.images import image_grid, to_pil
from flow_grpo.lora import LoraLoadError
from flow_grpo.plots import plot_curves
from flow_grpo.rewards import RewardError, multi_score
from flow_grpo.runlog import RunLogger, flat_config, truncate_metrics, unique_run_dir
from flow_grpo.seeding import generator_for
from flow_grpo.training.advantages import compute_advantages, gather_rewards, select_training_samples
from flow_grpo.training.checkpointing import load_training_checkpoint, save_training_checkpoint
from flow_grpo.training.evaluate import evaluate
from flow_grpo.training.models import ModelLoadError, inference_dtype, load_sd3_pipeline, prepare_transformer, trainable_state
from flow_grpo.training.rollout import collect_rollouts
from flow_grpo.training.update import LOSS_MODES, train_on_rollouts

USER_ERRORS = (ConfigError, ModelLoadError, LoraLoadError, RewardError, CheckpointError, FileNotFoundError, ValueError)


def check_config(config) -> None:
    """Fail before any heavy work on settings that cannot run."""
    if config.mixed_precision not in ("fp16", "bf16", "no"):
        raise ConfigError(f"config.mixed_precision {config.mixed_precision!r}; valid: fp16, bf16, no")
    if config.sample.sde_type not in ("sde", "cps"):
        raise ConfigError(f"config.sample.sde_type {config.sample.sde_type!r}; valid: sde, cps")
    if config.train.timestep_strategy not in ("first", "random"):
        raise ConfigError(f"config.train.timestep_strategy {config.train.timestep_strategy!r}; valid: first, random")
    if config.train.loss_mode not in LOSS_MODES:
        raise ConfigError(f"config.train.loss_mode {config.train.loss_mode!r}; valid: {', '.join(LOSS_MODES)}")
    if not config.dataset:
        raise ConfigError("config.dataset is empty: give a folder with train/test prompts")
    per_epoch = config.sample.train_batch_size * config.sample.num_batches_per_epoch
    window = config.train.batch_size * config.train.gradient_accumulation_steps
    if per_epoch % window:
        raise ConfigError(
            f"each process samples {per_epoch} images per epoch (sample.train_batch_size x sample.num_batches_per_epoch), "
            f"not a multiple of train.batch_size x train.gradient_accumulation_steps = {window}: "
            "an optimizer step would mix two epochs' samples"
        )


def num_train_timesteps(config) -> int:
    stored = config.sample.sde_window_size or config.sample.num_steps
    return max(1, int(stored * config.train.timestep_fraction))


def run_folder(config) -> tuple[str, str]:
    """The run folder (the resumed run's own when resuming) and the checkpoint to resume from, if any."""
    from accelerate.utils import broadcast_object_list

    resume_path = ""
    if config.resume_from:
        own = os.path.join(config.logdir, config.run_name, "checkpoints")
        resume_path = resolve_resume(config.resume_from, own)
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(resume_path)))
    else:
        run_dir = unique_run_dir(config.logdir, config.run_name)
    shared = [run_dir]
    broadcast_object_list(shared)  # timestamps may differ between processes: the main process decides
    return shared[0], resume_path


def main(argv=None) -> int:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available, is_wandb_available

    started = time.time()
    try:
        config = parse_args(argv)
        check_config(config)
        # cheap checks first: rewards by name and prompts, before loading any model
        reward_fn = multi_score(dict(config.reward_fn), dict(config.reward_options), config.reward_nan_policy)
        train_set, test_set = PromptDataset(config.dataset, "train"), PromptDataset(config.dataset, "test")
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    trackers = [t.strip() for t in config.log_with.split(",") if t.strip()]
    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    for name in [t for t in trackers if not available.get(t, False)]:
        print(f"warning: log_with {name!r} is not installed; logging to metrics.jsonl only for it", file=sys.stderr)
    trackers = [t for t in trackers if available.get(t, False)]
    if "wandb" in trackers:
        os.environ.setdefault("WANDB_MODE", config.wandb_mode)
    # cpu=True without a GPU makes a multi-process launch (accelerate launch --multi_gpu, torchrun) use gloo
    PartialState(cpu=not torch.cuda.is_available())
    try:
        run_dir, resume_path = run_folder(config)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=run_dir, logging_dir=os.path.join(run_dir, "tracking")),
        # one optimizer step per gradient_accumulation_steps minibatches x trained timesteps micro-steps
        gradient_accumulation_steps=config.train.gradient_accumulation_steps * num_train_timesteps(config),
    )
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(config.seed)

    try:
        logger = RunLogger(run_dir, config) if accelerator.is_main_process else None
        # ---- model: frozen SD3 + trainable LoRA ----
        pipeline = load_sd3_pipeline(config.pretrained.model, config.pretrained.revision)
        pipeline.set_progress_bar_config(disable=True)
        transformer, trainable_params, frozen_reference = prepare_transformer(pipeline, config, accelerator.device)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model_dtype = inference_dtype(config.mixed_precision)
    # FlowRL: log Z(prompt) from the pooled prompt embedding, trained and saved with the rest
    log_z = None
    if config.train.loss_mode == "flowrl":
        torch.manual_seed(config.seed)
        pooled_dim = pipeline.transformer.config.pooled_projection_dim
        log_z = LogZHead(pooled_dim, config.train.proj_hidden, config.train.proj_layer, config.train.proj_dropout).to(accelerator.device)
        trainable_params = trainable_params + list(log_z.parameters())
    optimizer = torch.optim.AdamW(
        trainable_params, lr=config.train.learning_rate, betas=(config.train.adam_beta1, config.train.adam_beta2),
        weight_decay=config.train.adam_weight_decay, eps=config.train.adam_epsilon,
    )
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        if config.use_lora:
            print("error: FSDP shards weights, which a LoRA run does not need: launch with multi_gpu.yaml or deepspeed_zero2.yaml", file=sys.stderr)
            return 2
        if config.train.ema:
            print("warning: EMA is off under FSDP (the sharded weights have no full copy to average)", file=sys.stderr)
            config.train.ema = False
    ddp_transformer, optimizer = accelerator.prepare(transformer, optimizer)
    unwrapped = accelerator.unwrap_model(ddp_transformer)
    trainable_named = trainable_state(unwrapped, config.use_lora)
    if log_z is not None:
        trainable_named.update({f"log_z.{n}": p for n, p in log_z.named_parameters()})
        log_z = accelerator.prepare(log_z)
    if [id(p) for p in trainable_named.values()] != [id(p) for p in trainable_params]:
        raise RuntimeError("trainable parameters and their names are out of order")
    ema = EMA(trainable_params, config.train.ema_decay, config.train.ema_update_interval, names=list(trainable_named)) if config.train.ema else None
    sampler = DistributedKRepeatSampler(
        len(train_set), config.sample.train_batch_size, config.sample.num_image_per_prompt,
        accelerator.num_processes, accelerator.process_index, seed=config.seed,
    )
    tracker = grpo.PerPromptStatTracker(global_std=config.sample.global_std)
    negative_embeds = encode_prompt(pipeline, [""], config.max_sequence_length, accelerator.device)
    checkpoints_dir = os.path.join(run_dir, "checkpoints")

    first_epoch, global_step = 0, 0
    if resume_path:
        state = load_training_checkpoint(
            path=resume_path, accelerator=accelerator, trainable_named=trainable_named, optimizer=optimizer,
            ema=ema, sampler=sampler, tracker=tracker, config=config,
        )
        first_epoch, global_step = state["epoch"], state["global_step"]
        if accelerator.is_main_process:
            truncate_metrics(logger.metrics_path, first_epoch + 1)
            print(f"resumed from {resume_path}: epoch {first_epoch}, step {global_step}")
    if trackers:
        accelerator.init_trackers(config.run_name, config=flat_config(config), init_kwargs={"wandb": {"dir": run_dir}})
    if accelerator.is_main_process:
        print(f"run folder: {run_dir} | {accelerator.num_processes} process(es) | {len(train_set)} train / {len(test_set)} test prompts")

    def save(epoch):
        return save_training_checkpoint(
            accelerator=accelerator, checkpoints_dir=checkpoints_dir, global_step=global_step, epoch=epoch,
            unwrapped=unwrapped, prepared=ddp_transformer, trainable_named=trainable_named, optimizer=optimizer, ema=ema,
            sampler=sampler, tracker=tracker, config=config,
        )

    def run_eval(epoch):
        context = ema.swapped_in() if ema is not None else torch.no_grad()
        grid = os.path.join(run_dir, "samples", f"eval_epoch_{epoch:05d}.png")
        with context:
            return evaluate(
                pipeline=pipeline, transformer=unwrapped, dataset=test_set, reward_fn=reward_fn, config=config,
                accelerator=accelerator, negative_embeds=negative_embeds, grid_path=grid,
            )

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")
    last_checkpoint = None
    try:
        if first_epoch == 0:  # the base model
            eval_metrics = run_eval(0)
            if accelerator.is_main_process:
                logger.log({"epoch": 0, "global_step": 0, **eval_metrics})
        for epoch in range(first_epoch, config.num_epochs):
            epoch_start = time.time()
            # 1. rollouts: k images per prompt with the SDE, log-probs kept, rewards in the background
            samples = collect_rollouts(
                pipeline=pipeline, transformer=unwrapped, dataset=train_set, sampler=sampler, reward_fn=reward_fn,
                executor=executor, config=config, accelerator=accelerator, epoch=epoch,
                negative_embeds=negative_embeds, model_dtype=model_dtype,
            )
            # 2. advantages over the rewards of all processes, grouped by prompt
            all_rewards = gather_rewards(accelerator, samples["rewards"])
            advantages, advantage_stats = compute_advantages(
                accelerator=accelerator, rewards_avg=samples["rewards"]["avg"], prompt_ids=samples["prompt_ids"],
                prompts_of_dataset=train_set.prompts, config=config, tracker=tracker,
            )
            update_generator = generator_for(config.seed, "update", epoch, accelerator.process_index)
            keep, keep_stats = select_training_samples(
                accelerator, advantages, update_generator, config.train.batch_size * config.train.gradient_accumulation_steps
            )
            # 3. the update: clipped policy loss + beta KL, per (minibatch, timestep) micro-step
            train_stats, global_step = train_on_rollouts(
                transformer=ddp_transformer, unwrapped=unwrapped, frozen_reference=frozen_reference, samples=samples,
                advantages=advantages, keep=keep, config=config, accelerator=accelerator, optimizer=optimizer,
                trainable_params=trainable_params, ema=ema, global_step=global_step, generator=update_generator,
                negative_embeds=negative_embeds, model_dtype=model_dtype, log_z=log_z,
            )

            done = epoch + 1  # completed epochs: the row's "epoch"
            finite = {k: v[torch.isfinite(torch.as_tensor(v))] for k, v in all_rewards.items()}
            row = {"epoch": done, "global_step": global_step, "reward_mean": float(finite["avg"].mean()),
                   "reward_std": float(finite["avg"].std())}
            row.update({f"reward_{k}_mean": float(v.mean()) for k, v in finite.items() if k != "avg"})
            if samples["reward_info"]:  # e.g. batch_geneval_tag_counting: this epoch's accuracy on counting prompts
                with np.errstate(all="ignore"):
                    row.update({f"batch_{k}": float(np.nanmean(v)) for k, v in gather_rewards(accelerator, samples["reward_info"]).items()
                                if np.isfinite(v).any()})
            row.update({**train_stats, **advantage_stats, **keep_stats, **samples["timing"]})
            row["epoch_time_s"] = time.time() - epoch_start
            # 4. evaluation with the EMA weights, and checkpoints
            if done % config.eval_freq == 0 or done == config.num_epochs:
                row.update(run_eval(done))
                if accelerator.is_main_process:
                    image_grid(to_pil(samples["images"][:16]), cols=4).save(logger.path("samples", f"train_epoch_{done:05d}.png"))
            if accelerator.is_main_process:
                logger.log(row)
                print(
                    f"epoch {done}/{config.num_epochs} step {global_step} reward {row['reward_mean']:.4f} "
                    f"approx_kl {row['approx_kl']:.2e} clipfrac {row['clipfrac']:.3f} kl {row['kl_loss']:.2e} "
                    + (f"eval {row['eval_reward_avg']:.4f} " if "eval_reward_avg" in row else "")
                    + f"({row['epoch_time_s']:.1f}s)"
                )
            if trackers:
                accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=global_step)
            if done % config.save_freq == 0 or done == config.num_epochs:
                last_checkpoint = save(done)
    except RewardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        executor.shutdown(wait=False, cancel_futures=True)

    if accelerator.is_main_process:
        rows = logger.read_metrics()
        plot_curves(
            rows,
            [("reward", ["reward_mean", "eval_reward_avg"]), ("losses", ["policy_loss", "kl_loss"]),
             ("on-policy diagnostics", ["approx_kl", "clipfrac"])],
            logger.path("plots", "curves.png"),
            title=config.run_name,
        )
        evals = [r for r in rows if "eval_reward_avg" in r]
        logger.write_summary(
            {
                "run_name": config.run_name,
                "epochs": max(first_epoch, config.num_epochs),
                "global_step": global_step,
                "eval_reward_first": evals[0]["eval_reward_avg"] if evals else None,
                "eval_reward_last": evals[-1]["eval_reward_avg"] if evals else None,
                "last_checkpoint": last_checkpoint,
                "num_processes": accelerator.num_processes,
                "wall_clock_s": time.time() - started,
            }
        )
        print(f"done: {global_step} optimizer steps; checkpoint {last_checkpoint}")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
