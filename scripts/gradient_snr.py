"""How noisy is one epoch's policy gradient? Cosines between the gradients of independent rollout batches.

    python scripts/gradient_snr.py --config config/shapes.py:shapes_grpo --estimates 5
    python scripts/gradient_snr.py --config config/shapes.py:shapes_grpo '--config.reward_fn={"brightness": 1.0}' '--config.reward_options={}'
    python scripts/gradient_snr.py --config config/shapes.py:shapes_fast --fresh-prompts
    python scripts/gradient_snr.py --config config/shapes.py:shapes_grpo --breakdown   # per step, per weight group

Each estimate is one epoch of the config's sampling (``sample.train_batch_size x num_batches_per_epoch``
images in groups of ``num_image_per_prompt``, seeded as the trainer seeds epoch ``10_000 + r``), its
per-prompt advantages, and the gradient of the config's objective (the trainer's own ``objective.loss``) at
the sampling policy, over the timesteps the config trains; for ``grpo`` that is the on-policy gradient
``-mean_i A_i sum_t grad log p(x_t+1 | x_t)``; for the forward-process objectives (``nft``, ``awm``, ...: ODE
rollouts, their snapshots equal to the sampling weights) the gradient of their loss there. It is taken for every transformer weight (a LoRA's gradient is a random projection of
this one: its expected cosines are the same). By default every estimate uses the same prompts, so the
cosines measure the sampling noise alone; ``--fresh-prompts`` draws new prompts each time (what successive
epochs of training see). ``flow_grpo.snr`` turns the cosines into a signal-to-noise ratio and the samples per
optimizer step a target cosine would need, beside the floor that no reward beats for an isotropic Jacobian
(``snr.ideal_samples_for_cosine``: about one sample per Gaussian noise dimension the update credits, latent
size x trained steps). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from flow_grpo.data import DistributedKRepeatSampler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def policy_gradient(policy, objective, rollout, advantages: torch.Tensor, config, generator) -> torch.Tensor:
    """Flat gradient of the objective's loss at the sampling policy (ratio 1) for all transformer weights, one
    row per trained step (the j-th trained step of every sample): [steps, parameters]; the sum over rows is
    the gradient of one update. The library's own minibatches and ``objective.loss``, every sample kept,
    each minibatch weighted by its share of the samples."""
    from flow_grpo.objectives import Minibatch
    from flow_grpo.training.update import select_train_timesteps

    params = list(policy.trained_module.parameters())
    for param in params:
        param.requires_grad_(True)
        param.grad = None
    n, device = len(rollout), rollout.final_latents.device
    steps = select_train_timesteps(rollout.num_steps, config.train.timestep_fraction, config.train.timestep_strategy, n, generator,
                                   config.train.timestep_count)
    minibatches = [Minibatch(rollout=rollout, rows=rows, steps=steps[rows], advantages=advantages[rows].to(device), device=device,
                             noise_seed=int(rows[0]))
                   for rows in torch.arange(n).split(config.train.batch_size)]
    prepared = [objective.prepare(policy, minibatch)[0] for minibatch in minibatches]
    per_step = []
    for j in range(steps.shape[1]):
        for minibatch, state in zip(minibatches, prepared):
            loss, _ = objective.loss(policy, minibatch, j, state)
            (loss * len(minibatch.rows) / n).backward()
        per_step.append(torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in params]))
        for param in params:
            param.grad = None
    for param in params:
        param.requires_grad_(False)
    return torch.stack(per_step)


def estimate(collector, policy, objective, config, epoch: int) -> tuple[torch.Tensor, dict]:
    """One epoch of rollouts (the trainer's collector) and its policy gradient; returns (per-step gradients
    [steps, parameters], statistics)."""
    from flow_grpo.seeding import generator_for
    from flow_grpo.training.advantages import compute_advantages

    rollout = collector.collect(epoch, stochastic=objective.sde_rollouts, store_means=objective.needs_step_means)
    rewards = rollout.rewards["avg"]
    # the trainer's advantages (per-prompt or batch statistics as configured, clipped)
    advantages, _ = compute_advantages(collector.accelerator, rollout, config.train)
    per_step = policy_gradient(policy, objective, rollout, advantages, config, generator_for(config.seed, "snr", epoch))
    gradient = per_step.sum(0)
    stats = {"epoch": epoch, "reward_mean": float(rewards.mean()), "gradient_norm": float(gradient.norm()),
             "latent_dims": int(rollout.final_latents[0].numel()), "trained_steps": int(per_step.shape[0]),
             "zero_advantage_share": float((advantages == 0).float().mean()), "samples": len(rewards)}
    return per_step, stats


def build_parts(backbone, dataset, reward_fn, config, accelerator, executor):
    """The trainer's rollout collector, policy and objective (``flow_grpo.training.assembly``), with every
    transformer weight trained in float32."""
    from flow_grpo.training.assembly import assemble_run, prepare_model
    from flow_grpo.training.collector import RolloutCollector

    config.use_lora, config.mixed_precision = False, "no"  # every weight, float32: the gradient of the full model
    run = assemble_run(backbone, prepare_model(backbone, config, accelerator.device), config, accelerator)
    sampler = DistributedKRepeatSampler(len(dataset), config.sample.train_batch_size, config.sample.num_image_per_prompt, 1, 0, seed=config.seed)
    collector = RolloutCollector(backbone=backbone, transformer=run.sampling_transformer, negative=run.negative, dataset=dataset,
                                 sampler=sampler, reward_fn=reward_fn, executor=executor, accelerator=accelerator, config=config)
    return collector, run.policy, run.objective


def print_breakdown(breakdown: dict) -> None:
    print("  trained step j     cosine of step j alone    cosine of steps 0..j summed")
    for j, (alone, summed) in enumerate(zip(breakdown["steps"], breakdown["first_steps"])):
        print(f"  {j:13d}     {alone['raw_cosine_mean']:+.4f} +- {alone['raw_cosine_sem']:.4f}        "
              f"{summed['raw_cosine_mean']:+.4f} +- {summed['raw_cosine_sem']:.4f}")
    print("  parameter group (most signal first)                   parameters   raw cosine        adam cosine")
    for name, row in sorted(breakdown["groups"].items(), key=lambda item: -item[1]["raw_cosine_mean"]):
        print(f"  {name:52s} {row['parameters']:10d}   {row['raw_cosine_mean']:+.4f} +- {row['raw_cosine_sem']:.4f}   "
              f"{row['adam_cosine_mean']:+.4f} +- {row['adam_cosine_sem']:.4f}")


def main(argv=None) -> dict | int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimates", type=int, default=4, help="independent epochs (at least 2)")
    parser.add_argument("--fresh-prompts", action="store_true", help="new prompts for every estimate")
    parser.add_argument("--target", type=float, default=0.5, help="pairwise cosine to size the batch for")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="", help="JSON path (default logs/gradient_snr/<run_name>.json)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also the cosines of each trained step, of the first j steps, and of each parameter group")
    args, overrides = parser.parse_known_args(argv)
    if args.estimates < 2:
        print("error: --estimates must be at least 2", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from flow_grpo import snr
    from flow_grpo.config_cli import parse_args
    from flow_grpo.errors import InputError
    from flow_grpo.data import PromptDataset
    from flow_grpo.rewards import RewardError, multi_score
    from flow_grpo.backbones import load_backbone

    try:
        config = parse_args([*overrides, "--config.progress=false"])
        reward_fn = multi_score(dict(config.reward_fn), dict(config.reward_options), config.reward_nan_policy,
                                config.reward_frame_interval)
        dataset = PromptDataset(config.dataset, "train")
        backbone = load_backbone(config.pretrained.model, config.pretrained.family, config.pretrained.revision)
    except (InputError, RewardError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    accelerator = Accelerator(cpu=not torch.cuda.is_available())

    def new_sampler():
        return DistributedKRepeatSampler(len(dataset), config.sample.train_batch_size, config.sample.num_image_per_prompt, 1, 0, seed=config.seed)

    sampler = new_sampler()
    estimates, rows = [], []
    started = time.time()
    with ThreadPoolExecutor(max_workers=1) as executor:
        collector, policy, objective = build_parts(backbone, dataset, reward_fn, config, accelerator, executor)
        for r in tqdm(range(args.estimates), desc="estimates"):
            collector.sampler = sampler if args.fresh_prompts else new_sampler()
            per_step, stats = estimate(collector, policy, objective, config, 10_000 + r)
            if stats["gradient_norm"] == 0:
                print(f"error: estimate {r} has a zero gradient (every group's rewards are equal): nothing to measure", file=sys.stderr)
                return 1
            estimates.append(per_step)
            rows.append(stats)
    per_step = torch.stack(estimates)  # [estimates, steps, parameters]
    gradients = per_step.sum(1)
    result = snr.summary(gradients, rows[0]["samples"], args.target)
    noise_dims = rows[0]["latent_dims"] * rows[0]["trained_steps"]
    result["noise_dims"] = noise_dims
    result["ideal_samples_for_target"] = snr.ideal_samples_for_cosine(noise_dims, args.target)
    result.update({"config": config.run_name, "fresh_prompts": args.fresh_prompts, "reward_fn": dict(config.reward_fn),
                   "parameters": int(gradients[0].numel()), "estimates_detail": rows, "seconds": time.time() - started})

    print(f"{config.run_name}: {args.estimates} estimates of {rows[0]['samples']} samples, "
          f"{'fresh' if args.fresh_prompts else 'the same'} prompts, reward {dict(config.reward_fn)}")
    for name in ("raw", "adam"):
        print(f"  {name:4s} pairwise cosine {result[f'{name}_cosine_mean']:+.4f} +- {result[f'{name}_cosine_sem']:.4f}; "
              f"samples per step for cosine {args.target}: {result[f'{name}_samples_for_target']:.3g} "
              f"(at mean + 2 s.e.: {result[f'{name}_samples_for_target_at_upper']:.3g})")
    if objective.sde_rollouts:
        print(f"  the floor for any reward (isotropic Jacobian): {noise_dims} noise dimensions ({rows[0]['latent_dims']} latent x "
              f"{rows[0]['trained_steps']} trained steps) need {result['ideal_samples_for_target']:.3g} samples for cosine {args.target}")
    if args.breakdown:
        named = [(name, p.numel()) for name, p in backbone.transformer.named_parameters()]
        result["breakdown"] = snr.breakdown(per_step, snr.parameter_groups(named), rows[0]["samples"], args.target)
        print_breakdown(result["breakdown"])
    out = args.out or os.path.join(REPO, "logs", "gradient_snr", f"{config.run_name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"  written to {out}")
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(outcome if isinstance(outcome, int) else 0)
