"""Base vs LoRA images for the same prompts and seeds, side by side.

    python inference_demo.py --lora_path logs/run/checkpoints/checkpoint-100 --custom_prompt "a photo of two cats"
    python inference_demo.py --lora_path my_lora/ --test_file dataset/geneval/test_metadata.jsonl --num_images 2

Writes ``<output_dir>/base/`` and ``<output_dir>/lora/`` (``<prompt index>_<image index>.png``, same seed for
the two) and ``<output_dir>/grid.png`` (one row per prompt: base images, then LoRA images). ``--lora_path``
takes a flow_grpo checkpoint folder (its ``lora/``), a diffusers LoRA folder or file, or a PEFT adapter
folder. Any family (SD3, FLUX.1, Qwen-Image; ``--family`` or the model's ``model_index.json``). Sampling is the
deterministic ODE of ``flow_grpo.backbones.sampling`` (the same as the family's diffusers pipeline), image k of
prompt i seeded by (seed, i, k).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

DEFAULT_PROMPTS = ["a photo of a cat", "a red circle to the left of a blue square", 'a sign that says "Flow GRPO"']


class DemoError(ValueError):
    pass


def read_prompts(args) -> list[str]:
    if args.custom_prompt:
        return [args.custom_prompt]
    if not args.test_file:
        return list(DEFAULT_PROMPTS)
    if not os.path.isfile(args.test_file):
        raise DemoError(f"--test_file {args.test_file!r} not found")
    prompts = []
    with open(args.test_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if args.test_file.endswith(".jsonl"):
                try:
                    prompts.append(json.loads(line)["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DemoError(f"{args.test_file}:{number}: expected a JSON object with a 'prompt' field") from None
            else:
                prompts.append(line)
    if not prompts:
        raise DemoError(f"--test_file {args.test_file!r} holds no prompts")
    return prompts[: args.max_prompts] if args.max_prompts else prompts


def load_model(args, device: str, dtype: torch.dtype):
    """The backbone of ``--model_name`` (any family: SD3, FLUX.1, Qwen-Image) on ``device``."""
    from flow_grpo.backbones import ModelLoadError, load_backbone

    try:
        backbone = load_backbone(args.model_name, args.family, torch_dtype={"default": dtype, "vae": torch.float32})
    except ModelLoadError as error:
        raise DemoError(str(error).replace("config.pretrained.model", "--model_name")) from error
    backbone.pipeline.to(device, dtype)
    backbone.vae.to(torch.float32)
    return backbone


def generate(backbone, prompts, args) -> torch.Tensor:
    """Every prompt's ``--num_images`` ODE images, from flow_grpo's one generation function and seeding scheme."""
    from flow_grpo.backbones.sampling import GenerationOptions, SamplingSpec, generate_images, image_jobs

    spec = SamplingSpec(num_steps=args.num_steps, guidance_scale=args.guidance_scale, height=args.height, width=args.width)
    options = GenerationOptions(seed=args.seed, max_sequence_length=args.max_sequence_length, batch_size=args.batch_size,
                                progress=True)
    return generate_images(backbone, image_jobs(prompts, args.num_images), spec, options)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora_path", required=True)
    parser.add_argument("--model_name", default="stabilityai/stable-diffusion-3.5-medium",
                        help="hub id, local diffusers folder, or builtin:tiny / builtin:tiny_flux / builtin:tiny_qwenimage")
    parser.add_argument("--family", default="", help="sd3, flux or qwenimage (default: from the model's model_index.json)")
    parser.add_argument("--custom_prompt", default="")
    parser.add_argument("--test_file", default="", help=".txt (one prompt per line) or .jsonl with a 'prompt' field")
    parser.add_argument("--max_prompts", type=int, default=0, help="use only the first N prompts of --test_file")
    parser.add_argument("--num_images", type=int, default=4)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--num_steps", type=int, default=40)
    parser.add_argument("--guidance_scale", type=float, default=None,
                        help="CFG scale, or FLUX.1-dev's distilled guidance; default: the family's (SD3 4.5, FLUX 3.5, Qwen-Image 4)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="./demo_outputs")
    parser.add_argument("--device", default="", help="default: cuda when available, else cpu")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_sequence_length", type=int, default=256, help="T5 tokens")
    args = parser.parse_args(argv)

    from flow_grpo.images import image_grid, save_images, to_pil
    from flow_grpo.lora import LoraLoadError, load_lora, resolve_lora_path

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        resolve_lora_path(args.lora_path)  # fail before the (slow) model load
        prompts = read_prompts(args)
        backbone = load_model(args, device, dtype)
        if args.guidance_scale is None:
            args.guidance_scale = backbone.default_guidance_scale
        print(f"{len(prompts)} prompts x {args.num_images} images, {args.num_steps} steps, guidance {args.guidance_scale}, "
              f"{backbone.family}, on {device}")
        base = generate(backbone, prompts, args)
        kind = load_lora(backbone.pipeline, args.lora_path)
        print(f"loaded the LoRA at {args.lora_path} ({kind} format)")
        lora = generate(backbone, prompts, args)
    except (DemoError, LoraLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    names = [f"{p:03d}_{k}.png" for p in range(len(prompts)) for k in range(args.num_images)]
    save_images(base, os.path.join(args.output_dir, "base"), names)
    save_images(lora, os.path.join(args.output_dir, "lora"), names)
    cells = []
    base_pil, lora_pil = to_pil(base), to_pil(lora)
    for p in range(len(prompts)):
        rows = slice(p * args.num_images, (p + 1) * args.num_images)
        cells += base_pil[rows] + lora_pil[rows]
    col_labels = [f"base {k}" for k in range(args.num_images)] + [f"LoRA {k}" for k in range(args.num_images)]
    grid = image_grid(cells, cols=2 * args.num_images, row_labels=prompts, col_labels=col_labels, cell=min(256, args.height))
    grid.save(os.path.join(args.output_dir, "grid.png"))
    with open(os.path.join(args.output_dir, "prompts.json"), "w") as handle:
        json.dump({"prompts": prompts, "seed": args.seed, "lora_path": args.lora_path, "model_name": args.model_name}, handle, indent=2)
    print(f"wrote {args.output_dir}/base, {args.output_dir}/lora and {args.output_dir}/grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
