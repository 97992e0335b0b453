"""How close re-scored log-probs stay to the sampled ones: same batch in float32, under autocast, other batch sizes.

Samples a batch with the SDE in float32, then re-scores every stored transition as the trainer does
(``flow_grpo.sd3.policy.SD3Policy.score``) and prints the largest |log-prob difference| and the largest |ratio - 1| (compare with the clip range, 1e-4 for
``sde``) for each setting.

    python scripts/check_logprob_consistency.py [--model DIR] [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import contextlib

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="a diffusers SD3 folder or hub id; default: the tiny pipeline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", help="autocast dtype to test (bfloat16 or float16)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=0)
    parser.add_argument("--sde_type", default="sde")
    args = parser.parse_args()

    from flow_grpo.rollout import TransitionBatch
    from flow_grpo.sd3 import Guidance, encode_prompt, sd3_sample_with_logprob
    from flow_grpo.sd3.policy import SD3Policy
    from flow_grpo.sde import SDEParams
    from flow_grpo.tiny_sd3 import build_tiny_sd3_pipeline

    if args.model:
        from diffusers import StableDiffusion3Pipeline

        pipeline = StableDiffusion3Pipeline.from_pretrained(args.model)
    else:
        pipeline = build_tiny_sd3_pipeline()
    pipeline.to(args.device)
    resolution = args.resolution or pipeline.transformer.config.sample_size * pipeline.vae_scale_factor
    prompts = [f"a photo of {n} cats" for n in range(args.batch)]
    conditioning, negative = encode_prompt(pipeline, prompts, 32), encode_prompt(pipeline, [""], 32)
    trajectory = sd3_sample_with_logprob(
        pipeline, conditioning, negative, num_inference_steps=args.steps, guidance_scale=4.5, height=resolution, width=resolution,
        sde_type=args.sde_type, generator=torch.Generator().manual_seed(0), decode=False,
    )

    transformer = pipeline.transformer
    policy = SD3Policy(transformer=transformer, unwrapped=transformer, frozen_reference=None, guidance=Guidance(4.5, negative),
                       sde=SDEParams(0.7, args.sde_type), model_dtype=transformer.dtype,
                       timestep_scale=pipeline.scheduler.config.num_train_timesteps)

    def rescore(rows, autocast_dtype=None):
        context = torch.autocast(args.device.split(":")[0], dtype=getattr(torch, autocast_dtype)) if autocast_dtype else contextlib.nullcontext()
        out = []
        with torch.no_grad(), context:
            for j in range(trajectory.log_probs.shape[1]):
                batch = TransitionBatch(
                    latents=trajectory.latents[rows, j], next_latents=trajectory.latents[rows, j + 1],
                    sigmas=trajectory.sigmas[j].expand(len(rows)), sigmas_next=trajectory.sigmas_next[j].expand(len(rows)),
                    old_log_probs=trajectory.log_probs[rows, j], conditioning=conditioning.select(rows),
                )
                out.append(policy.score(batch).log_prob.float())
        return torch.stack(out, dim=1)

    all_rows = torch.arange(args.batch)
    settings = [
        ("float32, same batch", [all_rows], None),
        (f"{args.dtype} autocast, same batch", [all_rows], args.dtype),
        ("float32, batches of 3", list(all_rows.split(3)), None),
        ("float32, batches of 1", list(all_rows.split(1)), None),
    ]
    print(f"{args.batch} images x {trajectory.log_probs.shape[1]} steps, {args.sde_type}, device {args.device}")
    print(f"{'setting':34s} {'max |dlogp|':>12s} {'max |ratio-1|':>14s}")
    for name, chunks, dtype in settings:
        rescored = torch.cat([rescore(rows, dtype) for rows in chunks])
        diff = (rescored - trajectory.log_probs).abs()
        ratio = (torch.exp(rescored - trajectory.log_probs) - 1).abs()
        print(f"{name:34s} {diff.max().item():12.3e} {ratio.max().item():14.3e}")


if __name__ == "__main__":
    main()
