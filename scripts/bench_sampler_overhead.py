"""Our SD3 sampler (SDE steps with log-probs stored) vs a plain diffusers pipeline call on the same work.

Both get the same precomputed prompt embeddings, the same initial latents, step count, CFG and VAE decode;
the figure is the median wall-clock of several repeats and their ratio (ours / diffusers).

    python scripts/bench_sampler_overhead.py [--batch 8] [--steps 10] [--repeats 7] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="a diffusers SD3 folder; default: the tiny pipeline built in code")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance_scale", type=float, default=4.5)
    parser.add_argument("--resolution", type=int, default=0, help="default: the model's native resolution")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()

    from flow_grpo.sd3 import encode_prompt, sd3_sample_with_logprob
    from flow_grpo.tiny_sd3 import build_tiny_sd3_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from diffusers import StableDiffusion3Pipeline

        pipeline = StableDiffusion3Pipeline.from_pretrained(args.model)
    else:
        pipeline = build_tiny_sd3_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    resolution = args.resolution or pipeline.transformer.config.sample_size * pipeline.vae_scale_factor
    prompts = [f"a photo of {n} red circles" for n in range(args.batch)]
    conditioning = encode_prompt(pipeline, prompts, 32)
    negative = encode_prompt(pipeline, [""] * args.batch, 32)
    latent_size = resolution // pipeline.vae_scale_factor
    latents = torch.randn(args.batch, pipeline.transformer.config.in_channels, latent_size, latent_size, generator=torch.Generator().manual_seed(0))

    def run_diffusers():
        return pipeline(
            prompt_embeds=conditioning.prompt_embeds, pooled_prompt_embeds=conditioning.pooled_prompt_embeds,
            negative_prompt_embeds=negative.prompt_embeds, negative_pooled_prompt_embeds=negative.pooled_prompt_embeds, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
            height=resolution, width=resolution, latents=latents.clone(), output_type="pt",
        ).images

    def run_ours():
        return sd3_sample_with_logprob(
            pipeline, conditioning, negative, num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, height=resolution, width=resolution, noise_level=0.7,
            latents=latents.clone(), generator=torch.Generator().manual_seed(1),
        ).images

    times = {"diffusers": [], "ours": []}
    with torch.no_grad():
        run_diffusers(), run_ours()  # warm-up
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
            for name, fn in (("diffusers", run_diffusers), ("ours", run_ours)):
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    diffusers_s, ours_s = statistics.median(times["diffusers"]), statistics.median(times["ours"])
    result = {
        "batch": args.batch, "steps": args.steps, "guidance_scale": args.guidance_scale, "resolution": resolution,
        "threads": torch.get_num_threads(), "diffusers_s": diffusers_s, "ours_s": ours_s, "ratio": ours_s / diffusers_s,
    }
    print(f"{args.batch} images x {args.steps} steps at {resolution} px, CFG {args.guidance_scale}, {torch.get_num_threads()} threads")
    print(f"diffusers StableDiffusion3Pipeline.__call__: {diffusers_s * 1000:.1f} ms (median of {args.repeats})")
    print(f"flow_grpo sd3_sample_with_logprob (SDE, log-probs stored): {ours_s * 1000:.1f} ms")
    print(f"ratio ours / diffusers: {result['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
