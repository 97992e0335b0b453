"""Pretrain the shapes world's base model: a small Stable Diffusion 3 trained from scratch on rendered scenes.

    python scripts/pretrain_shapes.py --out models/shapes-sd3            # both phases, resumable
    python scripts/pretrain_shapes.py --out models/shapes-sd3 --vae-steps 0 --work logs/pretrain_shapes  # resume

Same architecture and code path as SD3.5 at small sizes: an ``AutoencoderKL`` (32 px -> 8 x 8 x 4 latents),
an ``SD3Transformer2DModel`` (patch 2, joint attention over image and text tokens), two CLIP text encoders
and a T5 (word-level tokenizers), and the ``FlowMatchEulerDiscreteScheduler``. The text encoders stay random and
frozen by default; ``--train-text-encoders`` trains them jointly with the transformer (with their own EMA, saved
with the pipeline and frozen from then on, as SD3's are during post-training).

Phase 1 trains the VAE on random scenes (L1 + L2 reconstruction, a tiny KL term). Phase 2 sets the latent
scale and shift from the data, then trains the transformer by rectified flow matching on scenes drawn for
every prompt of the world (all six tags, train and test prompts alike, as a pretrained model has seen
everything), with logit-normal timesteps, 10% empty captions (for classifier-free guidance) and an EMA of
the weights. Every ``--eval-every`` steps it samples the held-out test prompts and prints GenEval-shapes
accuracy by tag. Deterministic for a seed on a given machine (torch version, thread count). The EMA weights
are saved as a diffusers pipeline in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flow_grpo.images import to_tensor  # noqa: E402
from flow_grpo.shapes.grammar import TAGS, all_metadata  # noqa: E402
from flow_grpo.shapes.render import RESOLUTION, render, sample_scene  # noqa: E402

VAE_CHANNELS = (32, 64, 64)
LATENT_CHANNELS = 4


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS), block_out_channels=VAE_CHANNELS, layers_per_block=1,
        latent_channels=LATENT_CHANNELS, norm_num_groups=8, sample_size=RESOLUTION, mid_block_add_attention=False,
        scaling_factor=1.0, shift_factor=0.0,
    )


def build_transformer(args, joint_attention_dim: int, pooled_dim: int):
    from diffusers import SD3Transformer2DModel

    latent = RESOLUTION // 2 ** (len(VAE_CHANNELS) - 1)
    return SD3Transformer2DModel(
        sample_size=latent, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        num_layers=args.layers, attention_head_dim=args.head_dim, num_attention_heads=args.heads,
        joint_attention_dim=joint_attention_dim, caption_projection_dim=args.head_dim * args.heads,
        pooled_projection_dim=pooled_dim, pos_embed_max_size=latent // 2,
    )


def prompt_space() -> list[dict]:
    return [m for tag in TAGS for m in all_metadata(tag)]


def scenes(rng: random.Random, metadata: list[dict], by_tag: dict, n: int):
    """n scenes, tags uniform, prompts uniform within a tag; returns (images [n,3,H,W] in [-1,1], prompt ids)."""
    ids = []
    for _ in range(n):
        ids.append(rng.choice(by_tag[rng.choice(TAGS)]))
    images = to_tensor([render(sample_scene(metadata[i], rng)) for i in ids]) * 2 - 1
    return images, torch.tensor(ids)


def train_vae(args, work: str, metadata, by_tag):
    vae = build_vae()
    path = os.path.join(work, "vae")
    state_path = os.path.join(work, "vae_state.json")
    start = 0
    if os.path.isfile(state_path):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(path)
        start = json.load(open(state_path))["step"]
    if start >= args.vae_steps:
        return vae
    rng = random.Random(args.seed * 1000 + start)
    torch.manual_seed(args.seed + start)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + start + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s + start) / args.vae_steps)))
    )
    vae.train()
    started = time.time()
    for step in range(start, args.vae_steps):
        images, _ = scenes(rng, metadata, by_tag, args.vae_batch)
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = (reconstruction - images).abs().mean() + ((reconstruction - images) ** 2).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % 100 == 0 or step + 1 == args.vae_steps:
            print(f"vae step {step + 1}/{args.vae_steps} loss {loss.item():.4f} ({time.time() - started:.0f}s)", flush=True)
        if (step + 1) % 500 == 0 or step + 1 == args.vae_steps:
            vae.save_pretrained(path)
            json.dump({"step": step + 1}, open(state_path, "w"))
    return vae.eval()


@torch.no_grad()
def encode_dataset(vae, rng, metadata, by_tag, n: int, batch: int = 256):
    latents, ids = [], []
    for start in range(0, n, batch):
        images, prompt_ids = scenes(rng, metadata, by_tag, min(batch, n - start))
        latents.append(vae.encode(images).latent_dist.mode())
        ids.append(prompt_ids)
    return torch.cat(latents), torch.cat(ids)


def encoded_dataset(args, vae, metadata, by_tag):
    """The transformer's training set: ``--dataset-size`` scenes encoded by the VAE, as (latent modes, prompt ids).

    With ``--dataset-cache`` the tensors are kept in that file (torch's tensor-only format, read with
    ``weights_only``) and reused by later runs, so that ablations train on the same scenes and skip the encoding
    (about 7 minutes for 100,000 scenes on one core).
    """
    cache = args.dataset_cache
    if cache and os.path.isfile(cache):
        saved = torch.load(cache, weights_only=True)
        if int(saved["seed"]) == args.seed and len(saved["latents"]) == args.dataset_size:
            print(f"encoded dataset read from {cache}", flush=True)
            return saved["latents"], saved["prompt_ids"]
        print(f"{cache} holds another dataset (seed or size differ): encoding anew", flush=True)
    rng = random.Random(args.seed + 1)
    torch.manual_seed(args.seed + 1)
    latents, prompt_ids = encode_dataset(vae, rng, metadata, by_tag, args.dataset_size)
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        torch.save({"latents": latents, "prompt_ids": prompt_ids, "seed": args.seed}, cache + ".tmp")
        os.replace(cache + ".tmp", cache)
    return latents, prompt_ids


HELD_OUT_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def held_out_loss(transformer, held_out, embeds, unconditional: bool = False) -> float:
    """Flow-matching loss on scenes of the test prompts at fixed sigmas and fixed noise: a smooth, low-noise
    companion to the accuracy (which moves in steps of 1/240), comparable across runs of one dataset.

    ``unconditional`` gives every scene the empty prompt's embedding (the last row of ``embeds``): the gap
    between the two losses is how much the model reads the prompt.
    """
    x0, ids, noise = held_out
    if unconditional:
        ids = torch.full_like(ids, len(embeds.prompt_embeds) - 1)
    losses = []
    for sigma in HELD_OUT_SIGMAS:
        x_sigma = (1 - sigma) * x0 + sigma * noise
        timestep = torch.full((len(x0),), sigma * 1000.0)
        prediction = transformer(hidden_states=x_sigma, timestep=timestep, encoder_hidden_states=embeds.prompt_embeds[ids],
                                 pooled_projections=embeds.pooled_prompt_embeds[ids], return_dict=False)[0]
        losses.append(float(((prediction - (noise - x0)) ** 2).mean()))
    return float(np.mean(losses))


TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def text_parameters(text_pipeline) -> list:
    return [p for name in TEXT_ENCODERS for p in getattr(text_pipeline, name).parameters()]


@torch.no_grad()
def held_out_accuracy(pipeline, transformer, test, args, steps=20):
    """GenEval-shapes accuracy by tag on the test prompts (ODE, CFG), from flow_grpo's one generation function."""
    from flow_grpo.backbones.generation import GenerationOptions, SamplingSpec, generate_images, image_jobs
    from flow_grpo.backbones.sd3 import SD3Backbone
    from flow_grpo.geneval.scorer import GenEvalScorer
    from flow_grpo.images import to_pil

    jobs = image_jobs([m["prompt"] for m in test], args.eval_images)
    spec = SamplingSpec(num_steps=steps, guidance_scale=args.eval_cfg, height=RESOLUTION, width=RESOLUTION)
    options = GenerationOptions(seed=args.seed, max_sequence_length=16, batch_size=128, transformer=transformer)
    images = generate_images(SD3Backbone(pipeline), jobs, spec, options)
    results = GenEvalScorer("shapes")(to_pil(images), [test[job.prompt_index] for job in jobs])
    by_tag = {}
    for job, result in zip(jobs, results):
        by_tag.setdefault(test[job.prompt_index]["tag"], []).append(result["correct"])
    accuracy = {tag: float(np.mean(v)) for tag, v in by_tag.items()}
    accuracy["overall"] = float(np.mean([accuracy[t] for t in TAGS if t in accuracy]))
    return accuracy


def losses_only(args, state_path: str, step: int, models: dict) -> None:
    """``--losses-only``: the held-out losses of the checkpoint in ``--work`` (EMA, raw, unconditional), merged into
    the row of that step in ``eval_history.jsonl`` (rewritten atomically); for runs evaluated before a loss existed."""
    if not os.path.isfile(state_path):
        raise SystemExit(f"--losses-only: no checkpoint {state_path}")
    losses = {"held_out_loss": held_out_loss(models["ema"], models["held_out"], models["embeds"]),
              "held_out_loss_raw": held_out_loss(models["raw"].eval(), models["held_out"], models["raw_embeds"]),
              "held_out_loss_unconditional": held_out_loss(models["ema"], models["held_out"], models["embeds"], unconditional=True)}
    path = os.path.join(args.work, "eval_history.jsonl")
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    matching = [row for row in rows if row["step"] == step]
    if not matching:
        raise SystemExit(f"--losses-only: {path} has no row of step {step}, the checkpoint's")
    matching[-1].update(losses)
    with open(path + ".tmp", "w") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(path + ".tmp", path)
    print("losses " + json.dumps({"step": step, **losses}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/shapes-sd3")
    parser.add_argument("--work", default="logs/pretrain_shapes", help="intermediate checkpoints (resumable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--vae-batch", type=int, default=64)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--dataset-size", type=int, default=100_000, help="encoded scenes for the transformer")
    parser.add_argument("--dataset-cache", default="", help="keep the encoded scenes in this file and reuse them")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--train-text-encoders", action="store_true",
                        help="train the three text encoders jointly with the transformer (default: random and frozen)")
    parser.add_argument("--shift", type=float, default=3.0, help="the sampling schedule's shift, saved in the scheduler")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-cfg", type=float, default=4.5)
    parser.add_argument("--eval-images", type=int, default=4, help="images per held-out prompt at each evaluation")
    parser.add_argument("--save-every", type=int, default=0,
                        help="also checkpoint (resumable state, no evaluation) every this many steps; 0: at evaluations only")
    parser.add_argument("--losses-only", action="store_true",
                        help="compute the held-out losses of the checkpoint in --work into its eval_history row, and stop")
    parser.add_argument("--save-every-eval", action="store_true", help="also save the pipeline at each evaluation")
    parser.add_argument("--no-exemplars", action="store_true",
                        help="skip the detector's decoded exemplars (1-2 min): for a VAE whose exemplars you have, e.g. the shipped one")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)  # recorded in pretraining.json
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    started = time.time()

    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from flow_grpo.backbones.sd3 import encode_prompt
    from flow_grpo.backbones.sd3.prompt import encode_prompt_with_grad
    from flow_grpo.geneval.metadata import read_metadata
    from flow_grpo.backbones.sd3.tiny import TinySD3Config, build_tiny_sd3_pipeline

    metadata = prompt_space()
    by_tag = {tag: [i for i, m in enumerate(metadata) if m["tag"] == tag] for tag in TAGS}

    # ---- phase 1: the VAE ----
    vae = train_vae(args, args.work, metadata, by_tag)
    vae_time = time.time() - started

    # ---- latent statistics, text encoders, the encoded dataset ----
    latents, prompt_ids = encoded_dataset(args, vae, metadata, by_tag)
    shift_factor, scaling_factor = float(latents.mean()), float(1.0 / latents.std())
    vae.register_to_config(shift_factor=shift_factor, scaling_factor=scaling_factor)
    latents = (latents - shift_factor) * scaling_factor
    print(f"latents: shift {shift_factor:.4f}, scale {scaling_factor:.4f}; {len(latents)} scenes encoded", flush=True)

    text_config = TinySD3Config(resolution=RESOLUTION, clip_max_length=16, t5_max_length=16)
    text = build_tiny_sd3_pipeline(text_config, seed=args.seed)  # the pipeline's encoders (the EMA when trained)
    prompts = [m["prompt"] for m in metadata]
    cpu = torch.device("cpu")

    def all_embeds(text_pipeline):
        """Every prompt's conditioning, then the empty prompt's as the last row."""
        with torch.no_grad():
            return encode_prompt(text_pipeline, prompts + [""], 16, cpu)

    embeds = all_embeds(text)
    negative = encode_prompt(text, [""], 16, cpu)
    trained_text = None  # the encoders the optimizer moves, with --train-text-encoders (same initial weights)
    if args.train_text_encoders:
        trained_text = build_tiny_sd3_pipeline(text_config, seed=args.seed)
        for name in TEXT_ENCODERS:  # eval mode: no dropout in T5; gradients flow all the same
            getattr(trained_text, name).requires_grad_(True).eval()
            getattr(text, name).requires_grad_(False).eval()
        print(f"text encoders: {sum(p.numel() for p in text_parameters(trained_text)) / 1e6:.2f}M parameters, trained", flush=True)

    transformer = build_transformer(args, embeds.prompt_embeds.shape[-1], embeds.pooled_prompt_embeds.shape[-1])
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=args.shift)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer,
        text_encoder_2=text.text_encoder_2, tokenizer_2=text.tokenizer_2, text_encoder_3=text.text_encoder_3,
        tokenizer_3=text.tokenizer_3,
    )
    ema = build_transformer(args, embeds.prompt_embeds.shape[-1], embeds.pooled_prompt_embeds.shape[-1])
    ema.load_state_dict(transformer.state_dict())
    ema.requires_grad_(False).eval()
    print(f"transformer: {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M parameters", flush=True)

    state_path = os.path.join(args.work, "transformer_state.pt")
    trained_parameters = list(transformer.parameters()) + (text_parameters(trained_text) if trained_text else [])
    optimizer = torch.optim.AdamW(trained_parameters, lr=args.lr, weight_decay=0.01)
    start, seconds_before = 0, 0.0  # seconds spent by earlier invocations of a resumed run
    if os.path.isfile(state_path):
        state = torch.load(state_path, weights_only=True)
        if ("text_encoders" in state) != bool(trained_text):
            raise SystemExit(f"{state_path} was written {'with' if 'text_encoders' in state else 'without'} --train-text-encoders: "
                             "resume it with the same setting, or point --work at a new folder")
        transformer.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if trained_text:
            for name in TEXT_ENCODERS:
                getattr(trained_text, name).load_state_dict(state["text_encoders"][name])
                getattr(text, name).load_state_dict(state["text_encoders_ema"][name])
            embeds, negative = all_embeds(text), encode_prompt(text, [""], 16, cpu)
        start, seconds_before = int(state["step"]), float(state.get("seconds", 0.0))
    for group in optimizer.param_groups:
        group["lr"] = args.lr  # the schedule below multiplies this base rate

    def lr_factor(s: int) -> float:
        s += start  # resumed runs continue the schedule where it stopped
        return min(1.0, (s + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / args.steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    test = read_metadata(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dataset", "shapes", "test_metadata.jsonl"))
    # 512 scenes of the test prompts, encoded once, with their noise: the held-out loss of every evaluation
    held_out_rng = random.Random(args.seed + 2)
    test_ids = [next(i for i, m in enumerate(metadata) if m["prompt"] == t["prompt"]) for t in test]
    held_out_ids = torch.tensor([test_ids[i % len(test_ids)] for i in range(512)])
    with torch.no_grad():
        held_out_images = to_tensor([render(sample_scene(metadata[i], held_out_rng)) for i in held_out_ids.tolist()]) * 2 - 1
        held_out_x0 = (vae.encode(held_out_images).latent_dist.mode() - shift_factor) * scaling_factor
    held_out = (held_out_x0, held_out_ids, torch.randn(held_out_x0.shape, generator=torch.Generator().manual_seed(args.seed + 3)))

    if args.losses_only:
        return losses_only(args, state_path, start, {"ema": ema, "raw": transformer, "held_out": held_out, "embeds": embeds,
                                                     "raw_embeds": all_embeds(trained_text) if trained_text else embeds})
    ema_parameters = list(ema.parameters()) + (text_parameters(text) if trained_text else [])  # pairs trained_parameters
    generator = torch.Generator().manual_seed(args.seed * 7919 + start)
    transformer.train()
    phase2 = time.time()
    history = []
    for step in range(start, args.steps):
        rows = torch.randint(len(latents), (args.batch,), generator=generator)
        x0, ids = latents[rows], prompt_ids[rows]
        drop = torch.rand(args.batch, generator=generator) < args.caption_dropout
        if trained_text is None:
            prompt_embeds, pooled = embeds.prompt_embeds[ids].clone(), embeds.pooled_prompt_embeds[ids].clone()
            prompt_embeds[drop], pooled[drop] = negative.prompt_embeds[0], negative.pooled_prompt_embeds[0]
        else:  # encoded with gradients, the dropped captions as the empty prompt
            batch_prompts = ["" if dropped else prompts[i] for i, dropped in zip(ids.tolist(), drop.tolist())]
            conditioning = encode_prompt_with_grad(trained_text, batch_prompts, 16, cpu)
            prompt_embeds, pooled = conditioning.prompt_embeds, conditioning.pooled_prompt_embeds
        sigma = torch.sigmoid(torch.randn(args.batch, generator=generator))
        noise = torch.randn(x0.shape, generator=generator)
        x_sigma = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * noise
        prediction = transformer(hidden_states=x_sigma, timestep=sigma * 1000, encoder_hidden_states=prompt_embeds,
                                 pooled_projections=pooled, return_dict=False)[0]
        loss = ((prediction - (noise - x0)) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained_parameters, 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for e, p in zip(ema_parameters, trained_parameters):
                e.mul_(args.ema).add_(p.detach(), alpha=1 - args.ema)
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f} lr {schedule.get_last_lr()[0]:.2e} ({time.time() - phase2:.0f}s)", flush=True)
        evaluate = (step + 1) % args.eval_every == 0 or step + 1 == args.steps
        if evaluate or (args.save_every and (step + 1) % args.save_every == 0):
            state = {"model": transformer.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                     "seconds": seconds_before + time.time() - started}
            if trained_text:
                state["text_encoders"] = {name: getattr(trained_text, name).state_dict() for name in TEXT_ENCODERS}
                state["text_encoders_ema"] = {name: getattr(text, name).state_dict() for name in TEXT_ENCODERS}
            torch.save(state, state_path + ".tmp")
            os.replace(state_path + ".tmp", state_path)
            print(f"checkpoint at step {step + 1}", flush=True)
        if evaluate:
            if trained_text:
                embeds = all_embeds(text)  # the EMA encoders' conditioning, which the pipeline now samples with
            accuracy = held_out_accuracy(pipeline, ema, test, args)
            transformer.eval()
            raw_embeds = all_embeds(trained_text) if trained_text else embeds
            loss_ema, loss_raw = held_out_loss(ema, held_out, embeds), held_out_loss(transformer, held_out, raw_embeds)
            loss_unconditional = held_out_loss(ema, held_out, embeds, unconditional=True)
            transformer.train()
            history.append({"step": step + 1, "seconds": seconds_before + time.time() - started, "held_out_loss": loss_ema,
                            "held_out_loss_raw": loss_raw, "held_out_loss_unconditional": loss_unconditional, **accuracy})
            print("eval " + json.dumps(history[-1]), flush=True)
            with open(os.path.join(args.work, "eval_history.jsonl"), "a") as handle:
                handle.write(json.dumps(history[-1]) + "\n")
            if args.save_every_eval:
                pipeline.transformer = ema
                pipeline.save_pretrained(os.path.join(args.work, f"pipeline-{step + 1}"))
                pipeline.transformer = transformer

    pipeline.transformer = ema
    pipeline.save_pretrained(args.out)
    # the settings it was trained for travel with it (flow_grpo.model_settings): sampling scripts default to them
    with open(os.path.join(args.out, "flow_grpo.json"), "w") as handle:
        json.dump({"resolution": RESOLUTION, "max_sequence_length": 16, "guidance_scale": args.eval_cfg, "num_steps": 20}, handle, indent=2)
    total = seconds_before + time.time() - started
    with open(os.path.join(args.work, "eval_history.jsonl")) as handle:  # every invocation's, a resumed run's too
        history = [json.loads(line) for line in handle if line.strip()]
    info = {"vae_steps": args.vae_steps, "transformer_steps": args.steps, "vae_seconds": vae_time, "total_seconds": total,
            "threads": torch.get_num_threads(), "command": "python scripts/pretrain_shapes.py " + shlex.join(argv),
            "args": vars(args), "eval_history": history}
    with open(os.path.join(args.out, "pretraining.json"), "w") as handle:
        json.dump(info, handle, indent=2)
    print(f"saved {args.out} after {total / 60:.1f} min", flush=True)
    # the detector's exemplars as this VAE decodes shapes (flow_grpo/shapes/detector.py); the shipped ones are the
    # shipped base's: point the shapes backend at these with reward_options {"geneval": {"exemplars": PATH}}
    if args.no_exemplars:
        return
    from flow_grpo.shapes.exemplars import decoded_exemplars

    np.savez_compressed(os.path.join(args.out, "decoded_exemplars.npz"), **decoded_exemplars(vae))


if __name__ == "__main__":
    main()
