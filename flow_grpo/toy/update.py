"""The toy trainer's policy update for each ``config.train.loss_mode``: ``grpo``, ``grpo_guard``, ``flowrl``.

The same objectives as the SD3 trainer, on an MLP policy: one micro-step per (minibatch, trained timestep),
re-scoring stored transitions with the code that sampled them.
"""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo import flowrl, grpo
from flow_grpo.toy.sampling import sigma_schedule, transition

LOSS_MODES = ("grpo", "grpo_guard", "flowrl")


def _step_args(epoch_data, rows, step, sigmas, config):
    sample, next_sample = epoch_data["latents"][rows, step], epoch_data["latents"][rows, step + 1]
    return sample, next_sample, sigmas[step], sigmas[step + 1], epoch_data["cond"][rows]


def train_on_epoch(model, reference, log_z, optimizer, epoch_data, advantages, config, generator) -> tuple[dict, int]:
    """Returns mean statistics and the number of optimizer steps taken."""
    if config.train.loss_mode not in LOSS_MODES:
        raise ValueError(f"unknown config.train.loss_mode {config.train.loss_mode!r}; valid: {', '.join(LOSS_MODES)}")
    sigmas = sigma_schedule(config.sample.num_steps)
    num_samples = len(advantages)
    a, sde_type = config.sample.noise_level, config.sample.sde_type
    stats = {k: [] for k in ("policy_loss", "kl_loss", "approx_kl", "clipfrac", "ratio_mean")}
    parameters = list(model.parameters()) + (list(log_z.parameters()) if log_z is not None else [])
    optimizer_steps = 0
    model.train()
    for _ in range(config.train.num_inner_epochs):
        order = torch.randperm(num_samples, generator=generator)
        train_steps = grpo.select_train_timesteps(
            config.sample.num_steps, config.train.timestep_fraction, config.train.timestep_strategy, num_samples, generator
        )
        num_train = train_steps.shape[1]
        starts = list(range(0, num_samples, config.train.batch_size))
        accumulate = config.train.gradient_accumulation_steps
        for m, start in enumerate(starts):
            rows = order[start : start + config.train.batch_size]
            adv = advantages[rows]
            # an optimizer step every `accumulate` minibatches; the last window may be shorter
            window = min(accumulate, len(starts) - (m - m % accumulate))
            if config.train.loss_mode == "flowrl":
                _flowrl_minibatch(model, reference, log_z, epoch_data, rows, train_steps[rows], adv, sigmas, config, stats, window)
            else:
                for j in range(num_train):
                    step = train_steps[rows, j]
                    sample, next_sample, sigma, sigma_next, cond = _step_args(epoch_data, rows, step, sigmas, config)
                    _, log_prob, mean, std_dev = transition(model, sample, sigma, sigma_next, cond, a, sde_type, prev_sample=next_sample)
                    old_log_prob = epoch_data["log_probs"][rows, step]
                    if config.train.loss_mode == "grpo":
                        policy_loss, ratio = grpo.clipped_policy_loss(log_prob, old_log_prob, adv, config.train.clip_range)
                    else:
                        old_mean = epoch_data["means"][rows, step]
                        ratio = grpo.grpo_guard_ratio(log_prob, old_log_prob, mean, old_mean, std_dev)
                        policy_loss = grpo.grpo_guard_loss(ratio, adv, config.train.clip_range, sigma_next - sigma)
                    loss = policy_loss
                    kl = torch.zeros(())
                    if config.train.beta > 0:
                        with torch.no_grad():
                            _, _, mean_ref, _ = transition(reference, sample, sigma, sigma_next, cond, a, sde_type, prev_sample=next_sample)
                        kl = grpo.gaussian_kl(mean, mean_ref, std_dev).mean()
                        loss = loss + config.train.beta * kl
                    (loss / (num_train * window)).backward()
                    diagnostics = grpo.policy_diagnostics(log_prob.detach(), old_log_prob, config.train.clip_range)
                    stats["policy_loss"].append(policy_loss.item())
                    stats["kl_loss"].append(kl.item())
                    stats["approx_kl"].append(diagnostics["approx_kl"].item())
                    stats["clipfrac"].append(float(torch.mean((torch.abs(ratio.detach() - 1) > config.train.clip_range).float())))
                    stats["ratio_mean"].append(ratio.detach().mean().item())
            if (m + 1) % accumulate == 0 or m + 1 == len(starts):
                torch.nn.utils.clip_grad_norm_(parameters, config.train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                optimizer_steps += 1
    model.eval()
    return {key: float(np.mean(values)) for key, values in stats.items() if values}, optimizer_steps


def _flowrl_minibatch(model, reference, log_z, epoch_data, rows, steps, adv, sigmas, config, stats, window=1):
    """Trajectory balance on one minibatch: delta and w without gradients, then one surrogate per timestep."""
    a, sde_type, num_train = config.sample.noise_level, config.sample.sde_type, steps.shape[1]
    with torch.no_grad():
        log_probs, ref_log_probs, old_log_probs = [], [], []
        for j in range(num_train):
            step = steps[:, j]
            sample, next_sample, sigma, sigma_next, cond = _step_args(epoch_data, rows, step, sigmas, config)
            log_probs.append(transition(model, sample, sigma, sigma_next, cond, a, sde_type, prev_sample=next_sample)[1])
            ref_log_probs.append(transition(reference, sample, sigma, sigma_next, cond, a, sde_type, prev_sample=next_sample)[1])
            old_log_probs.append(epoch_data["log_probs"][rows, step])
        log_probs, ref_log_probs, old_log_probs = map(lambda x: torch.stack(x, 1), (log_probs, ref_log_probs, old_log_probs))
        weight = flowrl.importance_weight(log_probs.sum(1), old_log_probs.sum(1)) if config.train.importance_sampling else torch.ones(len(rows))
    cond = epoch_data["cond"][rows]
    z = log_z(cond)
    rest = log_probs.mean(1) - config.train.tb_coef * adv - ref_log_probs.mean(1)
    delta = (z + rest).detach()
    # the log-partition head: its exact loss, the policy held fixed
    loss_z = flowrl.trajectory_balance_loss(z, log_probs.mean(1), adv, ref_log_probs.mean(1), config.train.tb_coef, weight)
    (loss_z / window).backward()
    for j in range(num_train):
        step = steps[:, j]
        sample, next_sample, sigma, sigma_next, cond = _step_args(epoch_data, rows, step, sigmas, config)
        _, log_prob, _, _ = transition(model, sample, sigma, sigma_next, cond, a, sde_type, prev_sample=next_sample)
        (flowrl.trajectory_balance_surrogate(log_prob, delta, weight, num_train) / window).backward()
        diagnostics = grpo.policy_diagnostics(log_prob.detach(), old_log_probs[:, j], config.train.clip_range)
        stats["approx_kl"].append(diagnostics["approx_kl"].item())
        stats["clipfrac"].append(0.0)
        stats["ratio_mean"].append(float(weight.mean()))
    stats["policy_loss"].append(float(loss_z.detach()))  # the trajectory-balance loss
    stats["kl_loss"].append(0.0)
    stats.setdefault("log_z", []).append(float(z.detach().mean()))
