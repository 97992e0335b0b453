"""ODE vs SDE sampling from the same initial noise, with a static HTML gallery.

For each prompt one initial noise is drawn; the ODE image and the SDE images at several noise levels (and
for both step types, ``sde`` and ``cps``) all start from it, so the gallery shows what the SDE changes.
Each cell also gives the RMS pixel distance to the ODE image of its row.

    python sde_diff/compare.py --model path/to/sd3 --prompts "a photo of a cat" "two red circles"
    python sde_diff/compare.py --tiny --out sde_diff/out        # a tiny random pipeline, for a quick look
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="hub id or local diffusers SD3 folder")
    source.add_argument("--tiny", action="store_true", help="use a tiny random SD3 built in code")
    parser.add_argument("--prompts", nargs="+", default=["a photo of a cat", "two red circles and a blue square"])
    parser.add_argument("--noise_levels", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--sde_types", nargs="+", default=["sde", "cps"], choices=["sde", "cps"])
    parser.add_argument("--num_steps", type=int, default=10)
    parser.add_argument("--guidance_scale", type=float, default=4.5)
    parser.add_argument("--resolution", type=int, default=0, help="default: 512, or the tiny model's 64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="", help="default: cuda when available")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from flow_grpo.sd3 import encode_prompt, sd3_sample_with_logprob
    from flow_grpo.images import save_images

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        from flow_grpo.tiny_sd3 import build_tiny_sd3_pipeline

        pipeline = build_tiny_sd3_pipeline()
        resolution = args.resolution or 64
    else:
        from diffusers import StableDiffusion3Pipeline

        if os.path.sep in args.model and not os.path.isdir(args.model):
            print(f"error: --model {args.model!r}: no such folder", file=sys.stderr)
            return 2
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        pipeline = StableDiffusion3Pipeline.from_pretrained(args.model, torch_dtype=dtype)
        resolution = args.resolution or 512
    pipeline = pipeline.to(device)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)

    n = len(args.prompts)
    conditioning = encode_prompt(pipeline, args.prompts, 256, device)
    negative = encode_prompt(pipeline, [""], 256, device)
    latent_size = resolution // pipeline.vae_scale_factor
    latents = torch.randn(
        n, pipeline.transformer.config.in_channels, latent_size, latent_size, generator=torch.Generator().manual_seed(args.seed)
    ).to(device)
    common = dict(
        num_inference_steps=args.num_steps, guidance_scale=args.guidance_scale, height=resolution, width=resolution
    )
    columns = [("ode", 0.0)] + [(t, a) for t in args.sde_types for a in args.noise_levels]
    results = {}
    for sde_type, level in columns:
        trajectory = sd3_sample_with_logprob(
            pipeline, conditioning, negative, latents=latents.clone(),
            deterministic=sde_type == "ode", noise_level=level, sde_type="sde" if sde_type == "ode" else sde_type,
            generator=torch.Generator(device="cpu").manual_seed(args.seed + 1), **common,
        )
        name = "ode" if sde_type == "ode" else f"{sde_type}_{level:g}"
        save_images(trajectory.images, os.path.join(args.out, "images"), [f"{i:03d}_{name}.png" for i in range(n)])
        results[name] = trajectory.images.float().cpu()

    ode = results["ode"]
    rows = []
    for i, prompt in enumerate(args.prompts):
        cells = []
        for name in results:
            rms = float(((results[name][i] - ode[i]) ** 2).mean().sqrt())
            cells.append(
                f'<td><img src="images/{i:03d}_{name}.png" width="192"><br><small>{name}'
                + ("" if name == "ode" else f" &middot; RMS to ODE {rms:.3f}")
                + "</small></td>"
            )
        rows.append(f"<tr><th>{html.escape(prompt)}</th>{''.join(cells)}</tr>")
    header = "".join(f"<th>{name}</th>" for name in results)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ODE vs SDE</title>
<style>body{{font-family:sans-serif}} td,th{{padding:4px;text-align:center;vertical-align:top}} img{{image-rendering:pixelated}}</style>
</head><body><h1>ODE vs SDE from the same initial noise</h1>
<p>{args.num_steps} steps, CFG {args.guidance_scale}, {resolution} px, seed {args.seed}. Columns: ODE, then each step
type at each noise level. A noise level of a is std_t = a sqrt(s / (1 - s)) for <code>sde</code> and
std = s' sin(a pi / 2) for <code>cps</code>.</p>
<table><tr><th>prompt</th>{header}</tr>{''.join(rows)}</table></body></html>"""
    with open(os.path.join(args.out, "index.html"), "w", encoding="utf-8") as handle:
        handle.write(page)
    with open(os.path.join(args.out, "settings.json"), "w") as handle:
        json.dump(vars(args), handle, indent=2)
    print(f"wrote {os.path.join(args.out, 'index.html')} ({n} prompts x {len(results)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
