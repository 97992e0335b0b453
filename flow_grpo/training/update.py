"""The policy update: one micro-step per (minibatch, trained timestep), re-scoring the stored transition with
the sampling code path, and an optimizer step every ``gradient_accumulation_steps * num_train_timesteps``
micro-steps. ``config.train.loss_mode`` picks the objective:

- ``grpo``: the clipped surrogate on ``exp(log p - log p_old)`` plus beta times the KL to the reference;
- ``grpo_guard``: the same on GRPO-Guard's re-centred, std-scaled ratio, divided by -dt (needs the step means
  stored at sampling);
- ``flowrl``: trajectory balance with a learned log Z; per minibatch, delta and the importance weight are
  computed once without gradients over all trained timesteps (policy and LoRA-disabled reference), then
  each timestep back-propagates its share of the gradient (``flow_grpo.flowrl``).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from tqdm.auto import tqdm

from flow_grpo import flowrl, grpo
from flow_grpo.diffusers_patch import denoising_step
from flow_grpo.training.models import reference_model

LOSS_MODES = ("grpo", "grpo_guard", "flowrl")


def _minibatches(keep: torch.Tensor, num_stored: int, config, generator: torch.Generator):
    """[(rows, steps [n, T])] for one inner epoch: shuffled minibatches of ``keep`` and their trained timesteps."""
    order = keep[torch.randperm(len(keep), generator=generator)]
    train_steps = grpo.select_train_timesteps(
        num_stored, config.train.timestep_fraction, config.train.timestep_strategy, len(order), generator
    )
    size = config.train.batch_size
    return [(order[s : s + size], train_steps[s : s + size]) for s in range(0, len(order), size)], train_steps.shape[1]


def stored_transitions(samples: dict, rows: torch.Tensor, steps: torch.Tensor, negative_embeds, config, device) -> dict:
    """The stored transitions ``x_step -> x_step+1`` of samples ``rows`` (one step index per row), ready to be
    re-scored: ``denoising_step(model, batch["latents"], *batch["args"], prev_sample=batch["next_latents"])``
    with the sampling's noise and the training guidance (``config.train.cfg``)."""
    n = len(rows)
    guidance_scale = config.sample.guidance_scale if config.train.cfg else 1.0
    embeds = (
        samples["prompt_embeds"][rows].to(device), samples["pooled_prompt_embeds"][rows].to(device),
        negative_embeds[0].expand(n, -1, -1), negative_embeds[1].expand(n, -1),
    )
    return {
        "latents": samples["latents"][rows, steps].to(device),
        "next_latents": samples["latents"][rows, steps + 1].to(device),
        "old_log_prob": samples["log_probs"][rows, steps].to(device),
        "args": (samples["timesteps"][rows, steps].to(device), samples["sigmas"][rows, steps].to(device),
                 samples["sigmas_next"][rows, steps].to(device), *embeds, guidance_scale,
                 config.sample.noise_level, config.sample.sde_type),
    }


def train_on_rollouts(
    *, transformer, unwrapped, frozen_reference, samples: dict, advantages: torch.Tensor, keep: torch.Tensor,
    config, accelerator, optimizer, trainable_params, ema, global_step: int, generator: torch.Generator,
    negative_embeds, model_dtype, log_z=None,
) -> tuple[dict, int]:
    """Run the update on this process's kept samples. Returns logged statistics and the new global step."""
    if config.train.loss_mode not in LOSS_MODES:
        raise ValueError(f"unknown config.train.loss_mode {config.train.loss_mode!r}; valid: {', '.join(LOSS_MODES)}")
    stats = defaultdict(list)
    device = accelerator.device
    num_stored = samples["log_probs"].shape[1]
    models = (transformer,) if log_z is None else (transformer, log_z)

    def gather(rows, steps):
        return stored_transitions(samples, rows, steps, negative_embeds, config, device)

    def step_log_prob(model, batch):
        return denoising_step(model, batch["latents"], *batch["args"], prev_sample=batch["next_latents"], model_dtype=model_dtype)

    transformer.train()
    if log_z is not None:
        log_z.train()
    for inner_epoch in range(config.train.num_inner_epochs):
        minibatches, num_train_timesteps = _minibatches(keep, num_stored, config, generator)
        if accelerator.gradient_accumulation_steps != config.train.gradient_accumulation_steps * num_train_timesteps:
            raise RuntimeError("the accelerator's accumulation does not match gradient_accumulation_steps x trained timesteps")
        total = len(minibatches) * num_train_timesteps
        bar = tqdm(total=total, desc="training", disable=not (config.progress and accelerator.is_main_process), leave=False)
        for rows, steps in minibatches:
            advantage = advantages[rows].to(device)
            if config.train.loss_mode == "flowrl":
                delta, weight, delta_rest = _trajectory_balance_terms(
                    unwrapped, frozen_reference, log_z, rows, steps, samples, advantage, gather, step_log_prob, config,
                    accelerator, stats,
                )
            for j in range(num_train_timesteps):
                batch = gather(rows, steps[:, j])
                # accumulate(): no gradient all-reduce and no optimizer step until the window's last micro-step,
                # and the loss divided by the window length
                with accelerator.accumulate(*models), accelerator.autocast():
                    _, log_prob, mean, std_dev = step_log_prob(transformer, batch)
                    old_log_prob = batch["old_log_prob"]
                    if config.train.loss_mode == "grpo":
                        policy_loss, ratio = grpo.clipped_policy_loss(log_prob, old_log_prob, advantage, config.train.clip_range)
                    elif config.train.loss_mode == "grpo_guard":
                        old_mean = samples["prev_sample_means"][rows, steps[:, j]].to(device)
                        ratio = grpo.grpo_guard_ratio(log_prob, old_log_prob, mean, old_mean, std_dev)
                        sigma, sigma_next = batch["args"][1], batch["args"][2]
                        policy_loss = grpo.grpo_guard_loss(ratio, advantage, config.train.clip_range, sigma_next - sigma)
                    else:
                        policy_loss = flowrl.trajectory_balance_surrogate(log_prob, delta, weight, num_train_timesteps)
                        # log Z's own loss once per minibatch; the head runs at every micro-step (times 0 after
                        # the first) so that DDP all-reduces its gradient at whichever micro-step syncs
                        z = log_z(batch["args"][4].float())
                        if j == 0:
                            policy_loss = policy_loss + torch.mean(weight * (z + delta_rest) ** 2)
                        else:
                            policy_loss = policy_loss + 0.0 * z.sum()
                        ratio = torch.exp((log_prob - old_log_prob).detach())
                    loss = policy_loss
                    if config.train.beta > 0 and config.train.loss_mode != "flowrl":
                        with torch.no_grad(), reference_model(unwrapped, frozen_reference) as reference:
                            _, _, mean_ref, _ = step_log_prob(reference, batch)
                        kl = grpo.gaussian_kl(mean, mean_ref, std_dev).mean()
                        loss = loss + config.train.beta * kl
                        stats["kl_loss"].append(kl.detach())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(trainable_params, config.train.max_grad_norm)
                        if grad_norm is not None:
                            stats["grad_norm"].append(torch.as_tensor(grad_norm, dtype=torch.float32).detach())
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    global_step += 1
                    if ema is not None:
                        ema.step(global_step)
                diagnostics = grpo.policy_diagnostics(log_prob.detach(), old_log_prob, config.train.clip_range)
                stats["policy_loss"].append(policy_loss.detach())
                stats["approx_kl"].append(diagnostics["approx_kl"])
                stats["clipfrac"].append(torch.mean((torch.abs(ratio.detach() - 1.0) > config.train.clip_range).float()))
                stats["ratio_mean"].append(ratio.detach().mean())
                bar.update()
        bar.close()
    transformer.eval()
    if log_z is not None:
        log_z.eval()
    # one host synchronisation for the whole update
    logged = {key: float(torch.stack([v.float().cpu() for v in values]).mean()) for key, values in stats.items()}
    if stats["approx_kl"]:
        logged["first_microstep_approx_kl"] = float(stats["approx_kl"][0])
        logged["first_microstep_clipfrac"] = float(stats["clipfrac"][0])
        if stats["kl_loss"]:
            logged["first_microstep_kl"] = float(stats["kl_loss"][0])
    logged.setdefault("kl_loss", 0.0)
    for key in ("policy_loss", "approx_kl", "clipfrac"):
        logged.setdefault(key, float("nan"))
    return logged, global_step


@torch.no_grad()
def _trajectory_balance_terms(unwrapped, frozen_reference, log_z, rows, steps, samples, advantage, gather, step_log_prob,
                              config, accelerator, stats):
    """delta = log Z + mean_t log p - tb_coef * A - mean_t log p_ref and w, without gradients, for a minibatch."""
    log_probs, ref_log_probs, old_log_probs = [], [], []
    with accelerator.autocast():
        for j in range(steps.shape[1]):
            batch = gather(rows, steps[:, j])
            log_probs.append(step_log_prob(unwrapped, batch)[1])
            with reference_model(unwrapped, frozen_reference) as reference:
                ref_log_probs.append(step_log_prob(reference, batch)[1])
            old_log_probs.append(batch["old_log_prob"])
        z = log_z(batch["args"][4].float())
    log_probs, ref_log_probs, old_log_probs = (torch.stack(x, dim=1).float() for x in (log_probs, ref_log_probs, old_log_probs))
    if config.train.importance_sampling:
        weight = flowrl.importance_weight(log_probs.sum(1), old_log_probs.sum(1))
    else:
        weight = torch.ones_like(z)
    delta = flowrl.trajectory_balance_delta(z, log_probs.mean(1), advantage, ref_log_probs.mean(1), config.train.tb_coef)
    delta_rest = delta - z  # everything but log Z, for the head's loss
    stats["tb_loss"].append(torch.mean(weight * delta**2))
    stats["log_z"].append(z.mean())
    stats["importance_weight"].append(weight.mean())
    stats["policy_ref_log_ratio"].append((log_probs.mean(1) - ref_log_probs.mean(1)).mean())
    return delta, weight, delta_rest
