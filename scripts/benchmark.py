"""Time every phase of one Flow-GRPO training step, with FLOPs, MFU and peak memory; measure the speed levers.

    python scripts/benchmark.py --preset tiny-cpu
    python scripts/benchmark.py --preset sd35m-flowgrpo --reduced          # CPU-sized SD3.5-M analogue
    python scripts/benchmark.py --preset sd35m-fast --device cuda           # full size, on a GPU
    python scripts/benchmark.py --preset tiny-cpu --levers                  # each lever on and off
    python scripts/benchmark.py --preset flux-dev-flowgrpo --device cuda    # FLUX.1-dev at its published size
    python scripts/benchmark.py --preset qwenimage-flowgrpo --reduced       # a CPU-sized Qwen-Image analogue
    python scripts/benchmark.py --count-parameters                          # every preset's sizes, on the meta device

A step is one epoch of scripts/train.py run by the trainer's own parts (``training.assembly``: the model
set-up, objective, optimizer, EMA and policy; ``training.rollout.RolloutCollector``, ``training.advantages``
and ``training.update.update``) with a device-synchronised clock on each phase
(``training.phases``): prompt encoding, SDE sampling with log-probs, VAE decoding, the reward, the training
micro-steps (forward + backward, one per minibatch and trained timestep, the KL reference forward when
beta > 0), the optimizer and the EMA. Levers that are trainer options are set in its config. FLOPs are counted analytically (flow_grpo/flops.py, checked against PyTorch's counter); MFU is the
training micro-steps' FLOP rate over the matmul peak measured in the same run. The SD3.5-M, FLUX.1-dev and
Qwen-Image presets build the transformer, VAE and text encoders at their published sizes with random weights
(no download); ``--reduced`` shrinks them to run on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

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
    # the original flow_grpo's pickscore_flux: 512 px, 6 steps (5 trained), distilled guidance 3.5, noise 0.9,
    # LoRA r64, 3 images per GPU in groups of 24 (here two groups per step), T5 at 128 tokens
    "flux-dev-flowgrpo": dict(model="flux-dev", resolution=512, prompts=2, images_per_prompt=24, steps=6, guidance=3.5,
                              sde_type="sde", noise=0.9, trained_steps=5, window=0, window_range=(0, 6), beta=0.0,
                              reward="ocr", lora_rank=64, train_batch=3, max_sequence_length=128),
    # the original flow_grpo's pickscore_qwenimage: 512 px, 10 steps, true CFG 4 (negative " "), noise 1.2, an
    # SDE window of 2 in steps 0-4 (both trained), LoRA r64, 4 images per GPU in groups of 16
    "qwenimage-flowgrpo": dict(model="qwenimage", resolution=512, prompts=2, images_per_prompt=16, steps=10, guidance=4.0,
                               sde_type="sde", noise=1.2, trained_steps=2, window=2, window_range=(0, 5), beta=0.0,
                               reward="ocr", lora_rank=64, train_batch=4, max_sequence_length=512),
}
LEVERS = {
    "no_autocast": "sample and train without bf16/fp16 autocast (frozen weights stay in that dtype; GPU only)",
    "math_attention": "plain (unfused) attention instead of PyTorch's scaled_dot_product_attention",
    "sequential_cfg": "two transformer calls per CFG step instead of one batched call",
    "small_microbatch": "training micro-batches of 1 sample",
    "per_image_vae": "decode the VAE one image at a time",
    "serial_reward": "compute the reward after sampling instead of overlapping it with the next batch",
    "compile": "torch.compile the transformer",
    "gradient_checkpointing": "gradient checkpointing in the transformer (memory switch)",
}


def preset_models() -> dict:
    """Each family's full-size presets (``Backbone.presets``): model name -> its Backbone."""
    from flow_grpo.backbones import BACKBONES

    return {name: cls for cls in BACKBONES.values() for name in cls.presets}


def count_parameters(model: str) -> dict[str, int]:
    """Parameters of each part of a full-size preset model, built on the meta device (no memory, no weights)."""
    pipeline, _ = preset_models()[model].build_preset(model, False, "meta", torch.bfloat16)
    counts = {}
    for name, module in pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            counts[name] = sum(p.numel() for p in module.parameters())
    return counts


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


class InlineExecutor:
    """An executor that runs the reward at once (the serial_reward lever)."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future


def step_config(preset: dict, resolution: int, precision: str, levers: set):
    """The trainer config of one benchmark step: the preset's batch split into two sampling batches, one
    optimizer step over all of it, every lever that is a trainer option set from ``levers``."""
    from flow_grpo.config_cli import load_module

    config = load_module(os.path.join(REPO, "config", "base.py")).default()
    n = preset["prompts"] * preset["images_per_prompt"]
    stored = preset["window"] or preset["steps"]
    config.progress = False
    config.resolution = resolution
    config.max_sequence_length = preset["max_sequence_length"]
    config.mixed_precision = "no" if precision == "fp32" or "no_autocast" in levers else precision
    config.batched_cfg = "sequential_cfg" not in levers
    config.lora.rank, config.lora.alpha = preset["lora_rank"], 2 * preset["lora_rank"]
    config.sample.num_steps = preset["steps"]
    config.sample.guidance_scale = preset["guidance"]
    config.sample.noise_level = preset["noise"]
    config.sample.sde_type = preset["sde_type"]
    config.sample.sde_window_size = preset["window"]
    config.sample.sde_window_range = tuple(preset["window_range"])
    config.sample.train_batch_size = n // 2
    config.sample.num_image_per_prompt = preset["images_per_prompt"]
    config.sample.num_batches_per_epoch = 2
    # 64 images of 512 px in one VAE call take 16 GB for one group norm alone (measured: out of memory on an
    # 80 GB H100 beside the Fast preset's stored latents): decode in chunks of 16
    config.sample.decode_batch_size = 1 if "per_image_vae" in levers else 16
    config.train.batch_size = 1 if "small_microbatch" in levers else preset["train_batch"]
    config.train.gradient_accumulation_steps = n // config.train.batch_size  # one optimizer step per benchmark step
    config.train.timestep_fraction = preset["trained_steps"] / stored + 1e-6
    config.train.beta = preset["beta"]
    config.train.gradient_checkpointing = "gradient_checkpointing" in levers
    config.train.learning_rate = 1e-4
    config.train.ema_update_interval = 1
    config.train.ema_decay = 0.9
    config.compile = "compile" in levers
    return config


def run_step(setup: dict, levers: set, seed: int = 0) -> dict:
    """One training step of scripts/train.py, built from the same library parts (``training.assembly``, the
    rollout collector, advantages, the update loop) with a clock on each phase; returns times, FLOPs, memory.

    Every sample is trained: the random-weight models give whole groups equal rewards, which the trainer
    would drop as zero-advantage samples."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
    from flow_grpo.training.advantages import compute_advantages
    from flow_grpo.training.assembly import assemble_run
    from flow_grpo.training.collector import RolloutCollector
    from flow_grpo.training.sizes import run_sizes
    from flow_grpo.training.update import update

    backbone, preset, device = setup["backbone"], setup["preset"], setup["device"]
    config = step_config(preset, setup["resolution"], setup["precision"], levers)
    config.seed = seed
    sizes = run_sizes(config, processes=1)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != config.mixed_precision:
        AcceleratorState._reset_state()  # the no_autocast lever changes the precision within this process
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=config.mixed_precision,
                              gradient_accumulation_steps=sizes.micro_steps_per_optimizer_step)
    transformer = backbone.transformer
    if config.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    else:
        transformer.disable_gradient_checkpointing()
    timer = PhaseTimer(device)
    run = assemble_run(backbone, setup["model"], config, accelerator, timer=timer)
    prompts = [f'a sign that says "prompt {i}"' for i in range(preset["prompts"])]
    dataset = PromptDataset.from_prompts(prompts)
    executor = InlineExecutor() if "serial_reward" in levers else ThreadPoolExecutor(1)
    reward_fn = setup["reward_fn"]
    if "serial_reward" in levers:
        def reward_fn(*args, _inner=setup["reward_fn"]):  # noqa: E306 - timed where it runs: in line
            with timer("reward"):
                return _inner(*args)
    collector = RolloutCollector(
        backbone=backbone, transformer=run.sampling_transformer, negative=run.negative, dataset=dataset,
        sampler=DistributedKRepeatSampler(len(prompts), config.sample.train_batch_size, config.sample.num_image_per_prompt, seed=seed),
        reward_fn=reward_fn, executor=executor, accelerator=accelerator, config=config, timer=timer,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    attention = math_attention() if "math_attention" in levers else contextlib.nullcontext()
    synchronize(device)
    step_started = time.perf_counter()
    with attention:
        rollout = collector.collect(epoch=seed, store_means=run.objective.needs_step_means)
        advantages, _ = compute_advantages(accelerator, rollout, config.train)
        keep = torch.arange(len(rollout))
        _, steps_taken = update(run.learner, rollout, advantages, keep, config, torch.Generator().manual_seed(seed), 0)
    synchronize(device)
    total = time.perf_counter() - step_started
    if isinstance(executor, ThreadPoolExecutor):
        executor.shutdown()

    tokens = type(backbone).image_tokens(transformer.config, config.resolution, backbone.vae_scale_factor)
    text_tokens = rollout.conditioning.prompt_embeds.shape[1]
    cfg_factor = 2 if config.sample.guidance_scale > 1 and backbone.guidance_kind == "cfg" else 1
    images = sizes.images_per_epoch

    def forward(batch):
        return backbone.transformer_flops(transformer.config, batch, tokens, text_tokens)["total"]

    train_forwards = 2 + (1 if config.train.beta > 0 else 0)  # policy forward + backward (~1 forward) + reference
    return {"times": timer.times, "total_s": total, "images": images, "optimizer_steps": steps_taken,
            "micro_steps": images // config.train.batch_size * sizes.trained_steps,
            "sampling_flops": forward(images * cfg_factor) * config.sample.num_steps,
            "train_flops": forward(images * cfg_factor) * sizes.trained_steps * train_forwards,
            "num_trained_steps": sizes.trained_steps, **peak_memory(device)}


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
    parser.add_argument("--count-parameters", action="store_true",
                        help="print each full-size preset model's parameters (meta device, no memory) and stop")
    args = parser.parse_args(argv)
    if args.count_parameters:
        counts = {model: count_parameters(model) for model in preset_models()}
        for model, parts in counts.items():
            print(f"{model:10s} " + ", ".join(f"{name} {count / 1e9:.3f} B" for name, count in parts.items()))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(counts, handle, indent=2)
        return 0

    from flow_grpo.backbones import BUILTIN, backbone_for_pipeline
    from flow_grpo.rewards import multi_score
    from flow_grpo.training.assembly import prepare_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    preset = dict(PRESETS[args.preset])
    if preset["model"] == "tiny":
        pipeline, resolution = BUILTIN["builtin:tiny"].tiny_pipeline(seed=0), preset["resolution"]
    else:
        if device.type == "cpu" and not args.reduced:
            print(f"note: the full-size {args.preset} preset needs a GPU; add --reduced for the CPU analogue", file=sys.stderr)
        pipeline, resolution = preset_models()[preset["model"]].build_preset(preset["model"], args.reduced, device, dtype)
        if args.reduced:
            preset.update(prompts=min(preset["prompts"], 2), max_sequence_length=32)
            preset.update(images_per_prompt=min(preset["images_per_prompt"], 8), train_batch=4)
    pipeline.set_progress_bar_config(disable=True)
    backbone = backbone_for_pipeline(pipeline)
    reward_name = args.reward or preset["reward"]
    # the trainer's model set-up: frozen weights in the inference dtype, a float32 LoRA
    config = step_config(preset, resolution, precision, set())
    model = prepare_model(backbone, config, device)
    setup = {"backbone": backbone, "model": model, "preset": preset, "resolution": resolution, "device": device,
             "precision": precision, "reward_fn": multi_score({reward_name: 1.0})}
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 1024)
    print(f"{args.preset}{' (reduced)' if args.reduced else ''}, {backbone.summary()}, on {device} ({precision}): "
          f"{preset['prompts']} prompts x {preset['images_per_prompt']} images at {resolution} px, {preset['steps']} steps, "
          f"CFG {preset['guidance']}, {preset['sde_type']} {preset['noise']}, {preset['trained_steps']} trained steps, "
          f"beta {preset['beta']}, reward {reward_name}; matmul peak {peak / 1e12:.2f} TFLOP/s")

    def measure(levers: set) -> dict:
        run_step(setup, levers)  # warm-up (and compilation)
        runs = [run_step(setup, levers, seed=r + 1) for r in range(args.repeats)]
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
