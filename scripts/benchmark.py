"""Time every phase of one Flow-GRPO training step, with FLOPs, MFU and peak memory; measure the speed levers.

    python scripts/benchmark.py --preset tiny-cpu
    python scripts/benchmark.py --preset sd35m-flowgrpo --reduced          # CPU-sized SD3.5-M analogue
    python scripts/benchmark.py --preset sd35m-fast --device cuda           # full size, on a GPU
    python scripts/benchmark.py --preset tiny-cpu --levers                  # each lever on and off

A step is one epoch of scripts/train_sd3.py, built from the same library calls: prompt encoding, SDE
sampling with log-probs (per denoising step), VAE decoding, the reward, the training micro-steps (forward +
backward, one per minibatch and trained timestep, the KL reference forward when beta > 0), the optimizer and
the EMA. FLOPs are counted analytically (flow_grpo/flops.py, checked against PyTorch's counter); MFU is the
training micro-steps' FLOP rate over the matmul peak measured in the same run. The SD3.5-M presets build the
transformer, VAE and text encoders at their published sizes with random weights (no download);
``--reduced`` shrinks them to run on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = {
    "tiny-cpu": dict(model="tiny", resolution=64, prompts=4, images_per_prompt=4, steps=10, guidance=4.5, sde_type="sde",
                     noise=0.7, trained_steps=5, window=0, window_range=(0, 10), beta=0.04, reward="ocr", lora_rank=4,
                     train_batch=8, max_sequence_length=32),
    "sd35m-flowgrpo": dict(model="sd35m", resolution=512, prompts=8, images_per_prompt=8, steps=10, guidance=4.5, sde_type="sde",
                           noise=0.7, trained_steps=9, window=0, window_range=(0, 10), beta=0.04, reward="ocr", lora_rank=32,
                           train_batch=8, max_sequence_length=128),
    "sd35m-fast": dict(model="sd35m", resolution=512, prompts=8, images_per_prompt=16, steps=10, guidance=1.0, sde_type="cps",
                       noise=0.8, trained_steps=3, window=3, window_range=(0, 5), beta=0.0, reward="ocr", lora_rank=32,
                       train_batch=16, max_sequence_length=128),
}
LEVERS = {
    "recompute_old_logprobs": "recompute the old log-probs with a forward pass instead of keeping the sampled ones",
    "no_autocast": "train and sample in float32 instead of bf16/fp16 autocast (GPU only)",
    "math_attention": "plain (unfused) attention instead of PyTorch's scaled_dot_product_attention",
    "sequential_cfg": "two transformer calls per CFG step instead of one batched call",
    "small_microbatch": "training micro-batches of 1 sample",
    "per_image_vae": "decode the VAE one image at a time",
    "serial_reward": "compute the reward after sampling instead of overlapping it with the next batch",
    "compile": "torch.compile the transformer",
    "gradient_checkpointing": "gradient checkpointing in the transformer (memory switch)",
    "host_sync": "a host synchronisation (.item()) after every denoising and training step",
}


def sd35m_components(reduced: bool):
    """Configs of SD3.5 Medium's parts (published sizes), or a CPU-sized analogue with the same structure."""
    if reduced:
        return dict(
            transformer=dict(num_layers=2, attention_head_dim=64, num_attention_heads=4, caption_projection_dim=256,
                             joint_attention_dim=256, pooled_projection_dim=128, dual_attention_layers=(0,)),
            vae=dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16),
            clip_l=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, projection_dim=64),
            clip_g=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, projection_dim=64),
            t5=dict(d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4),
            resolution=128,
        )
    return dict(
        transformer=dict(num_layers=24, attention_head_dim=64, num_attention_heads=24, caption_projection_dim=1536,
                         joint_attention_dim=4096, pooled_projection_dim=2048, dual_attention_layers=tuple(range(13))),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        clip_l=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, projection_dim=768),
        clip_g=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120, projection_dim=1280),
        t5=dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
        resolution=512,
    )


def build_sd35m(reduced: bool, device, dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from flow_grpo.tiny_sd3 import BOS_ID, EOS_ID, PAD_ID, _vocabulary, make_tokenizer

    parts = sd35m_components(reduced)
    vocab = len(_vocabulary())
    with torch.device(device):  # allocate on the target device: no 8 B-parameter CPU initialisation
        transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, out_channels=16,
                                            pos_embed_max_size=384, qk_norm="rms_norm", **parts["transformer"])
        blocks = len(parts["vae"]["block_out_channels"])
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                            latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                            use_post_quant_conv=False, **parts["vae"])
        clips = [CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, pad_token_id=PAD_ID,
                                                            bos_token_id=BOS_ID, eos_token_id=EOS_ID, **parts[k]))
                 for k in ("clip_l", "clip_g")]
        t5 = T5EncoderModel(T5Config(vocab_size=vocab, feed_forward_proj="gated-gelu", pad_token_id=PAD_ID, eos_token_id=EOS_ID, **parts["t5"]))
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clips[0], tokenizer=make_tokenizer("clip", 77), text_encoder_2=clips[1], tokenizer_2=make_tokenizer("clip", 77),
        text_encoder_3=t5, tokenizer_3=make_tokenizer("t5", 512),
    )
    for module in (transformer, clips[0], clips[1], t5):
        module.to(dtype)
    return pipeline, parts["resolution"]


def matmul_peak(device, dtype, size: int) -> float:
    """Measured FLOP/s of large square matmuls: the denominator of MFU."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    repeats = 10 if device.type == "cuda" else 3
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30}
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class PhaseTimer:
    def __init__(self, device):
        self.device, self.times = device, {}

    @contextlib.contextmanager
    def __call__(self, name):
        synchronize(self.device)
        started = time.perf_counter()
        yield
        synchronize(self.device)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - started


def math_attention():
    """Route attention through the unfused math kernels (the 'before' of the fused-attention lever)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def run_step(pipeline, preset, resolution, device, dtype, levers: set, reward_fn, seed: int = 0) -> dict:
    """One training step; returns phase times, FLOPs and memory."""
    from flow_grpo import grpo
    from flow_grpo.diffusers_patch import decode_latents, denoising_step, encode_prompt, sd3_sample_with_logprob
    from flow_grpo.ema import EMA
    from flow_grpo.flops import image_tokens, sd3_transformer_flops
    from flow_grpo.lora import add_lora
    from flow_grpo.seeding import generator_for

    transformer = pipeline.transformer
    if not any("lora_" in n for n, _ in transformer.named_parameters()):
        add_lora(transformer, preset["lora_rank"], 2 * preset["lora_rank"])
    trainable = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in trainable:
        p.data = p.data.float()
        p.requires_grad_(True)
    if "gradient_checkpointing" in levers:
        transformer.enable_gradient_checkpointing()
    else:
        transformer.disable_gradient_checkpointing()
    model = torch.compile(transformer) if "compile" in levers else transformer
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ema = EMA(trainable, 0.9, 8)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 and "no_autocast" not in levers
                else contextlib.nullcontext())
    attention = math_attention() if "math_attention" in levers else contextlib.nullcontext()
    timer = PhaseTimer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = preset["prompts"] * preset["images_per_prompt"]
    prompts = [f'a sign that says "prompt {i}"' for i in range(preset["prompts"]) for _ in range(preset["images_per_prompt"])]
    guidance = preset["guidance"]
    executor = ThreadPoolExecutor(1)
    step_started = time.perf_counter()
    with attention:
        with timer("prompt_encoding"):
            embeds = encode_prompt(pipeline, prompts, preset["max_sequence_length"], device)
            negative = encode_prompt(pipeline, [""], preset["max_sequence_length"], device)
        halves = [slice(0, n // 2), slice(n // 2, n)]  # two sampling batches, as the trainer does
        trajectories, futures, decoded = [], [], []
        for part in halves:
            count = part.stop - part.start
            neg = (negative[0].expand(count, -1, -1), negative[1].expand(count, -1))
            with timer("sampling"), autocast, torch.no_grad():
                trajectory = sd3_sample_with_logprob(
                    pipeline, embeds[0][part], embeds[1][part], *neg, num_inference_steps=preset["steps"],
                    guidance_scale=guidance, height=resolution, width=resolution, noise_level=preset["noise"],
                    sde_type=preset["sde_type"], sde_window_size=preset["window"], sde_window_range=preset["window_range"],
                    window_generator=generator_for(seed, "window", part.start),
                    generator=[generator_for(seed, "noise", i) for i in range(part.start, part.stop)],
                    decode=False, transformer=model, batched_cfg="sequential_cfg" not in levers,
                )
                if "host_sync" in levers:
                    float(trajectory.log_probs.sum())
            with timer("vae_decode"), torch.no_grad():
                latents = trajectory.final_latents
                images = decode_latents(pipeline.vae, latents, 1 if "per_image_vae" in levers else None)
            trajectories.append(trajectory)
            decoded.append(images.float().cpu())
            if "serial_reward" in levers:
                with timer("reward"):
                    futures.append(reward_fn(decoded[-1], prompts[part], [{}] * count))
            else:
                futures.append(executor.submit(reward_fn, decoded[-1], prompts[part], [{}] * count))
        with timer("reward_wait"):
            results = [f if "serial_reward" in levers else f.result() for f in futures]
        rewards = torch.as_tensor([r for result in results for r in result[0]], dtype=torch.float32)
        advantages = torch.as_tensor(grpo.group_advantages(prompts, rewards.numpy()), dtype=torch.float32, device=device)

        latents = torch.cat([t.latents for t in trajectories])
        old_log_probs = torch.cat([t.log_probs for t in trajectories])
        timesteps = torch.cat([t.timesteps.expand(len(t.latents), -1) for t in trajectories])
        sigmas = torch.cat([t.sigmas.expand(len(t.latents), -1) for t in trajectories])
        sigmas_next = torch.cat([t.sigmas_next.expand(len(t.latents), -1) for t in trajectories])
        num_trained = min(preset["trained_steps"], old_log_probs.shape[1])
        batch = 1 if "small_microbatch" in levers else preset["train_batch"]
        micro_steps = 0
        for start in range(0, n, batch):
            rows = torch.arange(start, min(n, start + batch))
            rows_d = rows.to(device)
            step_embeds = (embeds[0][rows_d], embeds[1][rows_d], negative[0].expand(len(rows), -1, -1), negative[1].expand(len(rows), -1))
            for j in range(num_trained):
                args = (timesteps[rows, j], sigmas[rows, j], sigmas_next[rows, j], *step_embeds, guidance,
                        preset["noise"], preset["sde_type"])
                if "recompute_old_logprobs" in levers:
                    with timer("old_logprob_recompute"), autocast, torch.no_grad():
                        old = denoising_step(model, latents[rows, j], *args, prev_sample=latents[rows, j + 1])[1]
                else:
                    old = old_log_probs[rows, j]
                with timer("train_forward_backward"), autocast:
                    _, log_prob, mean, std = denoising_step(model, latents[rows, j], *args, prev_sample=latents[rows, j + 1])
                    loss, _ = grpo.clipped_policy_loss(log_prob, old, advantages[rows_d], 1e-4)
                    if preset["beta"] > 0:
                        with torch.no_grad():
                            transformer.disable_adapters()
                            mean_ref = denoising_step(model, latents[rows, j], *args, prev_sample=latents[rows, j + 1])[2]
                            transformer.enable_adapters()
                        loss = loss + preset["beta"] * grpo.gaussian_kl(mean, mean_ref, std).mean()
                    loss.backward()
                    if "host_sync" in levers:
                        float(loss.detach())
                micro_steps += 1
        with timer("optimizer"):
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        with timer("ema"):
            ema.step(8)
    synchronize(device)
    total = time.perf_counter() - step_started
    executor.shutdown()

    config = transformer.config
    tokens = image_tokens(config, resolution, pipeline.vae_scale_factor)
    text_tokens = embeds[0].shape[1]
    cfg_factor = 2 if guidance > 1 else 1
    forward = lambda b: sd3_transformer_flops(config, b, tokens, text_tokens)["total"]  # noqa: E731
    sampling_flops = forward(n * cfg_factor) * preset["steps"]
    train_forwards = 2 + (1 if preset["beta"] > 0 else 0)  # policy forward + backward (~1 forward) + reference
    train_flops = forward(n * cfg_factor) * num_trained * train_forwards
    return {"times": timer.times, "total_s": total, "images": n, "micro_steps": micro_steps, "sampling_flops": sampling_flops,
            "train_flops": train_flops, "num_trained_steps": num_trained, **peak_memory(device)}


def summarise(result: dict, peak: float) -> dict:
    times = result["times"]
    train_time = times.get("train_forward_backward", 0.0)
    return {
        "step_s": result["total_s"],
        "images_per_s": result["images"] / result["total_s"],
        "phases_s": {k: round(v, 4) for k, v in times.items()},
        "sampling_per_denoising_step_s": times.get("sampling", 0.0) / max(1, result.get("steps", 1)),
        "train_micro_step_s": train_time / max(1, result["micro_steps"]),
        "train_tflop": result["train_flops"] / 1e12,
        "sampling_tflop": result["sampling_flops"] / 1e12,
        "train_mfu": (result["train_flops"] / train_time / peak) if train_time else 0.0,
        "sampling_mfu": (result["sampling_flops"] / times["sampling"] / peak) if times.get("sampling") else 0.0,
        **{k: v for k, v in result.items() if k.startswith("peak_")},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny-cpu")
    parser.add_argument("--device", default="", help="default: cuda when available")
    parser.add_argument("--reduced", action="store_true", help="CPU-sized SD3.5-M analogue")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="", help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--lever", action="append", default=[], choices=list(LEVERS), help="switch one lever to its slow side")
    parser.add_argument("--levers", action="store_true", help="measure the baseline and every lever in turn")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps (after one warm-up step)")
    parser.add_argument("--reward", default="", help="override the preset's reward (e.g. brightness)")
    parser.add_argument("--json", default="", help="write the figures here")
    args = parser.parse_args(argv)

    from flow_grpo.rewards import build_reward
    from flow_grpo.tiny_sd3 import build_tiny_sd3_pipeline

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    preset = dict(PRESETS[args.preset])
    if preset["model"] == "tiny":
        pipeline, resolution = build_tiny_sd3_pipeline(), preset["resolution"]
        pipeline.to(device)
    else:
        if device.type == "cpu" and not args.reduced:
            print("note: the full-size SD3.5-M presets need a GPU; add --reduced for the CPU analogue", file=sys.stderr)
        pipeline, resolution = build_sd35m(args.reduced, device, dtype)
        if args.reduced:
            preset.update(prompts=min(preset["prompts"], 2), max_sequence_length=32)
    pipeline.set_progress_bar_config(disable=True)
    reward_name = args.reward or preset["reward"]
    reward_fn = build_reward(reward_name)
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 1024)
    print(f"{args.preset}{' (reduced)' if args.reduced else ''} on {device} ({precision}): "
          f"{preset['prompts']} prompts x {preset['images_per_prompt']} images at {resolution} px, {preset['steps']} steps, "
          f"CFG {preset['guidance']}, {preset['sde_type']} {preset['noise']}, {preset['trained_steps']} trained steps, "
          f"beta {preset['beta']}, reward {reward_name}; matmul peak {peak / 1e12:.2f} TFLOP/s")

    def measure(levers: set) -> dict:
        run_step(pipeline, preset, resolution, device, dtype, levers, reward_fn)  # warm-up (and compilation)
        runs = [run_step(pipeline, preset, resolution, device, dtype, levers, reward_fn, seed=r + 1) for r in range(args.repeats)]
        best = min(runs, key=lambda r: r["total_s"])
        best["steps"] = preset["steps"]
        return summarise(best, peak)

    results = {"preset": args.preset, "reduced": args.reduced, "device": str(device), "precision": precision,
               "matmul_peak_tflops": peak / 1e12, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()}}
    baseline = measure(set(args.lever))
    results["baseline"] = baseline
    print(json.dumps(baseline, indent=2))
    if args.levers:
        results["levers"] = {}
        applicable = [k for k in LEVERS if not (k == "no_autocast" and dtype == torch.float32)
                      and not (k == "sequential_cfg" and preset["guidance"] <= 1)]
        print("\n| lever (slow side) | step s | vs baseline |\n|---|---|---|")
        print(f"| baseline | {baseline['step_s']:.3f} | 1.00 |")
        for lever in applicable:
            try:
                figures = measure({lever})
            except Exception as error:  # noqa: BLE001 - a lever that cannot run here is reported, not fatal
                results["levers"][lever] = {"error": f"{type(error).__name__}: {error}"}
                print(f"| {lever} | n/a ({type(error).__name__}) | |")
                continue
            results["levers"][lever] = figures
            print(f"| {lever} | {figures['step_s']:.3f} | {figures['step_s'] / baseline['step_s']:.2f} |")
        # the baseline again at the end: the spread of the two is the noise floor of this machine
        again = measure(set(args.lever))
        results["baseline_again"] = again
        print(f"| baseline, measured again | {again['step_s']:.3f} | {again['step_s'] / baseline['step_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
