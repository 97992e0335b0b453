"""Flow-GRPO and its relatives for any backbone (flow_grpo.backbones.BACKBONES: SD3, FLUX.1, Qwen-Image, Wan2.1 video,
FLUX.1 Kontext editing, ...) with LoRA (or full fine-tuning), on one process or many. ``scripts/train.py`` is
this script under its original name.

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
  3. update: the objective (``config.train.objective``, one of flow_grpo.objectives.OBJECTIVES, listed by
     ``python -m flow_grpo.objectives``) on one micro-step per (minibatch, trained timestep), an optimizer step
     every accumulation window, then the EMA;
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

import dataclasses
import datetime
import functools
import os
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_grpo.backbones import load_backbone
from flow_grpo.backbones.trainable import inference_dtype
from flow_grpo.checkpoint import resolve_resume
from flow_grpo.checkpoint.training_state import TrainingState, load_training_checkpoint
from flow_grpo.config_cli import ConfigError, parse_args
from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
from flow_grpo.objectives import check_train_config
from flow_grpo.plots import plot_training_curves
from flow_grpo.rewards import multi_score
from flow_grpo.runlog import RunLogger, flat_config, truncate_metrics, unique_run_dir
from flow_grpo.seeding import generator_for
from flow_grpo.training.advantages import compute_advantages, gather_rewards, select_training_samples
from flow_grpo.training.assembly import assemble_run, check_samples, prepare_model, settle_distributed_config
from flow_grpo.training.evaluate import evaluate_rewards
from flow_grpo.training.collector import RewardThread, RolloutCollector
from flow_grpo.training.sizes import BATCH_KEYS, RunSizes, fit_to_processes, run_sizes
from flow_grpo.training.stopping import Supervisor, parse_signals
from flow_grpo.training.update import update
from flow_grpo.videos import save_samples


def main(argv=None) -> int:
    started = time.time()
    supervisor = Supervisor()  # the phase, the stop signals, the exit status of whatever ends the run (training/stopping.py)
    executor = RewardThread()  # rewards score one batch while the next one samples
    try:
        config = parse_args(argv, help_epilog=what_it_trains(), after_overrides=fit_epoch_to_launch)
        check_config(config)
        # cheap checks first: the prompts, then the rewards (which may load a model), before the processes and the model
        train_set, test_set = PromptDataset(config.dataset, "train"), PromptDataset(config.dataset, "test")
        reward_fn = multi_score(dict(config.reward_fn), dict(config.reward_options), config.reward_nan_policy,
                                config.reward_frame_interval)
        launch = launch_processes(config)
        accelerator, sizes = launch.accelerator, launch.sizes

        # ---- the model: the backbone's frozen parts + a trainable LoRA (or every weight), the objective's heads ----
        backbone = load_model(config)
        for dataset in (train_set, test_set):
            check_samples(backbone, config, dataset)
        model = prepare_model(backbone, config, accelerator.device)
        logger = RunLogger(launch.run_dir, config) if accelerator.is_main_process else None  # the run folder, once the model is in
        run = assemble_run(backbone, model, config, accelerator)
        objective = run.objective
        sampler = DistributedKRepeatSampler(len(train_set), config.sample.train_batch_size, config.sample.num_image_per_prompt,
                                            accelerator.num_processes, accelerator.process_index, seed=config.seed)
        state = TrainingState(accelerator=accelerator, unwrapped=run.unwrapped, prepared=run.prepared, use_lora=config.use_lora,
                              trainable=run.trainable, optimizer=run.optimizer, ema=run.ema, sampler=sampler, objective=objective,
                              pipeline_class=type(backbone.pipeline))
        first_epoch, global_step = resume(state, launch.resume_path, logger)
        supervisor.start(state, config, launch.run_dir, resumed_at=(first_epoch, global_step) if launch.resume_path else None)
        announce(launch, config, f"{backbone.summary()} | objective {objective.name} | {len(train_set)} train / {len(test_set)} test prompts")
        collector = RolloutCollector(backbone=backbone, transformer=run.sampling_transformer, negative=run.negative, dataset=train_set,
                                     sampler=sampler, reward_fn=reward_fn, executor=executor, accelerator=accelerator, config=config,
                                     stop=supervisor.stop)
        evaluate = functools.partial(evaluate_ema, run, backbone=backbone, transformer=run.sampling_transformer, dataset=test_set,
                                     reward_fn=reward_fn, config=config, accelerator=accelerator)

        if first_epoch == 0:  # the base model
            base_metrics = evaluate(grid_path=os.path.join(launch.run_dir, "samples", "eval_epoch_00000.png"))
            if logger:
                logger.log({"epoch": 0, "global_step": 0, **base_metrics})
        for epoch in epoch_bar(config, objective.name, first_epoch, accelerator.is_main_process):
            epoch_start = time.time()
            # 1. rollouts: k images per prompt (the SDE with log-probs, or the ODE for the forward-process
            #    objectives) from the weights the objective samples with; rewards in the background
            with supervisor.rollouts(epoch, global_step), objective.rollout_weights(global_step):
                rollout = collector.collect(epoch, stochastic=objective.sde_rollouts, store_means=objective.needs_step_means)
            # 2. advantages over the rewards of all processes, grouped by prompt; zero-advantage samples dropped
            advantages, advantage_stats = compute_advantages(accelerator, rollout, config.train)
            advantages = objective.training_advantages(rollout, advantages)  # DPO / SFT: their chosen samples
            update_generator = generator_for(config.seed, "update", epoch, accelerator.process_index)
            keep, keep_stats = select_training_samples(accelerator, advantages, update_generator, sizes.minibatch * sizes.accumulation,
                                                       objective.skips_zero_advantages)
            # 3. the update: the objective per (minibatch, trained timestep) micro-step
            train_stats, global_step = update(run.learner, rollout, advantages, keep, config, update_generator, global_step)
            # 4. log; evaluate with the EMA weights every eval_freq epochs and at the end; checkpoint every save_freq
            done = epoch + 1  # completed epochs: the row's "epoch"
            row = {"epoch": done, "global_step": global_step, **reward_metrics(accelerator, rollout), **train_stats,
                   **advantage_stats, **keep_stats, **rollout.timing, **rollout.step_metrics(), "epoch_time_s": time.time() - epoch_start}
            ending = supervisor.end_of_epoch(done, row["epoch_time_s"])  # "stop" (a stop signal), "last" or "", agreed
            if done % config.eval_freq == 0 or ending == "last":
                supervisor.phase = f"epoch {done}: evaluation"
                row.update(evaluate(grid_path=os.path.join(launch.run_dir, "samples", f"eval_epoch_{done:05d}.png")))
                if accelerator.is_main_process:
                    save_samples(rollout.images[:16], logger.path("samples", f"train_epoch_{done:05d}.png"), cols=4,
                                 labels=rollout.prompts[:16])
            log_epoch(row, logger, launch, config)
            supervisor.end_epoch(done, global_step, ending)  # the checkpoint when due; after a stop signal, exit 75
            if ending:
                break
        finish(logger, config, supervisor, {"objective": objective.name, "global_step": global_step,
                                            "num_processes": accelerator.num_processes, "wall_clock_s": time.time() - started})
        accelerator.end_training()
        return 0
    except Exception as error:
        status = supervisor.exit_status(error)  # its message printed; None: a bug, which keeps its traceback
        if status is None:
            raise
        return status
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        supervisor.close()


# ---- the setup main() delegates to ----


def fit_epoch_to_launch(config, overridden: set[str]) -> None:
    """The named config's epoch (``config.scale``) on the number of processes this run is launched with (the
    launcher's WORLD_SIZE), unless the command line sizes the batches itself."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    by_hand = sorted(overridden & set(BATCH_KEYS))
    lines = fit_to_processes(config, launched) if not by_hand else []
    if by_hand and config.get("scale", {}).get("processes", 0) not in (0, launched):
        lines = [f"config sized for {config.scale.processes} process(es), launched on {launched}: not resized, as "
                 f"the command line sets {', '.join(by_hand)}"]
    if os.environ.get("RANK", "0") == "0":
        for line in lines:
            print(line)


def what_it_trains() -> str:
    """--help's list of the registered families and objectives."""
    from flow_grpo.backbones import BACKBONES
    from flow_grpo.objectives import OBJECTIVES

    families = ", ".join(f"{name} ({cls.tiny_model})" for name, cls in BACKBONES.items())
    objectives = "\n".join(f"  {name:12s} {cls.summary}" for name, cls in OBJECTIVES.items())
    return (f"families (config.pretrained.family, or read from model_index.json; the tiny built-in model): {families}\n"
            f"objectives (config.train.objective):\n{objectives}")


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


@dataclasses.dataclass
class Launch:
    """The processes of a run and where it writes."""

    accelerator: object
    sizes: RunSizes
    run_dir: str  # the resumed run's own folder when resuming
    resume_path: str  # the checkpoint to resume from, or ""
    trackers: list[str]  # the installed ones of config.log_with


def launch_processes(config) -> Launch:
    """The process group (its timeout bounds every collective: a process that hangs or is lost ends the run), the
    derived sizes, the run folder, and the Accelerator."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import ProjectConfiguration

    trackers = available_trackers(config)
    # cpu=True without a GPU makes a multi-process launch (accelerate launch --multi_gpu, torchrun) use gloo
    timeout = {"timeout": datetime.timedelta(seconds=config.dist_timeout_s)} if config.dist_timeout_s else {}
    sizes = run_sizes(config, PartialState(cpu=not torch.cuda.is_available(), **timeout).num_processes)
    run_dir, resume_path = run_folder(config)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=config.mixed_precision, log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=run_dir, logging_dir=os.path.join(run_dir, "tracking")),
        gradient_accumulation_steps=sizes.micro_steps_per_optimizer_step,
    )
    settle_distributed_config(accelerator, config)  # before config.json records the config
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(config.seed)
    return Launch(accelerator=accelerator, sizes=sizes, run_dir=run_dir, resume_path=resume_path, trackers=trackers)


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


def load_model(config):
    """The backbone: frozen weights in the inference dtype, the VAE and a fully fine-tuned transformer in float32 (a
    20 B model loaded in float32 first needs 80 GB of RAM per process)."""
    dtype = inference_dtype(config.mixed_precision)
    load_dtypes = {"default": dtype, "vae": torch.float32, "transformer": dtype if config.use_lora else torch.float32}
    return load_backbone(config.pretrained.model, config.pretrained.family, config.pretrained.revision, load_dtypes)


def resume(state: TrainingState, resume_path: str, logger: RunLogger | None) -> tuple[int, int]:
    """(completed epochs, global step): (0, 0) for a new run, else the checkpoint's, its metrics rows after it dropped."""
    if not resume_path:
        return 0, 0
    resumed = load_training_checkpoint(state, resume_path)
    if logger:
        truncate_metrics(logger.metrics_path, resumed["epoch"] + 1)
        print(f"resumed from {resume_path}: epoch {resumed['epoch']}, step {resumed['global_step']}")
    return resumed["epoch"], resumed["global_step"]


def announce(launch: Launch, config, what: str) -> None:
    """The trackers started, and the run's folder, model and derived sizes printed before it starts."""
    if launch.trackers:
        # the project: wandb's project, tensorboard's folder under tracking/; the run keeps its own name
        launch.accelerator.init_trackers(config.wandb_project, config=flat_config(config),
                                         init_kwargs={"wandb": {"dir": launch.run_dir, "name": config.run_name}})
    if launch.accelerator.is_main_process:
        print(f"run folder: {launch.run_dir} | {what}")
        print(launch.sizes.describe())


# ---- the epoch's parts ----


def epoch_bar(config, objective_name: str, first_epoch: int, is_main: bool):
    # a time-bounded run has no meaningful epoch total: count epochs and say when it stops instead of a bogus ETA
    timed = {"desc": f"{objective_name} epochs (stops after {config.max_minutes:g} min of training)",
             "bar_format": "{desc}: {n_fmt} [{elapsed}, {rate_fmt}]"} if config.max_minutes else {"desc": f"{objective_name} epochs"}
    return tqdm(range(first_epoch, config.num_epochs), initial=first_epoch, total=config.num_epochs,
                disable=not (config.progress and is_main), **timed)


def evaluate_ema(run, **kwargs) -> dict:
    """The evaluation (ODE, eval steps, eval guidance) with the EMA weights swapped in, when the run keeps an EMA."""
    with run.ema.swapped_in() if run.ema is not None else torch.no_grad():
        return evaluate_rewards(**kwargs)


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


# (label, metrics key, format) of the per-epoch line
PRINTED_METRICS = (("loss", "policy_loss", ".3e"), ("approx_kl", "approx_kl", ".2e"), ("clipfrac", "clipfrac", ".3f"), ("kl", "kl_loss", ".2e"))


def log_epoch(row: dict, logger: RunLogger | None, launch: Launch, config) -> None:
    """metrics.jsonl and the epoch's line (the main process), and the trackers."""
    if logger:
        logger.log(row)
        # the objective's measured quantities only (the forward-process ones have no ratio: no approx_kl)
        measured = "".join(f"{name} {row[key]:{form}} " for name, key, form in PRINTED_METRICS
                           if np.isfinite(row.get(key, float("nan"))))
        tqdm.write(f"epoch {row['epoch']}/{config.num_epochs} step {row['global_step']} reward {row['reward_mean']:.4f} {measured}"
                   + (f"eval {row['eval_reward_avg']:.4f} " if "eval_reward_avg" in row else "")
                   + f"({row['epoch_time_s']:.1f}s)")
    if launch.trackers:
        launch.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["global_step"])


def finish(logger: RunLogger | None, config, supervisor: Supervisor, facts: dict) -> None:
    """The curves and summary.json (the main process)."""
    if not logger:
        return
    rows = logger.read_metrics()
    plot_training_curves(rows, "eval_reward_avg", logger.path("plots", "curves.png"), title=config.run_name)
    evals = [r for r in rows if "eval_reward_avg" in r]
    logger.write_summary({
        "run_name": config.run_name, "run_dir": logger.run_dir, "objective": facts["objective"], "epochs": supervisor.epochs_done,
        "global_step": facts["global_step"],
        "eval_reward_first": evals[0]["eval_reward_avg"] if evals else None,
        "eval_reward_last": evals[-1]["eval_reward_avg"] if evals else None,
        "last_checkpoint": supervisor.last_checkpoint, "num_processes": facts["num_processes"],
        "train_seconds": supervisor.train_seconds, "wall_clock_s": facts["wall_clock_s"],
    })
    print(f"done: {facts['global_step']} optimizer steps; checkpoint {supervisor.last_checkpoint}")


if __name__ == "__main__":
    sys.exit(main())
