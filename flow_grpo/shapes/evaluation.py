"""GenEval-shapes evaluation of a pipeline: accuracy by tag, plus the measures that would expose reward hacking.

For every test prompt, ``n`` images from fixed seeds (ODE sampling), scored by the analytic detector with
GenEval's official rule. Besides accuracy it reports, over all images:

- ``detector_confidence``: the mean confidence of detected objects (1 = a perfectly drawn shape); hacking
  that smudges shapes into something the rules accept would lower it;
- ``noise_share``: the share of foreground pixels in specks too small to be objects (clean scenes: ~0);
- ``objects_per_image``: detected objects per image;
- ``layout_spread``: per prompt, the standard deviation (pixels) of the images' mean object position,
  averaged over prompts: a model that found one layout that scores and repeats it would drive it to 0.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_grpo.geneval.metadata import TAGS
from flow_grpo.geneval.scoring import CONFIDENCE_THRESHOLD, COUNTING_THRESHOLD, filter_detections, score_image
from flow_grpo.images import to_pil
from flow_grpo.seeding import generator_for
from flow_grpo.shapes.detector import ShapesDetector


@torch.no_grad()
def sample_images(pipeline, metadata, n: int, steps: int, guidance_scale: float, seed: int, resolution: int,
                  batch_size: int = 128, max_sequence_length: int = 16, progress: bool = True):
    """``n`` images per prompt (ODE), image k of prompt i seeded by (seed, i, k): the same noise for any model."""
    from flow_grpo.sd3 import encode_prompt, sd3_sample_with_logprob

    device = pipeline.transformer.device
    jobs = [(i, k) for i in range(len(metadata)) for k in range(n)]
    negative = encode_prompt(pipeline, [""], max_sequence_length, device)
    images = []
    for start in tqdm(range(0, len(jobs), batch_size), desc="sampling", disable=not progress, leave=False):
        chunk = jobs[start : start + batch_size]
        conditioning = encode_prompt(pipeline, [metadata[i]["prompt"] for i, _ in chunk], max_sequence_length, device)
        trajectory = sd3_sample_with_logprob(
            pipeline, conditioning, negative,
            num_inference_steps=steps, guidance_scale=guidance_scale, height=resolution, width=resolution,
            deterministic=True, generator=[generator_for(seed, "shapes-eval", i, k) for i, k in chunk],
        )
        images.extend(to_pil(trajectory.images))
    return images, jobs


def evaluate_images(images, jobs, metadata, confidence=CONFIDENCE_THRESHOLD, counting_confidence=COUNTING_THRESHOLD) -> dict:
    detector = ShapesDetector()
    by_tag: dict[str, list[bool]] = {}
    confidences, noise, foreground, objects = [], 0, 0, []
    centres: dict[int, list] = {}
    for image, (i, _) in zip(images, jobs):
        analysis = detector.analyse(image)
        raw = analysis["detections"]
        detections = filter_detections(raw, metadata[i], confidence, counting_confidence)
        result = score_image(detections, metadata[i])
        by_tag.setdefault(metadata[i]["tag"], []).append(result["correct"])
        found = [o for group in raw.values() for o in group]
        confidences += [o.score for o in found]
        objects.append(len(found))
        noise += analysis["noise_pixels"]
        foreground += analysis["foreground_pixels"]
        if found:
            boxes = np.asarray([o.box for o in found], dtype=float)
            centres.setdefault(i, []).append(((boxes[:, 0] + boxes[:, 2]) / 2).mean() + 1j * ((boxes[:, 1] + boxes[:, 3]) / 2).mean())
    accuracy = {tag: float(np.mean(by_tag[tag])) for tag in TAGS if tag in by_tag}
    spreads = [float(np.sqrt(np.var(np.real(c)) + np.var(np.imag(c)))) for c in centres.values() if len(c) > 1]
    return {
        "by_tag": accuracy,
        "overall": float(np.mean(list(accuracy.values()))) if accuracy else 0.0,
        "correct_images": float(np.mean([v for values in by_tag.values() for v in values])),
        "detector_confidence": float(np.mean(confidences)) if confidences else 0.0,
        "noise_share": noise / max(1, foreground),
        "objects_per_image": float(np.mean(objects)),
        "layout_spread": float(np.mean(spreads)) if spreads else 0.0,
        "images": len(images),
    }


@torch.no_grad()
def velocity_norm(pipeline, metadata, steps: int, guidance_scale: float, seed: int, resolution: int,
                  max_sequence_length: int = 16) -> float:
    """The mean RMS of the velocity a pipeline integrates (CFG included) along its ODE from fixed noise, one
    image per prompt: reported to grow under NFT, AWM and DPO training, a hacking check beside the others."""
    from flow_grpo.sampling import sample_with_logprob
    from flow_grpo.sd3 import Guidance, encode_prompt, initial_latents, predict_velocity, sd3_schedule
    from flow_grpo.sde import SDEParams

    transformer, device = pipeline.transformer, pipeline.transformer.device
    conditioning = encode_prompt(pipeline, [m["prompt"] for m in metadata], max_sequence_length, device)
    guidance = Guidance(guidance_scale, encode_prompt(pipeline, [""], max_sequence_length, device))
    size = resolution // pipeline.vae_scale_factor
    latents = initial_latents((len(metadata), transformer.config.in_channels, size, size),
                              [generator_for(seed, "velocity-norm", i) for i in range(len(metadata))], device)
    _, sigmas = sd3_schedule(pipeline.scheduler, steps, size, size, transformer.config.patch_size, device)
    norms = []

    def velocity(x, sigma):
        v = predict_velocity(transformer, x, sigma * pipeline.scheduler.config.num_train_timesteps, conditioning, guidance)
        norms.append(float(v.float().pow(2).mean().sqrt()))
        return v

    sample_with_logprob(velocity, latents, sigmas, SDEParams(0.0), store_latents=False)
    return float(np.mean(norms))


def held_out_report(pipeline, metadata, images_per_prompt: int, config) -> tuple[dict, list, list]:
    """Accuracy by tag and the hacking checks (:func:`evaluate_images`) of ``images_per_prompt`` ODE images per
    prompt, with the run config's eval steps, guidance, seed, resolution and GenEval thresholds, plus the
    velocity norm; returns (report, images, jobs)."""
    images, jobs = sample_images(
        pipeline, metadata, images_per_prompt, config.sample.eval_num_steps, config.sample.eval_guidance_scale,
        seed=config.seed, resolution=config.resolution, max_sequence_length=config.max_sequence_length,
    )
    options = dict(config.reward_options).get("geneval", {})
    report = evaluate_images(images, jobs, metadata, options.get("confidence", CONFIDENCE_THRESHOLD),
                             options.get("counting_confidence", COUNTING_THRESHOLD))
    report["velocity_norm"] = velocity_norm(pipeline, metadata, config.sample.eval_num_steps, config.sample.eval_guidance_scale,
                                            config.seed, config.resolution, config.max_sequence_length)
    return report, images, jobs


def ground_truth_images(metadata, n: int, seed: int) -> tuple[list, list[tuple[int, int]]]:
    """``n`` rendered scenes satisfying each prompt (image k of prompt i from (seed, i, k)), and their jobs."""
    import random

    from flow_grpo.seeding import derive_seed
    from flow_grpo.shapes.render import render, sample_scene

    jobs = [(i, k) for i in range(len(metadata)) for k in range(n)]
    return [render(sample_scene(metadata[i], random.Random(derive_seed(seed, "scene", i, k)))) for i, k in jobs], jobs


def vae_ceiling(vae, metadata, n: int = 8, seed: int = 0) -> dict:
    """The best a model decoding with ``vae`` can score: rendered scenes that satisfy every prompt, sent through
    the VAE (encode, posterior mode, decode), scored as generated images are (:func:`evaluate_images`)."""
    from PIL import Image

    from flow_grpo.shapes.exemplars import decode_through

    images, jobs = ground_truth_images(metadata, n, seed)
    decoded = decode_through(vae, np.stack([np.asarray(image) for image in images]))
    return evaluate_images([Image.fromarray(image) for image in decoded], jobs, metadata)
