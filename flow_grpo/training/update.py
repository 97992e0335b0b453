"""The one update loop, for every world and every objective (docs/architecture.md, "The update").

Per inner epoch: shuffle this process's kept samples into minibatches of ``train.batch_size`` (each group's
rows side by side for an objective that ``keeps_groups_together``, DGPO) and choose each sample's trained
timesteps; per minibatch, ``objective.prepare`` once, then one micro-step per trained
timestep ``j`` with ``objective.loss``. An optimizer step follows every ``gradient_accumulation_steps x J``
micro-steps (accelerate's ``accumulate``: no all-reduce before the window's last micro-step, the loss divided
by the window), with the gradient norm clipped to ``train.max_grad_norm``, then the EMA. The loop holds no
objective-specific code: what to re-score and how is the objective's.

A window whose gradient norm is not finite (a NaN or inf in a loss or a gradient on any process: the
gradients are all-reduced before the norm, so every process sees the same norm and decides alike) never
reaches the weights: the optimizer step, the EMA and the step count are skipped, and ``nonfinite_steps``
counts it in the epoch's row. ``train.max_nonfinite_steps`` of them in a row stop the run
(:class:`NonFiniteUpdates`, naming the epoch and step) before a checkpoint of bad weights could be written.
Under fp16 the grad scaler's own skip (which also lowers its scale) takes the step's place.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from flow_grpo.ema import EMA
from flow_grpo.errors import InputError
from flow_grpo.objectives import Minibatch, Objective
from flow_grpo.flow_policy import FlowPolicy
from flow_grpo.rollout_types import Rollout
from flow_grpo.seeding import derive_seed
from flow_grpo.training.phases import Timer, no_timer

# the first micro-step of an epoch re-scores samples of the current policy: ratio 1, and KL 0 before any update
FIRST_MICRO_STEP_KEYS = {"approx_kl": "first_microstep_approx_kl", "clipfrac": "first_microstep_clipfrac",
                         "kl_loss": "first_microstep_kl"}
REQUIRED_KEYS = ("policy_loss", "approx_kl", "clipfrac")  # metrics.jsonl always has them (NaN if not computed)


class NonFiniteUpdates(RuntimeError):
    """Too many optimizer steps in a row had a non-finite gradient norm; the weights hold the last good step."""


@dataclasses.dataclass
class Learner:
    """What the update trains and with what."""

    accelerator: object  # accelerate's Accelerator, set up with the run's accumulation (RunSizes)
    policy: FlowPolicy
    objective: Objective
    optimizer: torch.optim.Optimizer  # as prepared by accelerate
    parameters: list[torch.nn.Parameter]  # everything the optimizer trains: gradient clipping's scope
    ema: EMA | None = None
    timer: Timer = no_timer  # per-phase clock (the benchmark's); a no-op in training
    nonfinite_in_a_row: int = 0  # skipped optimizer steps since the last good one, across epochs

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.policy.trained_module, *self.objective.trained_modules.values()]


def select_train_timesteps(num_steps: int, timestep_fraction: float, strategy: str, batch_size: int,
                           generator: torch.Generator | None = None, count: int = 0) -> torch.Tensor:
    """Indices of the stored steps to train, shape [batch_size, J].

    ``first``: the first (high-noise) ``J = int(num_steps * timestep_fraction)`` steps (at least 1) for every
    sample; ``random``: an independent random subset of J per sample, in step order; ``stratified`` (AWM's
    discrete times): J = ``count`` strata spanning steps 1 to ``int(num_steps * timestep_fraction)`` (the
    pure-noise step 0 left out), one step drawn uniformly in each stratum, per sample.
    """
    num_train = max(1, int(num_steps * timestep_fraction))
    if num_train > num_steps:
        raise InputError(f"timestep_fraction {timestep_fraction} asks for {num_train} of {num_steps} steps")
    if strategy == "first":
        return torch.arange(num_train).expand(batch_size, num_train).clone()
    if strategy == "random":
        scores = torch.rand(batch_size, num_steps, generator=generator)
        return torch.sort(torch.argsort(scores, dim=1)[:, :num_train], dim=1).values
    if strategy == "stratified":
        if not 1 <= count < num_train:
            raise InputError(f"stratified timesteps need 1 <= train.timestep_count < {num_train}, got {count}")
        bounds = torch.linspace(1, num_train, count + 1).long()
        lower, upper = bounds[:-1], bounds[1:]
        return lower + (torch.rand(batch_size, count, generator=generator) * (upper - lower)).long()
    raise InputError(f"unknown timestep strategy {strategy!r}; valid: first, random, stratified")


def make_minibatches(rollout: Rollout, advantages: torch.Tensor, keep: torch.Tensor, train_config,
                     generator: torch.Generator, device, by_group: bool = False) -> list[Minibatch]:
    """``keep`` shuffled into minibatches of ``train_config.batch_size``, each row with its trained steps.
    ``by_group``: the shuffled rows regrouped so that each group's rows are side by side (groups in the order
    they first appear; no extra random draw)."""
    order = keep[torch.randperm(len(keep), generator=generator)]
    if by_group:
        groups = rollout.group_ids[order]
        first_seen = {int(g): i for i, g in reversed(list(enumerate(groups.tolist())))}
        rank = torch.tensor([first_seen[int(g)] for g in groups])
        order = order[torch.sort(rank, stable=True).indices]
    steps = select_train_timesteps(rollout.num_steps, train_config.timestep_fraction, train_config.timestep_strategy,
                                   len(order), generator, train_config.timestep_count)
    size, base_seed = train_config.batch_size, generator.initial_seed()  # the seed: no draw, GRPO's stream unchanged
    return [
        Minibatch(rollout=rollout, rows=order[s : s + size], steps=steps[s : s + size],
                  advantages=advantages[order[s : s + size]].to(device), device=device,
                  noise_seed=derive_seed(base_seed, tuple(order[s : s + size].tolist())))
        for s in range(0, len(order), size)
    ]


def update(learner: Learner, rollout: Rollout, advantages: torch.Tensor, keep: torch.Tensor, config,
           generator: torch.Generator, global_step: int) -> tuple[dict, int]:
    """Train on this process's samples ``keep`` of ``rollout`` with their ``advantages`` [N].

    Returns the epoch's update statistics (each the mean over micro-steps, or over minibatches for what
    ``objective.prepare`` reports, plus what ``objective.end_update`` reports after the update) and the new
    global step (optimizer steps so far).
    """
    accelerator, policy, objective, timer = learner.accelerator, learner.policy, learner.objective, learner.timer
    stats = defaultdict(list)
    skipped = 0
    for module in learner.modules:
        module.train()
    for _ in range(config.train.num_inner_epochs):
        minibatches = make_minibatches(rollout, advantages, keep, config.train, generator, accelerator.device,
                                       by_group=objective.keeps_groups_together)
        num_micro_steps = minibatches[0].num_micro_steps if minibatches else 0
        if minibatches and accelerator.gradient_accumulation_steps != config.train.gradient_accumulation_steps * num_micro_steps:
            raise RuntimeError("the accelerator's accumulation does not match gradient_accumulation_steps x trained timesteps")
        bar = tqdm(total=len(minibatches) * num_micro_steps, desc="training", leave=False,
                   disable=not (config.progress and accelerator.is_main_process))
        for minibatch in minibatches:
            with accelerator.autocast(), timer("train_forward_backward"):
                prepared, prepare_stats = objective.prepare(policy, minibatch)
            for key, value in prepare_stats.items():
                stats[key].append(value)
            for j in range(num_micro_steps):
                with accelerator.accumulate(*learner.modules), accelerator.autocast():
                    with timer("train_forward_backward"):
                        loss, step_stats = objective.loss(policy, minibatch, j, prepared)
                        accelerator.backward(loss)
                    finite = True
                    with timer("optimizer"):
                        if accelerator.sync_gradients:
                            grad_norm = accelerator.clip_grad_norm_(learner.parameters, config.train.max_grad_norm)
                            if grad_norm is not None:  # None under DeepSpeed, whose engine checks overflow itself
                                grad_norm = torch.as_tensor(grad_norm, dtype=torch.float32).detach()
                                finite = bool(torch.isfinite(grad_norm))  # the same on every process
                                if finite:
                                    stats["grad_norm"].append(grad_norm)
                        if finite or accelerator.scaler is not None:
                            learner.optimizer.step()  # accelerate's optimizer steps only when gradients are synchronised
                        learner.optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients and not finite:
                    skipped += 1
                    learner.nonfinite_in_a_row += 1
                    if learner.nonfinite_in_a_row >= config.train.max_nonfinite_steps > 0:
                        raise NonFiniteUpdates(
                            f"{learner.nonfinite_in_a_row} optimizer steps in a row had a non-finite gradient norm (NaN or inf) "
                            f"after global step {global_step}; config.train.max_nonfinite_steps = {config.train.max_nonfinite_steps}. "
                            "None reached the weights: the last checkpoint holds good ones (lower the learning rate, "
                            "check the rewards, or raise the limit)")
                elif accelerator.sync_gradients:
                    learner.nonfinite_in_a_row = 0
                    global_step += 1
                    if learner.ema is not None:
                        with timer("ema"):
                            learner.ema.step(global_step)
                for key, value in step_stats.items():
                    stats[key].append(value)
                bar.update()
        bar.close()
    for module in learner.modules:
        module.eval()
    return {**summarise(stats), "nonfinite_steps": skipped, **objective.end_update(global_step)}, global_step


def summarise(stats: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Means over the update (one host synchronisation), the first micro-step's on-policy checks, and the
    keys every metrics row has."""
    keys = [key for key, values in stats.items() if values]
    firsts = [(key, name) for key, name in FIRST_MICRO_STEP_KEYS.items() if stats.get(key)]
    device = next((v.device for key in keys for v in stats[key] if isinstance(v, torch.Tensor)), "cpu")

    def scalar(value):
        return torch.as_tensor(value, device=device).float().reshape(())

    values = [torch.stack([scalar(v) for v in stats[key]]).mean() for key in keys]
    values += [scalar(stats[key][0]) for key, _ in firsts]
    host = torch.stack(values).cpu().tolist() if values else []  # the one copy to the host
    logged = dict(zip(keys, host[: len(keys)]))
    logged.update({name: value for (_, name), value in zip(firsts, host[len(keys):])})
    logged.setdefault("kl_loss", 0.0)
    for key in REQUIRED_KEYS:
        logged.setdefault(key, float("nan"))
    return logged
