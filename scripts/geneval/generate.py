"""Generate GenEval images: N per prompt, from a model plus an optional LoRA, sharded over processes, resumable.

    python scripts/geneval/generate.py --metadata dataset/geneval/test_metadata.jsonl --outdir out/geneval \
        --model stabilityai/stable-diffusion-3.5-medium --lora_path logs/run/checkpoints/checkpoint-600
    accelerate launch --num_processes 8 scripts/geneval/generate.py ...          # prompt i on process i % 8

Layout (GenEval's): ``<outdir>/<index:05d>/metadata.jsonl`` and ``<outdir>/<index:05d>/samples/<k:04d>.png``.
A prompt whose folder already holds all its samples is skipped, so an interrupted run resumes where it
stopped. Image k of prompt i is seeded by (seed, i, k): the same images whatever the number of processes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import torch
from tqdm.auto import tqdm

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
    parser.add_argument("--model", default="stabilityai/stable-diffusion-3.5-medium", help="hub id, folder, or builtin:tiny")
    parser.add_argument("--lora_path", default="")
    parser.add_argument("--n_samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--scale", type=float, default=4.5, help="CFG scale")
    parser.add_argument("--H", type=int, default=512)
    parser.add_argument("--W", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max_sequence_length", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    args = parser.parse_args(argv)

    from accelerate import PartialState

    from flow_grpo.sd3 import encode_prompt, sd3_sample_with_logprob
    from flow_grpo.images import to_pil
    from flow_grpo.lora import LoraLoadError, load_lora
    from flow_grpo.seeding import generator_for
    from flow_grpo.sd3.pipeline import ModelLoadError, load_sd3_pipeline

    state = PartialState(cpu=not torch.cuda.is_available())
    try:
        metadata = read_metadata(args.metadata)
        pipeline = load_sd3_pipeline(args.model)
        if args.lora_path:
            load_lora(pipeline, args.lora_path)
    except (ValueError, ModelLoadError, LoraLoadError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.limit:
        metadata = metadata[: args.limit]
    dtype = torch.bfloat16 if state.device.type == "cuda" else torch.float32
    pipeline = pipeline.to(state.device, dtype)
    pipeline.vae.to(torch.float32)
    pipeline.set_progress_bar_config(disable=True)

    mine = [i for i in range(len(metadata)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not complete(os.path.join(args.outdir, f"{i:05d}"), args.n_samples)]
    jobs = [(i, k) for i in todo for k in range(args.n_samples)]
    if state.is_main_process:
        print(f"{len(metadata)} prompts x {args.n_samples} images; this process: {len(todo)} of its {len(mine)} prompts to do")
    negative = encode_prompt(pipeline, [""], args.max_sequence_length, state.device)
    for start in tqdm(range(0, len(jobs), args.batch_size), desc="generating", disable=not state.is_main_process):
        chunk = jobs[start : start + args.batch_size]
        prompts = [metadata[i]["prompt"] for i, _ in chunk]
        conditioning = encode_prompt(pipeline, prompts, args.max_sequence_length, state.device)
        with torch.autocast(state.device.type, dtype=dtype, enabled=dtype != torch.float32):
            trajectory = sd3_sample_with_logprob(
                pipeline, conditioning, negative,
                num_inference_steps=args.steps, guidance_scale=args.scale, height=args.H, width=args.W,
                deterministic=True, generator=[generator_for(args.seed, "geneval", i, k) for i, k in chunk],
            )
        for (i, k), image in zip(chunk, to_pil(trajectory.images)):
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
