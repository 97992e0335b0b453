"""Flow-GRPO and its relatives for any backbone (SD3, FLUX.1, Qwen-Image, Wan2.1 video, FLUX.1 Kontext editing)
with LoRA (or full fine-tuning), on one process or many. ``scripts/train_sd3.py`` is this script under its original name.

    accelerate launch scripts/train.py --config config/grpo.py:geneval_sd3
    accelerate launch scripts/train.py --config config/flux.py:pickscore_flux
    python scripts/train.py --config config/tiny.py:tiny                      # CPU, tiny SD3
    python scripts/train.py --config config/tiny.py:tiny_flux                 # CPU, tiny FLUX.1-dev
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config config/tiny.py:tiny_qwenimage   # 2 CPU processes

The family is ``config.pretrained.family`` or the model folder's ``model_index.json``
(docs/backbones.md); nothing below knows which it is.

Per epoch (docs/architecture.md, "Data flow"):
  1. rollouts: groups of k images per prompt (prompts from the distributed k-repeat sampler, so a group
     spreads over processes): the SDE with each stored step's latents and log-prob for the objectives that
     re-score steps, the ODE keeping only the clean latents for the forward-process ones; rewards run in a
     background thread while the next batch is sampled;
  2. advantages: rewards gathered over processes, normalised within each prompt's group; samples whose
     advantage is 0 are dropped;
  3. update: the objective (``config.train.objective``: grpo, grpo_guard, mixgrpo, flowrl, nft, awm, dpo, dgpo,
     sft, grpo_gardo or nft_gardo; the registry flow_grpo.objectives.OBJECTIVES) on one micro-step per
     (minibatch, trained timestep), an optimizer step every accumulation window, then the EMA;
  4. every eval_freq epochs evaluate with the EMA weights (ODE, eval steps, eval guidance), every
     save_freq epochs write a checkpoint (and both after the last epoch).
Flow-GRPO-Fast, CPS, the counting variants and the objectives are config flags of this one script.

Stopping (docs/operations.md; flow_grpo.training.stopping): on a stop signal (config.stop_signals) the epoch
in flight is abandoned during its rollouts or completed after its update, a checkpoint is written and the
exit status is 75 (resume_from=latest continues exactly). A reward that fails or misses
config.reward_deadline_s: the last completed epoch is checkpointed, exit 1. A collective with no answer
within config.dist_timeout_s: an error naming the missing ranks, exit 1. Non-finite gradients: the step is
skipped (train.max_nonfinite_steps in a row stop the run, exit 1). A checkpoint that cannot be written: exit 2,
the earlier checkpoints intact.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_grpo.backbones import load_backbone
from flow_grpo.backbones.trainable import inference_dtype
from flow_grpo.checkpoint import folders, resolve_resume
from flow_grpo.checkpoint.training_state import TrainingState, load_training_checkpoint, save_training_checkpoint
from flow_grpo.config_cli import ConfigError, parse_args
from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
from flow_grpo.errors import InputError
from flow_grpo.objectives import check_train_config
from flow_grpo.plots import plot_training_curves
from flow_grpo.rewards import RewardError, multi_score
from flow_grpo.runlog import RunLogger, flat_config, truncate_metrics, unique_run_dir
from flow_grpo.seeding import generator_for
from flow_grpo.training.advantages import compute_advantages, gather_rewards, select_training_samples
from flow_grpo.collectives import agree
from flow_grpo.training.evaluate import evaluate_rewards
from flow_grpo.training.assembly import assemble_run, check_samples, prepare_model, settle_distributed_config
from flow_grpo.training.rollout import RewardThread, RolloutCollector
from flow_grpo.training.sizes import run_sizes
from flow_grpo.training.stopping import (EXIT_PREEMPTED, STOP_REQUESTED, EpochAbandoned, StopRequest,
                                         describe_collective_failure, is_collective_failure, monitor_group, parse_signals)
from flow_grpo.training.update import NonFiniteUpdates, update
from flow_grpo.videos import save_samples

# what a user can fix: a message and exit status 2; anything else is a bug and keeps its traceback
USER_ERRORS = (InputError, RewardError, FileNotFoundError)


def check_config(config) -> None:
    """Fail before any heavy work on settings that cannot run."""
    check_train_config(config.train)
    choices = {"mixed_precision": ("fp16", "bf16", "no"), "sample.sde_type": ("sde", "cps"),
               "train.timestep_strategy": ("first", "random", "stratified")}
    for key, valid in choices.items():
        section, _, name = key.rpartition(".")
        value = (config[section] if section else config)[name]
        if value not in valid:
            raise ConfigError(f"config.{key} {value!r}; valid: {', '.join(valid)}")
    if not config.dataset:
        raise ConfigError("config.dataset is empty: give a folder with train/test prompts")
    try:
        parse_signals(config.stop_signals)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for key in ("dist_timeout_s", "reward_deadline_s"):
        if config[key] < 0:
            raise ConfigError(f"config.{key} must be 0 (no limit) or a number of seconds, got {config[key]}")


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


def available_trackers(config) -> list[str]:
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    wanted = [t.strip() for t in config.log_with.split(",") if t.strip()]
    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    for name in [t for t in wanted if not available.get(t, False)]:
        print(f"warning: log_with {name!r} is not installed; logging to metrics.jsonl only for it", file=sys.stderr)
    if "wandb" in wanted:
        os.environ.setdefault("WANDB_MODE", config.wandb_mode)
    return [t for t in wanted if available.get(t, False)]


def reward_metrics(accelerator, rollout) -> dict:
    """The epoch's reward columns (and numeric reward info, e.g. GenEval's per-tag accuracy) over all processes."""
    gathered = gather_rewards(accelerator, rollout.rewards)
    finite = {k: v[np.isfinite(v)] for k, v in gathered.items()}
    row = {"reward_mean": float(finite["avg"].mean()), "reward_std": float(finite["avg"].std())}
    row.update({f"reward_{k}_mean": float(v.mean()) for k, v in finite.items() if k != "avg"})
    if rollout.reward_info:  # e.g. batch_geneval_tag_counting: this epoch's accuracy on counting prompts
        with np.errstate(all="ignore"):
            row.update({f"batch_{k}": float(np.nanmean(v)) for k, v in gather_rewards(accelerator, rollout.reward_info).items()
                        if np.isfinite(v).any()})
    return row


PREEMPTED_MARKER = "preempted.json"


def mark_preempted(run_dir: str, stop: StopRequest, epochs_done: int) -> str:
    """``preempted.json`` in the run folder: under ``accelerate launch`` the launcher exits 1 whatever its
    processes' status, so a job script that requeues checks this file instead (removed when the run resumes).
    Returns the checkpoint it names, the newest on disk."""
    found = folders.list_checkpoints(os.path.join(run_dir, "checkpoints"))
    checkpoint = found[-1][1] if found else ""
    folders.write_json(os.path.join(run_dir, PREEMPTED_MARKER), {"signal": stop.received, "epochs_done": epochs_done,
                                                                  "checkpoint": checkpoint, "exit_status": EXIT_PREEMPTED})
    return checkpoint


# (label, metrics key, format) of the per-epoch line
PRINTED_METRICS = (("loss", "policy_loss", ".3e"), ("approx_kl", "approx_kl", ".2e"), ("clipfrac", "clipfrac", ".3f"), ("kl", "kl_loss", ".2e"))


def main(argv=None) -> int:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import ProjectConfiguration

    started = time.time()
    try:
        config = parse_args(argv)
        check_config(config)
        # cheap checks first: the prompts, then the rewards (which may load a model), before the model
        train_set, test_set = PromptDataset(config.dataset, "train"), PromptDataset(config.dataset, "test")
        reward_fn = multi_score(dict(config.reward_fn), dict(config.reward_options), config.reward_nan_policy,
                                config.reward_frame_interval)
        trackers = available_trackers(config)
        # cpu=True without a GPU makes a multi-process launch (accelerate launch --multi_gpu, torchrun) use gloo
        # the process group's timeout bounds every collective: a process that hangs or is lost ends the run
        timeout = {"timeout": datetime.timedelta(seconds=config.dist_timeout_s)} if config.dist_timeout_s else {}
        sizes = run_sizes(config, PartialState(cpu=not torch.cuda.is_available(), **timeout).num_processes)
        run_dir, resume_path = run_folder(config)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=config.mixed_precision, log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=run_dir, logging_dir=os.path.join(run_dir, "tracking")),
        gradient_accumulation_steps=sizes.micro_steps_per_optimizer_step,
    )
    try:
        settle_distributed_config(accelerator, config)  # before config.json records the config
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(config.seed)

    # ---- the model: the backbone's frozen parts + a trainable LoRA (or every weight), the objective's heads ----
    try:
        # frozen weights load in the inference dtype, the VAE and a fully fine-tuned transformer in float32 (a 20 B
        # model loaded in float32 first needs 80 GB of RAM per process)
        dtype = inference_dtype(config.mixed_precision)
        load_dtypes = {"default": dtype, "vae": torch.float32, "transformer": dtype if config.use_lora else torch.float32}
        backbone = load_backbone(config.pretrained.model, config.pretrained.family, config.pretrained.revision, load_dtypes)
        for dataset in (train_set, test_set):
            check_samples(backbone, config, dataset)
        model = prepare_model(backbone, config, accelerator.device)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger = RunLogger(run_dir, config) if accelerator.is_main_process else None  # the run folder, once the model is in
    try:
        run = assemble_run(backbone, model, config, accelerator)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    objective, ema = run.objective, run.ema
    sampler = DistributedKRepeatSampler(len(train_set), config.sample.train_batch_size, config.sample.num_image_per_prompt,
                                        accelerator.num_processes, accelerator.process_index, seed=config.seed)
    state = TrainingState(accelerator=accelerator, unwrapped=run.unwrapped, prepared=run.prepared, use_lora=config.use_lora,
                          trainable=run.trainable, optimizer=run.optimizer, ema=ema, sampler=sampler, objective=objective,
                          pipeline_class=type(backbone.pipeline))
    checkpoints_dir = os.path.join(run_dir, "checkpoints")

    first_epoch, global_step = 0, 0
    if resume_path:
        resumed = load_training_checkpoint(state, resume_path)
        first_epoch, global_step = resumed["epoch"], resumed["global_step"]
        if accelerator.is_main_process:
            truncate_metrics(logger.metrics_path, first_epoch + 1)
            if os.path.exists(os.path.join(run_dir, PREEMPTED_MARKER)):
                os.remove(os.path.join(run_dir, PREEMPTED_MARKER))
            print(f"resumed from {resume_path}: epoch {first_epoch}, step {global_step}")
    if trackers:
        # the project: wandb's project, tensorboard's folder under tracking/; the run keeps its own name
        accelerator.init_trackers(config.wandb_project, config=flat_config(config),
                                  init_kwargs={"wandb": {"dir": run_dir, "name": config.run_name}})
    if accelerator.is_main_process:
        print(f"run folder: {run_dir} | {backbone.summary()} | objective {objective.name} | "
              f"{len(train_set)} train / {len(test_set)} test prompts")
        print(sizes.describe())

    def run_eval(epoch):
        context = ema.swapped_in() if ema is not None else torch.no_grad()
        with context:
            return evaluate_rewards(backbone=backbone, transformer=run.sampling_transformer, dataset=test_set, reward_fn=reward_fn,
                            config=config, accelerator=accelerator, grid_path=os.path.join(run_dir, "samples", f"eval_epoch_{epoch:05d}.png"))

    stop = StopRequest(parse_signals(config.stop_signals))
    monitor = monitor_group(min(config.dist_timeout_s or 60.0, 60.0))  # asks which rank is missing after a timeout
    executor = RewardThread()
    collector = RolloutCollector(backbone=backbone, transformer=run.sampling_transformer, negative=run.negative, dataset=train_set,
                                 sampler=sampler, reward_fn=reward_fn, executor=executor, accelerator=accelerator, config=config,
                                 stop=stop)
    last_checkpoint, train_seconds, done = None, 0.0, first_epoch  # done: completed epochs
    saved_step = global_step if resume_path else None  # the global step of the newest checkpoint on disk
    where = "the base model's evaluation"  # what the run is doing, for an error that interrupts it

    def checkpoint(epoch_done: int) -> None:
        nonlocal last_checkpoint, saved_step, where
        where = f"the checkpoint after epoch {epoch_done}"
        last_checkpoint = save_training_checkpoint(state, checkpoints_dir, epoch_done, global_step, config.num_checkpoint_limit)
        saved_step = global_step

    def out_of_time(seconds: float) -> bool:
        """config.max_minutes of training (epochs, without evaluation) spent, decided on the main process."""
        from accelerate.utils import broadcast_object_list

        flag = [bool(config.max_minutes) and seconds >= 60 * config.max_minutes]
        broadcast_object_list(flag)
        return flag[0]

    try:
        if first_epoch == 0:  # the base model
            eval_metrics = run_eval(0)
            if accelerator.is_main_process:
                logger.log({"epoch": 0, "global_step": 0, **eval_metrics})
        # a time-bounded run has no meaningful epoch total: count epochs and say when it stops instead of a bogus ETA
        timed = {"desc": f"{objective.name} epochs (stops after {config.max_minutes:g} min of training)",
                 "bar_format": "{desc}: {n_fmt} [{elapsed}, {rate_fmt}]"} if config.max_minutes else {"desc": f"{objective.name} epochs"}
        epochs = tqdm(range(first_epoch, config.num_epochs), initial=first_epoch, total=config.num_epochs,
                      disable=not (config.progress and accelerator.is_main_process), **timed)
        for epoch in epochs:
            epoch_start = time.time()
            # where the epoch begins: an abandoned epoch sets the sampler and generators back here
            sampler_at_start, rng_at_start = sampler.state_dict(), folders.capture_rng_state()
            # 1. rollouts: k images per prompt (the SDE with log-probs, or the ODE for the forward-process
            #    objectives) from the weights the objective samples with; rewards in the background
            where = f"epoch {epoch + 1}: rollouts"
            try:
                with objective.rollout_weights(global_step):
                    rollout = collector.collect(epoch, stochastic=objective.sde_rollouts, store_means=objective.needs_step_means)
            except EpochAbandoned as abandoned:
                # nothing was trained yet: the weights are the last completed epoch's, and so is the checkpoint
                sampler.load_state_dict(sampler_at_start)
                folders.restore_rng_state(rng_at_start)
                if saved_step != global_step:
                    checkpoint(epoch)
                if abandoned.status == STOP_REQUESTED:
                    if accelerator.is_main_process:
                        written = mark_preempted(run_dir, stop, epoch)
                        print(f"stopped on {stop.received or 'a signal to another process'} during epoch {epoch + 1}'s rollouts "
                              f"(abandoned); checkpoint {written}; exit {EXIT_PREEMPTED}: "
                              "resume with config.resume_from=latest", file=sys.stderr)
                    return EXIT_PREEMPTED
                print(f"error: {abandoned.error or 'a reward failed on another process'}; epoch {epoch + 1} is abandoned and "
                      f"epoch {epoch}, the last completed, is checkpointed (resume with config.resume_from=latest)", file=sys.stderr)
                return 1
            where = f"epoch {epoch + 1}: update"
            # 2. advantages over the rewards of all processes, grouped by prompt; zero-advantage samples dropped
            advantages, advantage_stats = compute_advantages(accelerator, rollout, config.train)
            advantages = objective.training_advantages(rollout, advantages)  # DPO / SFT: their chosen samples
            update_generator = generator_for(config.seed, "update", epoch, accelerator.process_index)
            keep, keep_stats = select_training_samples(accelerator, advantages, update_generator, sizes.minibatch * sizes.accumulation,
                                                       objective.skips_zero_advantages)
            # 3. the update: the objective per (minibatch, trained timestep) micro-step
            train_stats, global_step = update(run.learner, rollout, advantages, keep, config, update_generator, global_step)

            done = epoch + 1  # completed epochs: the row's "epoch"
            row = {"epoch": done, "global_step": global_step, **reward_metrics(accelerator, rollout), **train_stats,
                   **advantage_stats, **keep_stats, **rollout.timing, **rollout.step_metrics(), "epoch_time_s": time.time() - epoch_start}
            train_seconds += row["epoch_time_s"]
            preempted = agree(accelerator, stop.local_status()) == STOP_REQUESTED
            last = done == config.num_epochs or out_of_time(train_seconds)
            # 4. evaluation with the EMA weights, and checkpoints (a stopped run: the evaluation only when due)
            if done % config.eval_freq == 0 or (last and not preempted):
                where = f"epoch {done}: evaluation"
                row.update(run_eval(done))
                if accelerator.is_main_process:
                    save_samples(rollout.images[:16], logger.path("samples", f"train_epoch_{done:05d}.png"), cols=4,
                                 labels=rollout.prompts[:16])
            if accelerator.is_main_process:
                logger.log(row)
                # the objective's measured quantities only (the forward-process ones have no ratio: no approx_kl)
                measured = "".join(f"{name} {row[key]:{form}} " for name, key, form in PRINTED_METRICS
                                   if np.isfinite(row.get(key, float("nan"))))
                tqdm.write(
                    f"epoch {done}/{config.num_epochs} step {global_step} reward {row['reward_mean']:.4f} {measured}"
                    + (f"eval {row['eval_reward_avg']:.4f} " if "eval_reward_avg" in row else "")
                    + f"({row['epoch_time_s']:.1f}s)"
                )
            if trackers:
                accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=global_step)
            if done % config.save_freq == 0 or last or preempted:
                checkpoint(done)
            if preempted:
                if accelerator.is_main_process:
                    mark_preempted(run_dir, stop, done)
                    print(f"stopped on {stop.received or 'a signal to another process'} after epoch {done} (completed); checkpoint "
                          f"{last_checkpoint}; exit {EXIT_PREEMPTED}: resume with config.resume_from=latest", file=sys.stderr)
                return EXIT_PREEMPTED
            if last:
                break
    except RewardError as error:  # the base model's evaluation
        print(f"error: {error}", file=sys.stderr)
        return 1
    except NonFiniteUpdates as error:
        print(f"error: epoch {done + 1}: {error}", file=sys.stderr)
        return 1
    except folders.CheckpointWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if not is_collective_failure(error):
            raise
        print("error: " + describe_collective_failure(error, accelerator.process_index, accelerator.num_processes,
                                                      config.dist_timeout_s, where, monitor), file=sys.stderr, flush=True)
        return 1
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        stop.restore()

    if accelerator.is_main_process:
        rows = logger.read_metrics()
        plot_training_curves(rows, "eval_reward_avg", logger.path("plots", "curves.png"), title=config.run_name)
        evals = [r for r in rows if "eval_reward_avg" in r]
        logger.write_summary(
            {
                "run_name": config.run_name,
                "run_dir": run_dir,
                "objective": objective.name,
                "epochs": done,
                "global_step": global_step,
                "eval_reward_first": evals[0]["eval_reward_avg"] if evals else None,
                "eval_reward_last": evals[-1]["eval_reward_avg"] if evals else None,
                "last_checkpoint": last_checkpoint,
                "num_processes": accelerator.num_processes,
                "train_seconds": train_seconds,
                "wall_clock_s": time.time() - started,
            }
        )
        print(f"done: {global_step} optimizer steps; checkpoint {last_checkpoint}")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
