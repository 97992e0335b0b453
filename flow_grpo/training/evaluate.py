"""Evaluation: ODE sampling of the test prompts with the eval step count and guidance, every reward column
averaged over all processes, and an image grid."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_grpo.sd3 import encode_prompt, sd3_sample_with_logprob
from flow_grpo.images import image_grid, to_pil
from flow_grpo.seeding import generator_for


@torch.no_grad()
def evaluate(*, pipeline, transformer, dataset, reward_fn, config, accelerator, negative, grid_path: str | None = None) -> dict:
    """Returns ``{"eval_reward_<column>": mean}`` on every process; writes the grid on the main process.

    ``sample.eval_images_per_prompt`` images per prompt (image k of prompt i seeded by (seed, i, k); the
    first by (seed, i)). The images are split over processes (padded to equal counts; padding is not scored),
    so results do not depend on the number of processes.
    """
    count = len(dataset) if not config.sample.eval_max_prompts else min(len(dataset), config.sample.eval_max_prompts)
    per_prompt = config.sample.eval_images_per_prompt
    jobs = count * per_prompt  # job q: image q % per_prompt of prompt q // per_prompt
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    per_process = -(-jobs // world)
    mine = [q for q in range(rank, per_process * world, world)]  # q >= jobs: padding
    columns, valid, grid_images, grid_prompts, info_columns = [], [], [], [], []
    batches = range(0, len(mine), config.sample.test_batch_size)
    for start in tqdm(batches, desc="eval", disable=not (config.progress and accelerator.is_main_process), leave=False):
        indices = mine[start : start + config.sample.test_batch_size]
        real = [q if q < jobs else 0 for q in indices]
        prompts = [dataset.prompts[q // per_prompt] for q in real]
        metadata = [dataset.metadata[q // per_prompt] for q in real]
        seeds = [(q // per_prompt,) if q % per_prompt == 0 else (q // per_prompt, q % per_prompt) for q in real]
        conditioning = encode_prompt(pipeline, prompts, config.max_sequence_length, device)
        with accelerator.autocast():
            trajectory = sd3_sample_with_logprob(
                pipeline, conditioning, negative,
                num_inference_steps=config.sample.eval_num_steps, guidance_scale=config.sample.eval_guidance_scale,
                height=config.resolution, width=config.resolution, deterministic=True,
                generator=[generator_for(config.seed, "eval", *seed) for seed in seeds], transformer=transformer,
                decode_batch_size=config.sample.decode_batch_size or None, batched_cfg=config.batched_cfg,
            )
        images = trajectory.images.cpu()
        rewards, info = reward_fn(images, prompts, metadata)
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
        cols = min(4, len(grid_images))
        image_grid(to_pil(torch.stack(grid_images)), cols=cols).save(grid_path)
    return metrics
