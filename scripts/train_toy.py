"""Flow-GRPO (and its relatives) on the toy worlds: pretrain a small flow-matching base, then fine-tune it.

    python scripts/train_toy.py --config config/toy.py:line_shapes
    python scripts/train_toy.py --config config/toy.py:moons_unlearn --config.train.beta=0.1
    python scripts/train_toy.py --config config/toy.py:four_modes_flowrl

The same parts as scripts/train.py on a 1D or 2D world (docs/architecture.md): rollouts with the shared
sampling loop, group advantages, and the one update loop with the objective ``config.train.objective``; only
the model (an MLP behind ``flow_grpo.toy.policy.ToyPolicy``) and the world are the toy's. Writes the run
folder (config.json, metrics.jsonl, summary.json, plots/, samples/, checkpoints/model.safetensors).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from flow_grpo.config_cli import ConfigError, parse_args
from flow_grpo.data import DistributedKRepeatSampler, read_prompt_file
from flow_grpo.errors import InputError
from flow_grpo.objectives import OBJECTIVES, build_objective, check_train_config
from flow_grpo.plots import plot_histogram, plot_training_curves
from flow_grpo.runlog import RunLogger, unique_run_dir
from flow_grpo.sampling_loop import sample_with_logprob
from flow_grpo.sde import SDEParams
from flow_grpo.seeding import generator_for
from flow_grpo.toy.four_modes import FourModesWorld
from flow_grpo.toy.line_shapes import LineShapesWorld
from flow_grpo.toy.model import ToyVelocityNet, pretrain_flow_matching
from flow_grpo.toy.moons import MoonsWorld
from flow_grpo.toy.policy import ToyPolicy
from flow_grpo.toy.collector import collect_toy_rollout
from flow_grpo.toy.schedule import sigma_schedule, toy_velocity
from flow_grpo.training.advantages import compute_advantages, select_training_samples
from flow_grpo.training.sizes import run_sizes
from flow_grpo.training.assembly import head_parameters, make_learner, make_optimizer
from flow_grpo.training.update import update

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


def group_size(world, sample_config) -> int:
    """A group is k samples of one prompt; in a one-prompt world it is k trajectories from one initial noise
    (same_latent), or k samples with their own noises (groups_of_k), or else the whole batch."""
    if len(world.train_prompts) == 1 and not (sample_config.same_latent or sample_config.groups_of_k):
        return sample_config.train_batch_size
    return sample_config.num_image_per_prompt


@torch.no_grad()
def evaluate_toy(model, world, config, prompts) -> tuple[dict, torch.Tensor, list[str]]:
    """ODE sampling with the eval step count from fixed noise: the same noise before and after training."""
    prompts = [p for p in prompts for _ in range(config.sample.eval_samples_per_prompt)]
    generator = torch.Generator().manual_seed(config.seed + 1)
    noise = torch.randn(len(prompts), world.data_dim, generator=generator)
    samples = sample_with_logprob(
        toy_velocity(model, world.encode(prompts)), noise, sigma_schedule(config.sample.eval_num_steps), SDEParams(0.0)
    ).final_latents
    rewards = world.reward(samples, prompts)
    metrics = {"eval_reward_mean": float(rewards.mean()), "eval_reward_std": float(rewards.std())}
    metrics.update({f"eval_{k}": v for k, v in world.metrics(samples, prompts).items()})
    return metrics, samples, prompts


def main(argv=None) -> int:
    from accelerate import Accelerator

    try:
        config = parse_args(argv)
        world = build_world(config.world)
        check_train_config(config.train)
        sizes = run_sizes(config, processes=1, group_size=group_size(world, config.sample))
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.time()
    torch.manual_seed(config.seed)
    logger = RunLogger(unique_run_dir(config.logdir, config.run_name or config.world.name), config)
    print(f"run folder: {logger.run_dir} | objective {config.train.objective}")
    print(sizes.describe())

    # 1. the base model, pretrained by flow matching (deterministic)
    model = ToyVelocityNet(world.data_dim, world.cond_dim, config.model.hidden_dim, config.model.num_layers)
    pretrain_flow_matching(
        model, world.sample_base_data, config.pretrain.num_steps, config.pretrain.batch_size,
        config.pretrain.learning_rate, config.seed, progress=config.progress,
    )
    pretrain_time = time.time() - started
    eval_before, samples_before, eval_prompts = evaluate_toy(model, world, config, world.test_prompts)
    logger.log({"epoch": 0, "global_step": 0, **eval_before})
    print(f"base model: eval reward {eval_before['eval_reward_mean']:.4f} (pretrained in {pretrain_time:.1f}s)")

    # 2. the policy (the model and a frozen copy of the base as the reference) and the objective
    objective_class = OBJECTIVES[config.train.objective]
    reference = copy.deepcopy(model).requires_grad_(False) if objective_class.needs_reference(config.train) else None
    policy = ToyPolicy(model, reference, SDEParams(config.sample.noise_level, config.sample.sde_type))
    torch.manual_seed(config.seed)  # objective heads (FlowRL's log Z) start from the seed
    objective = build_objective(config.train, pooled_dim=world.cond_dim)
    model_parameters = dict(model.named_parameters())
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=sizes.micro_steps_per_optimizer_step)
    optimizer = accelerator.prepare(make_optimizer([*model_parameters.values(), *head_parameters(objective).values()], config.train))
    learner = make_learner(accelerator, policy, objective, optimizer, model_parameters, config.train)
    ema = learner.ema
    # a one-prompt world fills each batch with its one prompt
    k = config.sample.train_batch_size if len(world.train_prompts) == 1 else config.sample.num_image_per_prompt
    sampler = DistributedKRepeatSampler(len(world.train_prompts), config.sample.train_batch_size, k, seed=config.seed)

    def evaluated_weights():
        return ema.swapped_in() if ema is not None else contextlib.nullcontext()

    # 3. the epochs: rollouts -> advantages -> update
    global_step, all_advantages = 0, []
    progress = tqdm(range(1, config.num_epochs + 1), desc=f"{objective.name} epochs", disable=not config.progress)
    for epoch in progress:
        epoch_start = time.time()
        with objective.rollout_weights(global_step):
            rollout = collect_toy_rollout(model, world, sampler, config.sample, generator_for(config.seed, "rollout", epoch),
                                          stochastic=objective.sde_rollouts, iteration=epoch - 1)
        advantages, advantage_stats = compute_advantages(accelerator, rollout, config.train)
        all_advantages.append(advantages.numpy())
        advantages = objective.training_advantages(rollout, advantages)
        update_generator = generator_for(config.seed, "update", epoch)
        keep, keep_stats = select_training_samples(accelerator, advantages, update_generator, sizes.minibatch * sizes.accumulation,
                                                   objective.skips_zero_advantages)
        train_stats, global_step = update(learner, rollout, advantages, keep, config, update_generator, global_step)
        rewards = rollout.rewards["avg"]
        row = {"epoch": epoch, "global_step": global_step, "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
               **train_stats, **advantage_stats, **keep_stats, **rollout.step_metrics(), "epoch_time_s": time.time() - epoch_start}
        if epoch % config.eval_freq == 0 or epoch == config.num_epochs:
            with evaluated_weights():
                row.update(evaluate_toy(model, world, config, world.test_prompts)[0])
        logger.log(row)
        progress.set_postfix(reward=f"{row['reward_mean']:.3f}", eval=f"{row.get('eval_reward_mean', float('nan')):.3f}")

    # 4. before vs after, plots, summary
    with evaluated_weights():
        eval_after, samples_after, _ = evaluate_toy(model, world, config, world.test_prompts)
        save_file(model.state_dict(), logger.path("checkpoints", "model.safetensors"))
    rows = logger.read_metrics()
    plot_training_curves(rows, "eval_reward_mean", logger.path("plots", "curves.png"), title=config.run_name)
    plot_histogram(np.concatenate(all_advantages), logger.path("plots", "advantages.png"), "advantages over all epochs", "advantage")
    world.plot_samples(samples_before, samples_after, eval_prompts, logger.path("plots", "samples_before_after.png"))
    np.savez(
        logger.path("samples", "eval_samples.npz"), before=samples_before.numpy(), after=samples_after.numpy(),
        prompts=np.asarray(eval_prompts, dtype=str),
    )
    summary = {
        "run_name": config.run_name,
        "run_dir": logger.run_dir,
        "world": config.world.name,
        "objective": objective.name,
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
