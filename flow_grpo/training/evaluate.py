"""Evaluation: ODE sampling of the test prompts with the eval step count and guidance, every reward column
averaged over all processes, and an image grid (videos: a grid clip and a frame strip)."""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo.backbones.generation import GenerationOptions, ImageJob, SamplingSpec, generate_batches
from flow_grpo.training.collector import call_with_deadline
from flow_grpo.training.sizes import frame_size
from flow_grpo.videos import save_samples


@torch.no_grad()
def evaluate_rewards(*, backbone, transformer, dataset, reward_fn, config, accelerator, grid_path: str | None = None) -> dict:
    """Returns ``{"eval_reward_<column>": mean}`` on every process; writes the grid on the main process.

    ``sample.eval_images_per_prompt`` ODE images per prompt from ``flow_grpo.backbones.generation.generate_batches``
    (its one seeding scheme: image k of prompt i, whatever the process count). The images are split over
    processes (padded to equal counts; padding is not scored), so results do not depend on the number of
    processes.
    """
    count = len(dataset) if not config.sample.eval_max_prompts else min(len(dataset), config.sample.eval_max_prompts)
    per_prompt = config.sample.eval_images_per_prompt
    jobs = count * per_prompt  # job q: image q % per_prompt of prompt q // per_prompt
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    per_process = -(-jobs // world)
    mine = [q for q in range(rank, per_process * world, world)]  # q >= jobs: padding
    columns, valid, grid_images, grid_prompts, info_columns = [], [], [], [], []
    height, width = frame_size(config)
    jobs_here = [job_of(dataset, q // per_prompt, q % per_prompt, (height, width)) for q in (q if q < jobs else 0 for q in mine)]
    spec = SamplingSpec(num_steps=config.sample.eval_num_steps, guidance_scale=config.sample.eval_guidance_scale,
                        height=height, width=width, num_frames=config.num_frames, batched_cfg=config.batched_cfg,
                        decode_batch_size=config.sample.decode_batch_size or None)
    options = GenerationOptions(seed=config.seed, max_sequence_length=config.max_sequence_length,
                                batch_size=config.sample.test_batch_size, transformer=transformer, autocast=accelerator.autocast,
                                progress=config.progress and accelerator.is_main_process, description="eval")
    for start, (chunk, images) in zip(range(0, len(mine), options.batch_size), generate_batches(backbone, jobs_here, spec, options)):
        indices = mine[start : start + options.batch_size]
        prompts = [job.prompt for job in chunk]
        metadata = [dataset.metadata[job.prompt_index] for job in chunk]
        rewards, info = call_with_deadline(reward_fn, (images, prompts, metadata), config.reward_deadline_s,
                                           f"an evaluation batch of {len(prompts)} images")
        names = list(rewards)
        columns.append(np.stack([rewards[k] for k in names], axis=1))
        # numeric per-image info (e.g. GenEval's correct and per-tag columns) is averaged too, NaN = not this image's
        info_names = sorted(k for k, v in info.items() if np.asarray(v).dtype.kind in "fiub")
        info_columns.append(np.stack([np.asarray(info[k], dtype=np.float64) for k in info_names], axis=1) if info_names else None)
        valid.append(np.asarray([q < jobs for q in indices]))
        for image, prompt, ok in zip(images, prompts, valid[-1]):
            if ok and len(grid_images) < 16:
                grid_images.append(image)
                grid_prompts.append(prompt)
    local = torch.as_tensor(np.concatenate(columns), dtype=torch.float64, device=device)
    mask = torch.as_tensor(np.concatenate(valid), device=device)
    gathered, gathered_mask = accelerator.gather(local).cpu().numpy(), accelerator.gather(mask).cpu().numpy().astype(bool)
    scores = gathered[gathered_mask]
    metrics = {f"eval_reward_{name}": float(np.nanmean(scores[:, i])) for i, name in enumerate(names)}
    metrics["eval_num_images"] = float(len(scores))
    if info_columns and info_columns[0] is not None:
        local_info = torch.as_tensor(np.concatenate(info_columns), dtype=torch.float64, device=device)
        gathered_info = accelerator.gather(local_info).cpu().numpy()[gathered_mask]
        with np.errstate(all="ignore"):
            for i, name in enumerate(info_names):
                column = gathered_info[:, i]
                if np.isfinite(column).any():
                    metrics[f"eval_{name}"] = float(np.nanmean(column))
    if grid_path and accelerator.is_main_process and grid_images:
        save_samples(torch.stack(grid_images), grid_path, cols=4, labels=grid_prompts)
    return metrics


def job_of(dataset, prompt_index: int, image_index: int, size: tuple[int, int]) -> ImageJob:
    """Image ``image_index`` of dataset row ``prompt_index``, with its input image for an editing dataset."""
    inputs = dataset.input_images([prompt_index], size)
    return ImageJob(dataset.prompts[prompt_index], prompt_index, image_index, None if inputs is None else inputs[0])
