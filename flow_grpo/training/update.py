"""The policy update: one micro-step per (minibatch, trained timestep), re-scoring the stored transition with
the sampling code path, the clipped GRPO loss plus beta times the KL to the reference, and an optimizer step
every ``gradient_accumulation_steps * num_train_timesteps`` micro-steps."""

from __future__ import annotations

from collections import defaultdict

import torch
from tqdm.auto import tqdm

from flow_grpo import grpo
from flow_grpo.diffusers_patch import denoising_step
from flow_grpo.training.models import reference_model


def _micro_steps(keep: torch.Tensor, num_stored: int, config, generator: torch.Generator):
    """[(rows, steps)] for one inner epoch: shuffled minibatches of ``keep``, then each trained timestep."""
    order = keep[torch.randperm(len(keep), generator=generator)]
    train_steps = grpo.select_train_timesteps(
        num_stored, config.train.timestep_fraction, config.train.timestep_strategy, len(order), generator
    )
    steps = []
    for start in range(0, len(order), config.train.batch_size):
        rows = order[start : start + config.train.batch_size]
        chosen = train_steps[start : start + config.train.batch_size]
        steps.extend((rows, chosen[:, j]) for j in range(chosen.shape[1]))
    return steps, train_steps.shape[1]


def train_on_rollouts(
    *, transformer, unwrapped, frozen_reference, samples: dict, advantages: torch.Tensor, keep: torch.Tensor,
    config, accelerator, optimizer, trainable_params, ema, global_step: int, generator: torch.Generator,
    negative_embeds, model_dtype,
) -> tuple[dict, int]:
    """Run the update on this process's kept samples. Returns logged statistics and the new global step."""
    stats = defaultdict(list)
    device = accelerator.device
    guidance_scale = config.sample.guidance_scale if config.train.cfg else 1.0
    num_stored = samples["log_probs"].shape[1]
    transformer.train()
    for inner_epoch in range(config.train.num_inner_epochs):
        micro_steps, num_train_timesteps = _micro_steps(keep, num_stored, config, generator)
        if accelerator.gradient_accumulation_steps != config.train.gradient_accumulation_steps * num_train_timesteps:
            raise RuntimeError("the accelerator's accumulation does not match gradient_accumulation_steps x trained timesteps")
        bar = tqdm(micro_steps, desc="training", disable=not (config.progress and accelerator.is_main_process), leave=False)
        for rows, steps in bar:
            n = len(rows)
            latents = samples["latents"][rows, steps].to(device)
            next_latents = samples["latents"][rows, steps + 1].to(device)
            timestep = samples["timesteps"][rows, steps].to(device)
            sigma = samples["sigmas"][rows, steps].to(device)
            sigma_next = samples["sigmas_next"][rows, steps].to(device)
            old_log_prob = samples["log_probs"][rows, steps].to(device)
            embeds = (
                samples["prompt_embeds"][rows].to(device),
                samples["pooled_prompt_embeds"][rows].to(device),
                negative_embeds[0].expand(n, -1, -1),
                negative_embeds[1].expand(n, -1),
            )
            step_args = (timestep, sigma, sigma_next, *embeds, guidance_scale, config.sample.noise_level, config.sample.sde_type)
            advantage = advantages[rows].to(device)
            # accumulate(): no gradient all-reduce and no optimizer step until the window's last micro-step,
            # and the loss divided by the window length
            with accelerator.accumulate(transformer), accelerator.autocast():
                _, log_prob, mean, std_dev = denoising_step(
                    transformer, latents, *step_args, prev_sample=next_latents, model_dtype=model_dtype
                )
                policy_loss, ratio = grpo.clipped_policy_loss(log_prob, old_log_prob, advantage, config.train.clip_range)
                loss = policy_loss
                if config.train.beta > 0:
                    with torch.no_grad(), reference_model(unwrapped, frozen_reference) as reference:
                        _, _, mean_ref, _ = denoising_step(
                            reference, latents, *step_args, prev_sample=next_latents, model_dtype=model_dtype
                        )
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
            stats["clipfrac"].append(diagnostics["clipfrac"])
            stats["ratio_mean"].append(ratio.detach().mean())
    transformer.eval()
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
