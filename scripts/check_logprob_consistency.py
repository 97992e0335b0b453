"""How close re-scored log-probs stay to the sampled ones: same batch in float32, under autocast, other batch sizes.

Collects one batch of rollouts with the trainer's own parts (``flow_grpo.training.assembly`` and the rollout
collector) in float32, then re-scores every stored transition as the update does (``BackbonePolicy.score``)
and prints the largest |log-prob difference| and the largest |ratio - 1| (compare with the clip range, 1e-4
for ``sde``) for each setting. Any family: the config names the model.

    python scripts/check_logprob_consistency.py                                   # tiny SD3
    python scripts/check_logprob_consistency.py --config config/tiny.py:tiny_qwenimage
    python scripts/check_logprob_consistency.py --config config/flux.py:pickscore_flux --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(REPO, "config", "tiny.py") + ":tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", help="autocast dtype to test (bfloat16 or float16)")
    parser.add_argument("--batch", type=int, default=8)
    args, overrides = parser.parse_known_args(argv)

    from accelerate import Accelerator

    from flow_grpo.backbones import load_backbone
    from flow_grpo.config_cli import parse_args
    from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
    from flow_grpo.training.assembly import assemble_run, prepare_model
    from flow_grpo.training.collector import RolloutCollector

    config = parse_args(["--config", args.config, "--config.mixed_precision=no", "--config.progress=false",
                         f"--config.sample.train_batch_size={args.batch}", "--config.sample.num_image_per_prompt=1",
                         "--config.sample.num_batches_per_epoch=1", *overrides])
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision="no")
    backbone = load_backbone(config.pretrained.model, config.pretrained.family)
    run = assemble_run(backbone, prepare_model(backbone, config, accelerator.device), config, accelerator)
    prompts = [f"a photo of {n} cats" for n in range(args.batch)]
    # an editing family edits the configured dataset's input images; the others draw the prompts above
    dataset = PromptDataset(config.dataset, "train") if backbone.takes_input_image else PromptDataset.from_prompts(prompts)
    sampler = DistributedKRepeatSampler(len(dataset), args.batch, 1, seed=config.seed)

    def no_reward(images, prompts, metadata):
        return {"avg": np.zeros(len(prompts))}, {}

    with ThreadPoolExecutor(1) as executor:
        collector = RolloutCollector(backbone=backbone, transformer=run.sampling_transformer, negative=run.negative,
                                     dataset=dataset, sampler=sampler, reward_fn=no_reward, executor=executor,
                                     accelerator=accelerator, config=config)
        rollout = collector.collect(epoch=0)

    def rescore(rows, autocast_dtype=None):
        context = torch.autocast(args.device.split(":")[0], dtype=getattr(torch, autocast_dtype)) if autocast_dtype else contextlib.nullcontext()
        out = []
        with torch.no_grad(), context:
            for j in range(rollout.num_steps):
                batch = rollout.transitions(rows, torch.full_like(rows, j), accelerator.device)
                out.append(run.policy.score(batch).log_prob.float().cpu())
        return torch.stack(out, dim=1)

    all_rows = torch.arange(len(rollout))
    settings = [
        ("float32, same batch", [all_rows], None),
        (f"{args.dtype} autocast, same batch", [all_rows], args.dtype),
        ("float32, batches of 3", list(all_rows.split(3)), None),
        ("float32, batches of 1", list(all_rows.split(1)), None),
    ]
    print(f"{backbone.summary()}: {len(rollout)} images x {rollout.num_steps} stored steps, {config.sample.sde_type}, device {args.device}")
    print(f"{'setting':34s} {'max |dlogp|':>12s} {'max |ratio-1|':>14s}")
    for name, chunks, dtype in settings:
        rescored = torch.cat([rescore(rows, dtype) for rows in chunks])
        diff = (rescored - rollout.log_probs.cpu()).abs()
        ratio = (torch.exp(rescored - rollout.log_probs.cpu()) - 1).abs()
        print(f"{name:34s} {diff.max().item():12.3e} {ratio.max().item():14.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
