"""Our sampler (SDE steps with log-probs stored) vs the family's plain diffusers pipeline call on the same work.

Both get the same precomputed prompt embeddings, the same initial latents, step count, CFG and VAE decode;
the figure is the median wall-clock of several repeats and their ratio (ours / diffusers).

    python scripts/bench_sampler_overhead.py [--batch 8] [--steps 10] [--repeats 7] [--model DIR or builtin:tiny_flux]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:tiny", help="a diffusers folder, hub id or built-in tiny model")
    parser.add_argument("--family", default="", help="sd3, flux or qwenimage (default: from model_index.json)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance_scale", type=float, default=4.5)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()

    from flow_grpo.backbones import load_backbone
    from flow_grpo.backbones.generation import SampleNoise, SamplingSpec, initial_latents, sample

    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model, args.family)
    resolution = args.resolution
    prompts = [f"a photo of {n} red circles" for n in range(args.batch)]
    conditioning = backbone.encode(prompts, 32, backbone.transformer.device)
    negative = backbone.negative_conditioning(32, backbone.transformer.device)
    latents = initial_latents((args.batch, *backbone.latent_shape(resolution, resolution)), torch.Generator().manual_seed(0), "cpu")
    spec = SamplingSpec(num_steps=args.steps, guidance_scale=args.guidance_scale, height=resolution, width=resolution, noise_level=0.7)

    def run_diffusers():
        return backbone.diffusers_call(conditioning, negative, latents, spec)

    def run_ours():
        return sample(backbone, conditioning, negative, spec, SampleNoise(latents.clone(), steps=torch.Generator().manual_seed(1))).images

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
        "family": backbone.family, "batch": args.batch, "steps": args.steps, "guidance_scale": args.guidance_scale, "resolution": resolution,
        "threads": torch.get_num_threads(), "diffusers_s": diffusers_s, "ours_s": ours_s, "ratio": ours_s / diffusers_s,
    }
    print(f"{args.batch} images x {args.steps} steps at {resolution} px, CFG {args.guidance_scale}, {torch.get_num_threads()} threads")
    print(f"diffusers {type(backbone.pipeline).__name__}.__call__: {diffusers_s * 1000:.1f} ms (median of {args.repeats})")
    print(f"flow_grpo.backbones.generation.sample (SDE, log-probs stored): {ours_s * 1000:.1f} ms")
    print(f"ratio ours / diffusers: {result['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
