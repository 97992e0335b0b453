"""Generate GenEval images: N per prompt, from a model plus an optional LoRA, sharded over processes, resumable.

    python geneval/generation/generate.py --metadata dataset/geneval/test_metadata.jsonl --outdir out/geneval \
        --model stabilityai/stable-diffusion-3.5-medium --lora_path logs/run/checkpoints/checkpoint-600
    accelerate launch --num_processes 8 geneval/generation/generate.py ...          # prompt i on process i % 8

Layout (GenEval's): ``<outdir>/<index:05d>/metadata.jsonl`` and ``<outdir>/<index:05d>/samples/<k:04d>.png``.
A prompt whose folder already holds all its samples is skipped, so an interrupted run resumes where it
stopped. Image k of prompt i is seeded by (seed, i, k) (flow_grpo.backbones.generation.image_generator): the same
images whatever the number of processes. Any text-to-image family: SD3, FLUX.1, Qwen-Image (docs/backbones.md).
``--lora_path`` takes a trainer checkpoint (its ``lora/`` or a full fine-tuning's ``transformer/``) or a LoRA.
The model's own settings (``flow_grpo.model_settings``: the checkpoint's run config, the model folder's
``flow_grpo.json``) give every flag left out, so the shipped shapes model needs only its path; a flag that
differs from them gets a warning naming both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from flow_grpo.checkpoint.atomic import atomic_write_bytes  # noqa: E402
from flow_grpo.geneval.metadata import read_metadata  # noqa: E402


def complete(folder: str, n_samples: int) -> bool:
    return os.path.isfile(os.path.join(folder, "metadata.jsonl")) and all(
        os.path.isfile(os.path.join(folder, "samples", f"{k:04d}.png")) for k in range(n_samples)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", required=True, help="GenEval metadata .jsonl")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--model", default=None,
                        help="hub id, diffusers folder, or builtin:tiny / builtin:tiny_flux / builtin:tiny_qwenimage; default: "
                             "the checkpoint's base model, else stabilityai/stable-diffusion-3.5-medium")
    parser.add_argument("--family", default="", help="sd3, flux or qwenimage (default: from the model's model_index.json)")
    parser.add_argument("--lora_path", default="", help="a trainer checkpoint (LoRA or full fine-tuning) or a LoRA")
    parser.add_argument("--n_samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's evaluation steps, else 40")
    parser.add_argument("--scale", type=float, default=None,
                        help="CFG scale, or FLUX.1-dev's distilled guidance; default: the model's, else the family's "
                             "(SD3 4.5, FLUX 3.5, Qwen-Image 4)")
    parser.add_argument("--H", type=int, default=None, help="default: the model's, else 512")
    parser.add_argument("--W", type=int, default=None, help="default: the model's, else 512")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max_sequence_length", type=int, default=None, help="text tokens; default: the model's, else 256")
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    args = parser.parse_args(argv)

    from accelerate import PartialState

    from flow_grpo.backbones import load_backbone
    from flow_grpo.backbones.generation import GenerationOptions, ImageJob, SamplingSpec, generate_batches
    from flow_grpo.errors import InputError
    from flow_grpo.backbones.trainable import load_trained_weights, trained_weights_kind
    from flow_grpo.images import to_pil
    from flow_grpo.model_settings import choose, read_settings

    state = PartialState(cpu=not torch.cuda.is_available())
    dtype = torch.bfloat16 if state.device.type == "cuda" else torch.float32
    try:
        metadata = read_metadata(args.metadata)
        if args.lora_path:
            trained_weights_kind(args.lora_path)  # fail before the (slow) model load
        settings = read_settings(args.model or "", args.lora_path)
        args.model = choose(args.model, "model", settings, "stabilityai/stable-diffusion-3.5-medium", "--model")
        args.family = args.family or settings.get("family") or ""
        for flag, name, default in (("H", "height", 512), ("W", "width", 512), ("steps", "num_steps", 40),
                                    ("max_sequence_length", "max_sequence_length", 256)):
            setattr(args, flag, choose(getattr(args, flag), name, settings, default, f"--{flag}"))
        backbone = load_backbone(args.model, args.family, torch_dtype={"default": dtype, "vae": torch.float32})
        if args.lora_path:
            load_trained_weights(backbone.pipeline, args.lora_path)
        args.scale = choose(args.scale, "guidance_scale", settings, backbone.default_guidance_scale, "--scale")
    except (InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.limit:
        metadata = metadata[: args.limit]
    backbone.pipeline.to(state.device, dtype)
    backbone.vae.to(torch.float32)

    mine = [i for i in range(len(metadata)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not complete(os.path.join(args.outdir, f"{i:05d}"), args.n_samples)]
    jobs = [ImageJob(metadata[i]["prompt"], i, k) for i in todo for k in range(args.n_samples)]
    if state.is_main_process:
        print(f"{len(metadata)} prompts x {args.n_samples} images ({backbone.family}); this process: {len(todo)} of its {len(mine)} prompts to do")
    spec = SamplingSpec(num_steps=args.steps, guidance_scale=args.scale, height=args.H, width=args.W)
    options = GenerationOptions(
        seed=args.seed, max_sequence_length=args.max_sequence_length, batch_size=args.batch_size, progress=state.is_main_process,
        autocast=lambda: torch.autocast(state.device.type, dtype=dtype, enabled=dtype != torch.float32), description="generating",
    )
    for chunk, images in generate_batches(backbone, jobs, spec, options):
        for job, image in zip(chunk, to_pil(images)):
            i, k = job.prompt_index, job.image_index
            folder = os.path.join(args.outdir, f"{i:05d}")
            os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            atomic_write_bytes(os.path.join(folder, "samples", f"{k:04d}.png"), buffer.getvalue())
            if k == args.n_samples - 1 or not os.path.isfile(os.path.join(folder, "metadata.jsonl")):
                atomic_write_bytes(os.path.join(folder, "metadata.jsonl"), (json.dumps(metadata[i]) + "\n").encode())
    state.wait_for_everyone()
    if state.is_main_process:
        print(f"done: {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
