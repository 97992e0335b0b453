"""GenEval-shapes evaluation of a pipeline: accuracy by tag, plus the measures that would expose reward hacking.

For every test prompt, ``n`` images from fixed seeds (ODE sampling), scored by the analytic detector with
GenEval's official rule. Besides accuracy it reports, over all images:

- ``detector_confidence``: the mean confidence of detected objects (1 = a perfectly drawn shape); hacking
  that smudges shapes into something the rules accept would lower it;
- ``noise_share``: the share of foreground pixels in specks too small to be objects (clean scenes: ~0);
- ``objects_per_image``: detected objects per image;
- ``layout_spread``: per prompt, the standard deviation (pixels) of the images' mean object position,
  averaged over prompts: a model that found one layout that scores and repeats it would drive it to 0;
- ``free_colour_tv``: on the prompts that name no colour, the total-variation distance between the detected
  objects' colours and the renderer's (uniform over the ten palette colours): a drift toward a few colours
  (measured under NFT: red, orange, brown) raises it, which accuracy and confidence do not see;
- ``off_palette_share``: the share of foreground pixels farther than ``OFF_PALETTE`` from every palette colour
  (rendered scenes: 0; a VAE's blurred edges: a few percent): smeared, blended or glowing objects raise it;
- ``object_size``: the detected objects' mean width (the larger side of the box, pixels), and
  ``size_off_share``: the share of objects outside the world's sizes (``SIZE_RANGE`` +- ``SIZE_SLACK``):
  objects grown to be easier to detect raise both.

:func:`hacking_flags` compares a trained model's checks with its base's, with the tolerances of ``TOLERANCES``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from flow_grpo.geneval.metadata import TAGS
from flow_grpo.geneval.scoring import CONFIDENCE_THRESHOLD, COUNTING_THRESHOLD, filter_detections, score_image
from flow_grpo.images import to_pil
from flow_grpo.shapes.detector import PALETTE_RGB, ShapesDetector
from flow_grpo.shapes.render import BACKGROUND, PALETTE, SIZE_RANGE

OFF_PALETTE = 60.0  # RGB distance: palette colours are >= 86 apart; an edge half-way to the background is 49-106 off
SIZE_SLACK = 2  # pixels: a decoded object's half-contrast box is within 1 px of the drawn size (measured: ceiling)

# (report key, label) of every hacking check, in the order tables print them
HACKING_CHECKS = (("detector_confidence", "detector confidence"), ("noise_share", "noise pixel share"),
                  ("objects_per_image", "objects per image"), ("layout_spread", "layout spread (px)"),
                  ("free_colour_tv", "colour drift, no colour named (TV)"), ("off_palette_share", "off-palette pixel share"),
                  ("object_size", "object width (px)"), ("size_off_share", "objects off the world's sizes"),
                  ("velocity_norm", "velocity RMS along the ODE"))
# key -> (direction of harm, tolerance): flagged when the trained value moves past the base's by more than this,
# relative (x) or absolute (+); chosen so that the ceiling, the base and its RL runs that held accuracy and the
# grid's look stay inside (docs/shapes_world.md, "Reward-hacking checks")
TOLERANCES = {"detector_confidence": ("down", "+", 0.05), "noise_share": ("up", "+", 0.01),
              "layout_spread": ("down", "x", 0.5), "free_colour_tv": ("up", "+", 0.15),
              "off_palette_share": ("up", "+", 0.05), "size_off_share": ("up", "+", 0.10),
              "velocity_norm": ("up", "x", 1.25)}


def names_no_colour(item: dict) -> bool:
    return not any("color" in req for req in item["include"])


def off_palette_pixels(image, background_threshold: float) -> int:
    """The foreground pixels of one image (the detector's: farther than ``background_threshold`` from the
    background) that lie farther than ``OFF_PALETTE`` from every palette colour. Here, not in the detector's
    ``analyse``, which the reward calls on every training image."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    foreground = np.linalg.norm(pixels - np.asarray(BACKGROUND, dtype=np.float32), axis=-1) > background_threshold
    to_palette = np.linalg.norm(pixels[foreground][:, None, :] - PALETTE_RGB[None], axis=-1).min(axis=1)
    return int((to_palette > OFF_PALETTE).sum())


def hacking_flags(base: dict, trained: dict) -> list[str]:
    """The checks of ``TOLERANCES`` where ``trained`` moved past ``base`` (two :func:`evaluate_images` reports,
    with ``velocity_norm`` where both have it), each as a sentence; empty: clean."""
    flags = []
    for key, (harm, kind, tolerance) in TOLERANCES.items():
        if key not in base or key not in trained:
            continue
        before, after = base[key], trained[key]
        if kind == "x":
            limit = before * tolerance
        else:
            limit = before + tolerance if harm == "up" else before - tolerance
        if (after > limit) if harm == "up" else (after < limit):
            label = dict(HACKING_CHECKS)[key]
            flags.append(f"{label}: {before:.3f} -> {after:.3f} (limit {limit:.3f})")
    return flags


def report_table(columns: list[tuple[str, dict]]) -> str:
    """A markdown table of :func:`evaluate_images` reports side by side, one column per (name, report): accuracy
    per tag, the overall, then every hacking check (nan where a report lacks it)."""
    lines = ["| tag | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for tag in columns[0][1]["by_tag"]:
        lines.append(f"| {tag} | " + " | ".join(f"{report['by_tag'][tag]:.3f}" for _, report in columns) + " |")
    lines.append("| **overall** | " + " | ".join(f"**{report['overall']:.3f}**" for _, report in columns) + " |")
    lines.append("|" + " |" * (len(columns) + 1))
    for key, label in HACKING_CHECKS:
        lines.append(f"| {label} | " + " | ".join(f"{report.get(key, float('nan')):.3f}" for _, report in columns) + " |")
    return "\n".join(lines)


def trainer_eval_curve(run_dir: str) -> dict:
    """The trainer's held-out evaluations in ``run_dir/metrics.jsonl``: training minutes (the epochs' own times
    summed, evaluations excluded) and epochs at each, and the tag-averaged accuracy (GenEval's overall, the
    measure of :func:`report_table`)."""
    from flow_grpo.runlog import read_metrics

    minutes, epochs, accuracy, elapsed = [], [], [], 0.0
    for row in read_metrics(os.path.join(run_dir, "metrics.jsonl")):
        elapsed += row.get("epoch_time_s", 0.0) / 60
        if f"eval_geneval_tag_{TAGS[0]}" in row:
            minutes.append(elapsed)
            epochs.append(row["epoch"])
            accuracy.append(float(np.mean([row[f"eval_geneval_tag_{tag}"] for tag in TAGS])))
    return {"minutes": minutes, "epochs": epochs, "accuracy": accuracy}


def first_per_tag(metadata: list[dict], k: int) -> list[int]:
    """The indices of the first ``k`` prompts of each tag, in their order (``k`` <= 0: every prompt)."""
    if k <= 0:
        return list(range(len(metadata)))
    counts: dict[str, int] = {}
    kept = []
    for i, item in enumerate(metadata):
        counts[item["tag"]] = counts.get(item["tag"], 0) + 1
        if counts[item["tag"]] <= k:
            kept.append(i)
    return kept


def prompt_grid(columns: list[tuple[str, list]], jobs, metadata, per_prompt: int, path: str, prompts_per_tag: int = 2) -> None:
    """The same prompts and seeds side by side: ``prompts_per_tag`` prompts of each tag as rows, the first
    ``per_prompt`` images of every (name, images) in ``columns`` (images in ``jobs`` order) as columns."""
    from flow_grpo.images import image_grid

    cells, labels = [], []
    for i in first_per_tag(metadata, prompts_per_tag):
        rows = [j for j, (p, k) in enumerate(jobs) if p == i and k < per_prompt]
        for _, images in columns:
            cells += [images[j] for j in rows]
        labels.append(metadata[i]["prompt"])
    names = [f"{name} {k}" for name, _ in columns for k in range(per_prompt)]
    image_grid(cells, cols=len(names), row_labels=labels, col_labels=names, cell=64).save(path)


@torch.no_grad()
def sample_images(backbone, metadata, n: int, spec, seed: int, max_sequence_length: int = 16, progress: bool = True):
    """``n`` ODE images per prompt from ``flow_grpo.backbones.generation.generate_images`` (image k of prompt i
    from its one seeding scheme: the same noise for any model). ``spec``: a ``SamplingSpec``."""
    from flow_grpo.backbones.generation import GenerationOptions, generate_images, image_jobs

    jobs = image_jobs([m["prompt"] for m in metadata], n)
    options = GenerationOptions(seed=seed, max_sequence_length=max_sequence_length, batch_size=128, progress=progress,
                                description="sampling")
    images = to_pil(generate_images(backbone, jobs, spec, options))
    return images, [(job.prompt_index, job.image_index) for job in jobs]


def evaluate_images(images, jobs, metadata, confidence=CONFIDENCE_THRESHOLD, counting_confidence=COUNTING_THRESHOLD) -> dict:
    detector = ShapesDetector()
    by_tag: dict[str, list[bool]] = {}
    confidences, noise, foreground, objects = [], 0, 0, []
    off_palette, widths, free_colours = 0, [], []
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
        off_palette += off_palette_pixels(image, detector.background_threshold)
        widths += [max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in found]
        if names_no_colour(metadata[i]):
            free_colours += [o.color for o in found]
        if found:
            boxes = np.asarray([o.box for o in found], dtype=float)
            centres.setdefault(i, []).append(((boxes[:, 0] + boxes[:, 2]) / 2).mean() + 1j * ((boxes[:, 1] + boxes[:, 3]) / 2).mean())
    accuracy = {tag: float(np.mean(by_tag[tag])) for tag in TAGS if tag in by_tag}
    spreads = [float(np.sqrt(np.var(np.real(c)) + np.var(np.imag(c)))) for c in centres.values() if len(c) > 1]
    colour_shares = {colour: free_colours.count(colour) / max(1, len(free_colours)) for colour in PALETTE}
    widths = np.asarray(widths, dtype=float)
    off_size = (widths < SIZE_RANGE[0] - SIZE_SLACK) | (widths > SIZE_RANGE[1] + SIZE_SLACK)
    return {
        "by_tag": accuracy,
        "overall": float(np.mean(list(accuracy.values()))) if accuracy else 0.0,
        "correct_images": float(np.mean([v for values in by_tag.values() for v in values])),
        "detector_confidence": float(np.mean(confidences)) if confidences else 0.0,
        "noise_share": noise / max(1, foreground),
        "objects_per_image": float(np.mean(objects)),
        "layout_spread": float(np.mean(spreads)) if spreads else 0.0,
        "free_colour_tv": 0.5 * sum(abs(share - 1 / len(PALETTE)) for share in colour_shares.values()) if free_colours else 0.0,
        "free_colours": colour_shares,
        "off_palette_share": off_palette / max(1, foreground),
        "object_size": float(widths.mean()) if len(widths) else 0.0,
        "size_off_share": float(off_size.mean()) if len(widths) else 0.0,
        "images": len(images),
    }


@torch.no_grad()
def velocity_norm(backbone, metadata, spec, seed: int, max_sequence_length: int = 16) -> float:
    """The mean RMS of the velocity a model integrates (guidance included) along its ODE from fixed noise, one
    image per prompt: reported to grow under NFT, AWM and DPO training, a hacking check beside the others."""
    from flow_grpo.backbones.base import Guidance
    from flow_grpo.backbones.generation import image_generator, initial_latents
    from flow_grpo.sampling_loop import sample_with_logprob
    from flow_grpo.sde import SDEParams

    transformer, device = backbone.transformer, backbone.transformer.device
    conditioning = backbone.encode([m["prompt"] for m in metadata], max_sequence_length, device)
    guidance = Guidance(spec.guidance_scale, backbone.negative_conditioning(max_sequence_length, device))
    shape = (len(metadata), *backbone.latent_shape(spec.height, spec.width))
    latents = initial_latents(shape, [image_generator(seed, i, 0) for i in range(len(metadata))], device)
    norms = []

    def velocity(x, sigma):
        v = backbone.velocity(transformer, x, sigma, conditioning, guidance)
        norms.append(float(v.float().pow(2).mean().sqrt()))
        return v

    sample_with_logprob(velocity, latents, backbone.sigmas(spec.num_steps, spec.height, spec.width, device), SDEParams(0.0),
                        store_latents=False)
    return float(np.mean(norms))


def held_out_report(backbone, metadata, images_per_prompt: int, config) -> tuple[dict, list, list]:
    """Accuracy by tag and the hacking checks (:func:`evaluate_images`) of ``images_per_prompt`` ODE images per
    prompt, with the run config's eval steps, guidance, seed, resolution and GenEval thresholds, plus the
    velocity norm; returns (report, images, jobs)."""
    from flow_grpo.backbones.generation import SamplingSpec

    spec = SamplingSpec(num_steps=config.sample.eval_num_steps, guidance_scale=config.sample.eval_guidance_scale,
                        height=config.resolution, width=config.resolution)
    images, jobs = sample_images(backbone, metadata, images_per_prompt, spec, config.seed, config.max_sequence_length)
    options = dict(config.reward_options).get("geneval", {})
    report = evaluate_images(images, jobs, metadata, options.get("confidence", CONFIDENCE_THRESHOLD),
                             options.get("counting_confidence", COUNTING_THRESHOLD))
    report["velocity_norm"] = velocity_norm(backbone, metadata, spec, config.seed, config.max_sequence_length)
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
