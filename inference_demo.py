"""Base vs LoRA samples for the same prompts and seeds, side by side: images, videos or edits.

    python inference_demo.py --lora_path logs/run/checkpoints/checkpoint-100 --custom_prompt "a photo of two cats"
    python inference_demo.py --lora_path my_lora/ --test_file dataset/geneval/test_metadata.jsonl --num_images 2
    python inference_demo.py --model_name Wan-AI/Wan2.1-T2V-1.3B-Diffusers --lora_path ... --height 240 --width 416 --num_frames 33
    python inference_demo.py --model_name black-forest-labs/FLUX.1-Kontext-dev --lora_path ... \
        --custom_prompt "make the circle red" --input_image scene.png

Writes ``<output_dir>/base/`` and ``<output_dir>/lora/`` (``<prompt index>_<image index>.png``, same seed for
the two; a video family writes ``.mp4``, or ``.gif`` without OpenCV) and ``<output_dir>/grid.png`` (one row per
prompt: base samples, then LoRA samples; for an editing family the input image first; for videos a frame
strip, one row per clip, with the side-by-side clip in ``grid.mp4``). ``--lora_path`` takes a flow_grpo
checkpoint folder (its ``lora/``, or the ``transformer/`` of a fully fine-tuned run such as ``make demo``'s), a
diffusers LoRA folder or file, or a PEFT adapter folder. The model's own settings travel with it
(``flow_grpo.model_settings``): the checkpoint's run config (its base model, size, text length, evaluation
steps and guidance) and the model folder's ``flow_grpo.json`` give every flag left out, and a flag that
differs from them gets a warning naming both. Any family
(SD3, FLUX.1, Qwen-Image, Wan2.1, FLUX.1 Kontext; ``--family`` or the model's ``model_index.json``). An editing
family needs an input image per instruction: ``--input_image`` with ``--custom_prompt``, or a ``--test_file``
jsonl whose lines have an ``image`` field (relative to the file's folder, as dataset/shapes_edit). Sampling is
the deterministic ODE of ``flow_grpo.backbones.generation`` (the same as the family's diffusers pipeline),
sample k of prompt i seeded by (seed, i, k).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

DEFAULT_PROMPTS = ["a photo of a cat", "a red circle to the left of a blue square", 'a sign that says "Flow GRPO"']


class DemoError(ValueError):  # an input error of this script's own flags
    pass


def read_prompts(args) -> tuple[list[str], list[str] | None]:
    """The prompts, and for an edit the input image of each (paths), or None."""
    if args.custom_prompt:
        return [args.custom_prompt], ([args.input_image] if args.input_image else None)
    if args.input_image:
        raise DemoError("--input_image goes with --custom_prompt (a --test_file names its images in an 'image' field)")
    if not args.test_file:
        return list(DEFAULT_PROMPTS), None
    if not os.path.isfile(args.test_file):
        raise DemoError(f"--test_file {args.test_file!r} not found")
    prompts, images = [], []
    with open(args.test_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if args.test_file.endswith(".jsonl"):
                try:
                    item = json.loads(line)
                    prompts.append(item["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DemoError(f"{args.test_file}:{number}: expected a JSON object with a 'prompt' field") from None
                if isinstance(item.get("image"), str):
                    images.append(os.path.join(os.path.dirname(os.path.abspath(args.test_file)), item["image"]))
            else:
                prompts.append(line)
    if not prompts:
        raise DemoError(f"--test_file {args.test_file!r} holds no prompts")
    if images and len(images) != len(prompts):
        raise DemoError(f"{args.test_file}: {len(images)} of {len(prompts)} lines have an 'image' field (all or none)")
    count = args.max_prompts or len(prompts)
    return prompts[:count], (images[:count] if images else None)


def load_model(args, device: str, dtype: torch.dtype):
    """The backbone of ``--model_name`` (any family) on ``device``."""
    from flow_grpo.backbones import ModelLoadError, load_backbone

    try:
        backbone = load_backbone(args.model_name, args.family, torch_dtype={"default": dtype, "vae": torch.float32})
    except ModelLoadError as error:
        raise DemoError(str(error).replace("config.pretrained.model", "--model_name")) from error
    backbone.pipeline.to(device, dtype)
    backbone.vae.to(torch.float32)
    return backbone


def generate(backbone, prompts, inputs, args) -> torch.Tensor:
    """Every prompt's ``--num_images`` ODE samples, from flow_grpo's one generation function and seeding scheme;
    ``inputs``: the input images ``[P, 3, H, W]`` of an edit, or None."""
    from flow_grpo.backbones.generation import GenerationOptions, ImageJob, SamplingSpec, generate_images

    spec = SamplingSpec(num_steps=args.num_steps, guidance_scale=args.guidance_scale, height=args.height, width=args.width,
                        num_frames=args.num_frames)
    options = GenerationOptions(seed=args.seed, max_sequence_length=args.max_sequence_length, batch_size=args.batch_size,
                                progress=True)
    jobs = [ImageJob(prompt, i, k, None if inputs is None else inputs[i]) for i, prompt in enumerate(prompts) for k in range(args.num_images)]
    return generate_images(backbone, jobs, spec, options)


def load_inputs(paths, backbone, args):
    """The edit's input images at the output size, or None; an editing family without them (or the reverse) stops."""
    from flow_grpo.data import load_input_image
    from flow_grpo.errors import InputError

    if backbone.takes_input_image and paths is None:
        raise DemoError(f"{backbone.family} edits images: give --input_image with --custom_prompt, or a --test_file jsonl "
                        "with an 'image' field per line")
    if paths is None:
        return None
    if not backbone.takes_input_image:
        raise DemoError(f"{backbone.family} generates from text only: drop --input_image (or the test file's images)")
    try:
        return torch.stack([load_input_image(path, (args.height, args.width)) for path in paths])
    except (FileNotFoundError, InputError) as error:
        raise DemoError(str(error)) from error


def save_side_by_side(base, lora, prompts, inputs, args) -> str:
    """``grid.png``: per prompt the base samples, then the LoRA ones (an edit's input image first); videos: a
    frame strip per clip and the clips side by side in ``grid.mp4``."""
    from flow_grpo.images import image_grid, to_pil
    from flow_grpo.videos import frame_strip, video_grid, write_video

    n = args.num_images
    if base.ndim == 5:
        order = torch.cat([torch.cat([base[p * n:(p + 1) * n], lora[p * n:(p + 1) * n]]) for p in range(len(prompts))])
        labels = [f"{'base' if k < n else 'LoRA'} {k % n}: {prompts[p]}" for p in range(len(prompts)) for k in range(2 * n)]
        write_video(video_grid(order, cols=2 * n), os.path.join(args.output_dir, "grid.mp4"))
        frame_strip(order, labels=labels, cell=min(256, max(96, args.height, args.width))).save(os.path.join(args.output_dir, "grid.png"))
        return "grid.png (frame strips) and the side-by-side clip grid.mp4"
    cells, base_pil, lora_pil = [], to_pil(base), to_pil(lora)
    input_pil = to_pil(inputs) if inputs is not None else None
    for p in range(len(prompts)):
        rows = slice(p * n, (p + 1) * n)
        cells += ([input_pil[p]] if input_pil else []) + base_pil[rows] + lora_pil[rows]
    col_labels = (["input"] if input_pil else []) + [f"base {k}" for k in range(n)] + [f"LoRA {k}" for k in range(n)]
    grid = image_grid(cells, cols=len(col_labels), row_labels=prompts, col_labels=col_labels, cell=min(256, max(96, args.height)))
    grid.save(os.path.join(args.output_dir, "grid.png"))
    return "grid.png"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora_path", required=True, help="a trainer checkpoint (LoRA or full fine-tuning) or a LoRA")
    parser.add_argument("--model_name", default=None,
                        help="hub id, local diffusers folder, or builtin:tiny[_flux|_qwenimage|_wan|_kontext]; default: the "
                             "checkpoint's base model, else stabilityai/stable-diffusion-3.5-medium")
    parser.add_argument("--family", default="",
                        help="sd3, flux, qwenimage, wan or flux_kontext (default: from the model's model_index.json)")
    parser.add_argument("--custom_prompt", default="")
    parser.add_argument("--input_image", default="", help="an editing family's input image, with --custom_prompt")
    parser.add_argument("--test_file", default="", help=".txt (one prompt per line) or .jsonl with a 'prompt' field")
    parser.add_argument("--max_prompts", type=int, default=0, help="use only the first N prompts of --test_file")
    parser.add_argument("--num_images", type=int, default=4)
    parser.add_argument("--height", type=int, default=None, help="default: the model's, else 512")
    parser.add_argument("--width", type=int, default=None, help="default: the model's, else 512")
    parser.add_argument("--num_frames", type=int, default=None,
                        help="frames per video (4k + 1); default: the model's, else 33 for a video family and 1 for images")
    parser.add_argument("--num_steps", type=int, default=None, help="default: the model's evaluation steps, else 40")
    parser.add_argument("--guidance_scale", type=float, default=None,
                        help="CFG scale, or FLUX.1's distilled guidance; default: the model's, else the family's (SD3 4.5, "
                             "FLUX 3.5, Qwen-Image 4, Wan 5, Kontext 2.5)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="./demo_outputs")
    parser.add_argument("--device", default="", help="default: cuda when available, else cpu")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_sequence_length", type=int, default=None, help="text tokens; default: the model's, else 256")
    args = parser.parse_args(argv)

    from flow_grpo.backbones.trainable import load_trained_weights, trained_weights_kind
    from flow_grpo.errors import InputError
    from flow_grpo.images import save_images
    from flow_grpo.model_settings import choose, read_settings
    from flow_grpo.videos import write_video

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        kind = trained_weights_kind(args.lora_path)  # fail before the (slow) model load
        settings = read_settings(args.model_name or "", args.lora_path)
        args.model_name = choose(args.model_name, "model", settings, "stabilityai/stable-diffusion-3.5-medium", "--model_name")
        args.family = args.family or settings.get("family") or ""
        for name, default in (("height", 512), ("width", 512), ("num_steps", 40), ("max_sequence_length", 256)):
            setattr(args, name, choose(getattr(args, name), name, settings, default, f"--{name}"))
        prompts, input_paths = read_prompts(args)
        backbone = load_model(args, device, dtype)
        inputs = load_inputs(input_paths, backbone, args)
        args.guidance_scale = choose(args.guidance_scale, "guidance_scale", settings, backbone.default_guidance_scale, "--guidance_scale")
        args.num_frames = choose(args.num_frames, "num_frames", settings, 33 if backbone.modality == "video" else 1, "--num_frames")
        backbone.latent_shape(args.height, args.width, args.num_frames)  # a size off the family's grid stops here
        print(f"{len(prompts)} prompts x {args.num_images} samples, {args.num_steps} steps, guidance {args.guidance_scale}, "
              f"{backbone.family}, on {device}")
        base = generate(backbone, prompts, inputs, args)
        load_trained_weights(backbone.pipeline, args.lora_path)
        print(f"loaded the trained weights at {args.lora_path} ({'a fully fine-tuned transformer' if kind == 'transformer' else f'LoRA, {kind} format'})")
        lora = generate(backbone, prompts, inputs, args)
    except (DemoError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stems = [f"{p:03d}_{k}" for p in range(len(prompts)) for k in range(args.num_images)]
    for folder, samples in (("base", base), ("lora", lora)):
        if samples.ndim == 5:  # videos
            for stem, video in zip(stems, samples):
                write_video(video, os.path.join(args.output_dir, folder, f"{stem}.mp4"))
        else:
            save_images(samples, os.path.join(args.output_dir, folder), [f"{stem}.png" for stem in stems])
    written = save_side_by_side(base, lora, prompts, inputs, args)
    with open(os.path.join(args.output_dir, "prompts.json"), "w") as handle:
        json.dump({"prompts": prompts, "input_images": input_paths, "seed": args.seed, "lora_path": args.lora_path,
                   "model_name": args.model_name}, handle, indent=2)
    print(f"wrote {args.output_dir}/base, {args.output_dir}/lora and {args.output_dir}/{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
