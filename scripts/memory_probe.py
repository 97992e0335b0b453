"""The largest training micro-batch of SD3.5-M (LoRA, 512 px) that fits a 24, 40 or 80 GB card, measured.

    python scripts/memory_probe.py --json docs/benchmarks/memory-h100.json        # on a GPU
    python scripts/memory_probe.py --reduced                                      # the CPU-sized analogue

Builds SD3.5 Medium's parts at their published sizes with random weights (``scripts/benchmark.py``), records
the resident memory of each (transformer, the three text encoders, VAE), then runs one training micro-step of
the LoRA transformer (forward with batched CFG, backward, AdamW step) per micro-batch size, with and without
gradient checkpointing, and records its peak above the resident weights. A card fits a micro-batch when the
transformer, the VAE, the text encoders (where they stay on the GPU) and that peak sum to less than 92% of it
(the rest: the CUDA context, the allocator's fragmentation). With LoRA the reference is the same transformer
with its adapter disabled, so it costs no memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CARDS_GB = (24, 40, 80)
USABLE = 0.92


def allocated_gb(device) -> float:
    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def module_gb(module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**30


def micro_step_peak_gb(transformer, optimizer, batch: int, resolution: int, text_tokens: int, device, dtype) -> float:
    """Peak memory (GB) above what was allocated before one micro-step of ``batch`` images with batched CFG."""
    latent = resolution // 8
    rows = 2 * batch  # conditional and unconditional halves in one call
    config = transformer.config
    hidden = torch.randn(rows, config.in_channels, latent, latent, device=device, dtype=dtype)
    text = torch.randn(rows, text_tokens, config.joint_attention_dim, device=device, dtype=dtype)
    pooled = torch.randn(rows, config.pooled_projection_dim, device=device, dtype=dtype)
    timestep = torch.full((rows,), 500.0, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = allocated_gb(device)
    with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
        velocity = transformer(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                               timestep=timestep, return_dict=False)[0]
    velocity.float().square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type != "cuda":
        return 0.0
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30 - before


def largest_fit(resident_gb: float, peaks: dict[int, float], card_gb: float) -> int:
    """The largest measured micro-batch whose peak fits ``card_gb`` on top of ``resident_gb`` (0: none)."""
    fitting = [b for b, peak in peaks.items() if peak is not None and resident_gb + peak <= USABLE * card_gb]
    return max(fitting, default=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="CPU-sized analogue (checks the code path; no memory figures)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=77 + 128, help="CLIP's 77 + T5's max_sequence_length")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    from peft import LoraConfig

    from flow_grpo.backbones.sd3.presets import build_sd35m

    device = torch.device("cuda" if torch.cuda.is_available() and not args.reduced else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipeline, resolution = build_sd35m(args.reduced, device, dtype)
    resident = {"transformer": module_gb(pipeline.transformer), "vae": module_gb(pipeline.vae),
                "text_encoders": sum(module_gb(m) for m in (pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3))}
    for module in (pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3):
        module.to("cpu")  # what is measured below is the transformer's step alone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    transformer = pipeline.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, init_lora_weights="gaussian",
                                       target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
    resident["lora_and_adam"] = sum(p.numel() for p in trainable) * 4 * 4 / 2**30  # weights, grads, two moments

    print(f"SD3.5-M{' (reduced)' if args.reduced else ''} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}: "
          + ", ".join(f"{k} {v:.2f} GB" for k, v in resident.items()), flush=True)
    peaks: dict[str, dict[int, float | None]] = {}
    for checkpointing in (False, True):
        name = "checkpointing" if checkpointing else "plain"
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        peaks[name] = {}
        for batch in args.batches:
            try:
                peaks[name][batch] = micro_step_peak_gb(transformer, optimizer, batch, resolution, args.text_tokens, device, dtype)
            except torch.cuda.OutOfMemoryError:
                peaks[name][batch] = None
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                print(f"  {name} micro-batch {batch}: out of memory", flush=True)
                break
            print(f"  {name} micro-batch {batch}: {peaks[name][batch]:.2f} GB above the weights", flush=True)

    weights = resident["transformer"] + resident["vae"] + resident["lora_and_adam"]
    presets = {}
    for card in CARDS_GB:
        for encoders_on_gpu in (True, False):
            base = weights + (resident["text_encoders"] if encoders_on_gpu else 0.0)
            key = f"{card}GB{'' if encoders_on_gpu else ', text encoders off the GPU'}"
            presets[key] = {"plain": largest_fit(base, peaks["plain"], card),
                            "checkpointing": largest_fit(base, peaks["checkpointing"], card), "resident_gb": base}
    print("\n| card | resident GB | largest micro-batch (CFG pairs) | with gradient checkpointing |\n|---|---|---|---|")
    for key, row in presets.items():
        print(f"| {key} | {row['resident_gb']:.1f} | {row['plain']} | {row['checkpointing']} |")
    if args.json:
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        with open(args.json, "w") as handle:
            json.dump({"device": device_name, "resolution": resolution, "lora_rank": args.lora_rank,
                       "text_tokens": args.text_tokens, "usable_fraction": USABLE, "resident_gb": resident,
                       "micro_step_peak_gb": peaks, "presets": presets}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
