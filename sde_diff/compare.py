"""ODE vs SDE sampling from the same initial noise, with a static HTML gallery.

For each prompt one initial noise is drawn (image 0 of the prompt in flow_grpo's one seeding scheme); the ODE image and the SDE images at several noise levels (and
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
    source.add_argument("--model", help="hub id or local diffusers folder (SD3, FLUX.1, Qwen-Image), or builtin:tiny_flux ...")
    source.add_argument("--tiny", action="store_true", help="use a tiny random SD3 built in code")
    parser.add_argument("--family", default="", help="sd3, flux or qwenimage (default: from model_index.json)")
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
    from flow_grpo.backbones import ModelLoadError, load_backbone
    from flow_grpo.backbones.generation import GenerationOptions, SamplingSpec, generate_images, image_jobs
    from flow_grpo.images import save_images

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        backbone = load_backbone("builtin:tiny" if args.tiny else args.model, args.family)
    except ModelLoadError as error:
        print(f"error: {str(error).replace('config.pretrained.model', '--model')}", file=sys.stderr)
        return 2
    backbone.pipeline.to(device, torch.bfloat16 if device.startswith("cuda") else torch.float32)
    backbone.vae.to(torch.float32)
    resolution = args.resolution or (64 if args.tiny else 512)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)

    n = len(args.prompts)
    jobs = image_jobs(args.prompts, 1)  # image 0 of each prompt: the same initial noise in every column
    options = GenerationOptions(seed=args.seed, max_sequence_length=256, batch_size=max(1, n))
    columns = [("ode", 0.0)] + [(t, a) for t in args.sde_types for a in args.noise_levels]
    results = {}
    for sde_type, level in columns:
        spec = SamplingSpec(num_steps=args.num_steps, guidance_scale=args.guidance_scale, height=resolution, width=resolution,
                            noise_level=level, sde_type="sde" if sde_type == "ode" else sde_type)
        images = generate_images(backbone, jobs, spec, options)
        name = "ode" if sde_type == "ode" else f"{sde_type}_{level:g}"
        save_images(images, os.path.join(args.out, "images"), [f"{i:03d}_{name}.png" for i in range(n)])
        results[name] = images.float()

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
