"""Flow-GRPO on the toy worlds: pretrain a small flow-matching base, then fine-tune it with GRPO.

    python scripts/train_toy.py --config config/toy.py:line_shapes
    python scripts/train_toy.py --config config/toy.py:moons_unlearn --config.train.beta=0.1

Per epoch: sample groups of trajectories with the SDE (storing every latent and log-prob), score the final
samples, turn rewards into group-relative advantages, then take clipped policy-gradient micro-steps, one per
(minibatch, trained timestep), recomputing each step's log-prob with the same code that sampled it.
Writes the run folder of DESIGN.md section 4.
"""

from __future__ import annotations

import copy
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from flow_grpo import grpo
from flow_grpo.config_cli import ConfigError, parse_args
from flow_grpo.data import DistributedKRepeatSampler, read_prompt_file
from flow_grpo.plots import plot_curves, plot_histogram
from flow_grpo.runlog import RunLogger, unique_run_dir
from flow_grpo.flowrl import LogZHead
from flow_grpo.toy.four_modes import FourModesWorld
from flow_grpo.toy.line_shapes import LineShapesWorld
from flow_grpo.toy.model import ToyVelocityNet, pretrain_flow_matching
from flow_grpo.toy.moons import MoonsWorld
from flow_grpo.toy.sampling import sample_trajectory, sigma_schedule
from flow_grpo.toy.update import train_on_epoch

WORLDS = ("line_shapes", "moons", "four_modes")


def build_world(world_config):
    if world_config.name == "line_shapes":
        return LineShapesWorld(
            read_prompt_file(os.path.join(world_config.dataset, "train.txt")),
            read_prompt_file(os.path.join(world_config.dataset, "test.txt")),
            base_std=world_config.base_std,
            reward_width=world_config.reward_width,
        )
    if world_config.name == "moons":
        return MoonsWorld(world_config.reward, data_noise=world_config.data_noise, reward_width=world_config.reward_width)
    if world_config.name == "four_modes":
        return FourModesWorld(base_std=world_config.base_std, reward_width=world_config.reward_width)
    raise ConfigError(f"unknown config.world.name {world_config.name!r}; valid: {', '.join(WORLDS)}")


@torch.no_grad()
def evaluate(model, world, config, prompts) -> tuple[dict, torch.Tensor, list[str]]:
    """ODE sampling with the eval step count from fixed noise: the same noise before and after training."""
    prompts = [p for p in prompts for _ in range(config.sample.eval_samples_per_prompt)]
    generator = torch.Generator().manual_seed(config.seed + 1)
    noise = torch.randn(len(prompts), world.data_dim, generator=generator)
    samples, _, _ = sample_trajectory(
        model, world.encode(prompts), noise, sigma_schedule(config.sample.eval_num_steps), noise_level=0.0
    )
    rewards = world.reward(samples, prompts)
    metrics = {"eval_reward_mean": float(rewards.mean()), "eval_reward_std": float(rewards.std())}
    metrics.update({f"eval_{k}": v for k, v in world.metrics(samples, prompts).items()})
    return metrics, samples, prompts


def collect_samples(model, world, config, sampler, generator):
    """One epoch of on-policy data: trajectories, log-probs, rewards and group keys."""
    batches = []
    for _ in range(config.sample.num_batches_per_epoch):
        prompts = [world.train_prompts[i] for i in sampler.next_indices()]
        k = config.sample.num_image_per_prompt
        if config.sample.same_latent:
            # the group is k trajectories from one initial noise; its key names that noise
            order = sorted(range(len(prompts)), key=lambda i: prompts[i])
            prompts = [prompts[i] for i in order]
            group_noise = torch.randn(len(prompts) // k, world.data_dim, generator=generator)
            noise = group_noise.repeat_interleave(k, dim=0)
            keys = [f"{p}#{sampler.counter}.{i // k}" for i, p in enumerate(prompts)]
        else:
            noise = torch.randn(len(prompts), world.data_dim, generator=generator)
            keys = list(prompts)
        cond = world.encode(prompts)
        samples, latents, log_probs, means = sample_trajectory(
            model, cond, noise, sigma_schedule(config.sample.num_steps), config.sample.noise_level,
            config.sample.sde_type, generator, return_means=True,
        )
        batches.append(
            {"prompts": prompts, "keys": keys, "cond": cond, "latents": latents, "log_probs": log_probs,
             "means": means, "rewards": world.reward(samples, prompts)}
        )
    return {
        "prompts": [p for b in batches for p in b["prompts"]],
        "keys": [key for b in batches for key in b["keys"]],
        "cond": torch.cat([b["cond"] for b in batches]),
        "latents": torch.cat([b["latents"] for b in batches]),
        "log_probs": torch.cat([b["log_probs"] for b in batches]),
        "means": torch.cat([b["means"] for b in batches]),
        "rewards": np.concatenate([b["rewards"] for b in batches]),
    }


def compute_advantages(epoch_data, config, tracker) -> torch.Tensor:
    if config.train.advantage_mode == "grpo":
        advantages = tracker.update(epoch_data["keys"], epoch_data["rewards"])
    elif config.train.advantage_mode == "ddpo":
        advantages = grpo.batch_advantages(epoch_data["rewards"])
    else:
        raise ConfigError(f"unknown config.train.advantage_mode {config.train.advantage_mode!r}; valid: grpo, ddpo")
    return torch.as_tensor(grpo.clip_advantages(advantages, config.train.adv_clip_max), dtype=torch.float32)


def main(argv=None) -> int:
    try:
        config = parse_args(argv)
        world = build_world(config.world)
        if config.train.loss_mode not in ("grpo", "grpo_guard", "flowrl"):
            raise ConfigError(f"unknown config.train.loss_mode {config.train.loss_mode!r}; valid: grpo, grpo_guard, flowrl")
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.time()
    torch.manual_seed(config.seed)
    logger = RunLogger(unique_run_dir(config.logdir, config.run_name or config.world.name), config)
    print(f"run folder: {logger.run_dir}")

    # 1. the base model, pretrained by flow matching (deterministic)
    model = ToyVelocityNet(world.data_dim, world.cond_dim, config.model.hidden_dim, config.model.num_layers)
    pretrain_flow_matching(
        model, world.sample_base_data, config.pretrain.num_steps, config.pretrain.batch_size,
        config.pretrain.learning_rate, config.seed, progress=config.progress,
    )
    pretrain_time = time.time() - started
    needs_reference = config.train.beta > 0 or config.train.loss_mode == "flowrl"
    reference = copy.deepcopy(model).requires_grad_(False) if needs_reference else None
    log_z = (
        LogZHead(world.cond_dim, config.train.proj_hidden, config.train.proj_layer, config.train.proj_dropout)
        if config.train.loss_mode == "flowrl" else None
    )
    eval_before, samples_before, eval_prompts = evaluate(model, world, config, world.test_prompts)
    logger.log({"epoch": 0, "global_step": 0, **eval_before})
    print(f"base model: eval reward {eval_before['eval_reward_mean']:.4f} (pretrained in {pretrain_time:.1f}s)")

    # 2. GRPO
    parameters = list(model.parameters()) + (list(log_z.parameters()) if log_z is not None else [])
    optimizer = torch.optim.Adam(parameters, lr=config.train.learning_rate)
    # a single-prompt world (moons) fills each batch with its one prompt; groups then come from same_latent
    k = config.sample.batch_size if len(world.train_prompts) == 1 else config.sample.num_image_per_prompt
    sampler = DistributedKRepeatSampler(len(world.train_prompts), config.sample.batch_size, k, seed=config.seed)
    tracker = grpo.PerPromptStatTracker(global_std=config.train.global_std)
    generator = torch.Generator().manual_seed(config.seed + 2)
    global_step, all_advantages = 0, []
    progress = tqdm(range(1, config.num_epochs + 1), desc="GRPO epochs", disable=not config.progress)
    for epoch in progress:
        epoch_start = time.time()
        epoch_data = collect_samples(model, world, config, sampler, generator)
        advantages = compute_advantages(epoch_data, config, tracker)
        all_advantages.append(advantages.numpy())
        train_stats, optimizer_steps = train_on_epoch(model, reference, log_z, optimizer, epoch_data, advantages, config, generator)
        global_step += optimizer_steps
        row = {
            "epoch": epoch,
            "global_step": global_step,
            "reward_mean": float(epoch_data["rewards"].mean()),
            "reward_std": float(epoch_data["rewards"].std()),
            **train_stats,
            "epoch_time_s": time.time() - epoch_start,
        }
        if epoch % config.eval_freq == 0 or epoch == config.num_epochs:
            eval_metrics, _, _ = evaluate(model, world, config, world.test_prompts)
            row.update(eval_metrics)
        logger.log(row)
        progress.set_postfix(reward=f"{row['reward_mean']:.3f}", eval=f"{row.get('eval_reward_mean', float('nan')):.3f}")

    # 3. before vs after, plots, summary
    eval_after, samples_after, _ = evaluate(model, world, config, world.test_prompts)
    rows = logger.read_metrics()
    plot_curves(
        rows,
        [("reward", ["reward_mean", "eval_reward_mean"]), ("losses", ["policy_loss", "kl_loss"]),
         ("on-policy diagnostics", ["approx_kl", "clipfrac"])],
        logger.path("plots", "curves.png"),
        title=config.run_name,
    )
    plot_histogram(np.concatenate(all_advantages), logger.path("plots", "advantages.png"), "advantages over all epochs", "advantage")
    world.plot_samples(samples_before, samples_after, eval_prompts, logger.path("plots", "samples_before_after.png"))
    np.savez(
        logger.path("samples", "eval_samples.npz"), before=samples_before.numpy(), after=samples_after.numpy(),
        prompts=np.asarray(eval_prompts, dtype=str),
    )
    save_file(model.state_dict(), logger.path("checkpoints", "model.safetensors"))
    summary = {
        "run_name": config.run_name,
        "world": config.world.name,
        "epochs": config.num_epochs,
        "global_step": global_step,
        "eval_reward_before": eval_before["eval_reward_mean"],
        "eval_reward_after": eval_after["eval_reward_mean"],
        "pretrain_time_s": pretrain_time,
        "total_time_s": time.time() - started,
    }
    for key in eval_before:
        if key not in ("eval_reward_mean", "eval_reward_std"):
            name = key[len("eval_"):]
            summary[f"{name}_before"], summary[f"{name}_after"] = eval_before[key], eval_after[key]
    if getattr(world, "classifier_accuracy", None) is not None:
        summary["classifier_accuracy"] = world.classifier_accuracy
    logger.write_summary(summary)
    print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
