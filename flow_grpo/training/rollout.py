"""Collecting one epoch of on-policy data: prompts from the k-repeat sampler, SDE trajectories with their
log-probs, and rewards computed in a background thread while the next batch is being sampled."""

from __future__ import annotations

import time
from concurrent.futures import Executor

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_grpo.diffusers_patch import encode_prompt, sd3_sample_with_logprob
from flow_grpo.diffusers_patch.sd3_sampling import initial_latents
from flow_grpo.seeding import generator_for


def collect_rollouts(
    *, pipeline, transformer, dataset, sampler, reward_fn, executor: Executor, config, accelerator, epoch: int,
    negative_embeds, model_dtype,
) -> dict:
    """Sample ``num_batches_per_epoch`` batches on this process and return them concatenated, rewards included.

    Random draws are seeded by (seed, epoch, batch, process, sample), so a resumed run repeats them exactly;
    with ``same_latent`` the initial noise is seeded by the prompt instead of the process, so a group spread
    over several processes still starts from one noise.
    """
    batches, started = [], time.time()
    rank, device = accelerator.process_index, accelerator.device
    steps = range(config.sample.num_batches_per_epoch)
    for b in tqdm(steps, desc=f"epoch {epoch}: sampling", disable=not (config.progress and accelerator.is_main_process), leave=False):
        prompt_ids = sampler.next_indices()
        prompts = [dataset.prompts[i] for i in prompt_ids]
        metadata = [dataset.metadata[i] for i in prompt_ids]
        prompt_embeds, pooled = encode_prompt(pipeline, prompts, config.max_sequence_length, device)
        n = len(prompts)
        latent_size = config.resolution // pipeline.vae_scale_factor
        shape = (n, pipeline.transformer.config.in_channels, latent_size, latent_size)
        if config.sample.same_latent:
            latent_generators = [generator_for(config.seed, "latent", epoch, b, prompt_id) for prompt_id in prompt_ids]
        else:
            latent_generators = [generator_for(config.seed, "latent", epoch, b, rank, i) for i in range(n)]
        with accelerator.autocast():
            trajectory = sd3_sample_with_logprob(
                pipeline, prompt_embeds, pooled,
                negative_embeds[0].expand(n, -1, -1), negative_embeds[1].expand(n, -1),
                num_inference_steps=config.sample.num_steps, guidance_scale=config.sample.guidance_scale,
                height=config.resolution, width=config.resolution, noise_level=config.sample.noise_level,
                sde_type=config.sample.sde_type, sde_window_size=config.sample.sde_window_size,
                sde_window_range=tuple(config.sample.sde_window_range),
                window_generator=generator_for(config.seed, "window", epoch, b, rank),
                generator=[generator_for(config.seed, "noise", epoch, b, rank, i) for i in range(n)],
                latents=initial_latents(shape, latent_generators, device),
                decode_batch_size=config.sample.decode_batch_size or None,
                store_means=config.train.loss_mode == "grpo_guard", transformer=transformer,
            )
        images = trajectory.images.cpu()
        num_stored = trajectory.log_probs.shape[1]
        batches.append(
            {
                "prompt_ids": torch.tensor(prompt_ids),
                "prompts": prompts,
                "metadata": metadata,
                "prompt_embeds": prompt_embeds,
                "pooled_prompt_embeds": pooled,
                "latents": trajectory.latents,
                "log_probs": trajectory.log_probs,
                "timesteps": trajectory.timesteps.expand(n, num_stored),
                "sigmas": trajectory.sigmas.expand(n, num_stored),
                "sigmas_next": trajectory.sigmas_next.expand(n, num_stored),
                "std_devs": trajectory.std_devs,
                "prev_sample_means": trajectory.prev_sample_means,
                "images": images,
                # the reward of this batch runs while the next batch is sampled
                "reward_future": executor.submit(reward_fn, images, prompts, metadata),
            }
        )
    sample_time = time.time() - started

    waited = time.time()
    for batch in tqdm(batches, desc=f"epoch {epoch}: rewards", disable=not (config.progress and accelerator.is_main_process), leave=False):
        batch["rewards"], batch["reward_info"] = batch.pop("reward_future").result()
    reward_wait = time.time() - waited

    samples = {"prompts": [p for b in batches for p in b["prompts"]], "metadata": [m for b in batches for m in b["metadata"]]}
    for key in ("prompt_ids", "prompt_embeds", "pooled_prompt_embeds", "latents", "log_probs", "timesteps", "sigmas",
                "sigmas_next", "std_devs", "images"):
        samples[key] = torch.cat([b[key] for b in batches])
    samples["prev_sample_means"] = (
        torch.cat([b["prev_sample_means"] for b in batches]) if batches[0]["prev_sample_means"] is not None else None
    )
    samples["rewards"] = {key: np.concatenate([b["rewards"][key] for b in batches]) for key in batches[0]["rewards"]}
    # numeric per-image reward info (GenEval's per-tag correctness, NaN for other tags), for the epoch's log
    samples["reward_info"] = {
        key: np.concatenate([np.asarray(b["reward_info"][key], dtype=np.float64) for b in batches])
        for key in sorted(batches[0]["reward_info"])
        if all(key in b["reward_info"] and np.asarray(b["reward_info"][key]).dtype.kind in "fiub"
               and np.asarray(b["reward_info"][key]).shape == (len(b["prompts"]),) for b in batches)
    }
    samples["timing"] = {"sample_time_s": sample_time, "reward_wait_s": reward_wait}
    return samples
