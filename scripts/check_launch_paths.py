"""Run train.py under an accelerate config (DeepSpeed ZeRO-2, FSDP, ...) for a few epochs, straight and
split by a checkpoint + resume, and compare the final weights: the launch path, its checkpoint and its resume.

    python scripts/check_launch_paths.py --launch deepspeed_zero2 --launch fsdp --json results.json   # on a GPU

Each launch path runs ``config/tiny.py`` (``tiny`` with LoRA; ``tiny_full_finetune`` under FSDP, which shards
full weights and refuses LoRA) in one process: 4 epochs straight, then 2 epochs and a resume to 4 in another
folder. Reports for each: exit codes, seconds, and the largest difference between the two runs' exported
weights (0 means the resume is bit-identical).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def launch(accelerate_config: str, experiment: str, logdir: str, *overrides: str) -> tuple[int, float]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               os.path.join(REPO, "scripts", "accelerate_configs", f"{accelerate_config}.yaml"), "--num_processes", "1",
               "--mixed_precision", "bf16", os.path.join(REPO, "scripts", "train.py"),
               "--config", os.path.join(REPO, "config", "tiny.py") + f":{experiment}", f"--config.logdir={logdir}",
               "--config.mixed_precision=bf16", "--config.eval_freq=100", "--config.save_freq=100", "--config.progress=false",
               *overrides]
    started = time.perf_counter()
    with open(os.path.join(logdir + ".log"), "a") as log:
        code = subprocess.run(command, stdout=log, stderr=log).returncode
    return code, time.perf_counter() - started


def exported_weights(run_dir: str) -> dict:
    from safetensors.torch import load_file

    from flow_grpo.checkpoint import resolve_resume

    checkpoint = resolve_resume("latest", os.path.join(run_dir, "checkpoints"))
    tensors = {}
    for folder, _, files in os.walk(checkpoint):
        for name in files:
            if name.endswith(".safetensors") and "state" not in os.path.relpath(folder, checkpoint).split(os.sep):
                tensors.update({f"{name}:{k}": v for k, v in load_file(os.path.join(folder, name)).items()})
    return {"checkpoint": os.path.basename(checkpoint), "tensors": tensors}


def check(accelerate_config: str, root: str) -> dict:
    experiment = "tiny_full_finetune" if accelerate_config == "fsdp" else "tiny"
    run_name = "tiny_full" if experiment == "tiny_full_finetune" else "tiny"
    straight, split = os.path.join(root, accelerate_config, "straight"), os.path.join(root, accelerate_config, "split")
    result = {"experiment": experiment}
    result["straight_exit"], result["straight_s"] = launch(accelerate_config, experiment, straight, "--config.num_epochs=4")
    result["first_half_exit"], result["first_half_s"] = launch(accelerate_config, experiment, split, "--config.num_epochs=2")
    result["resume_exit"], result["resume_s"] = launch(accelerate_config, experiment, split, "--config.num_epochs=4",
                                                       "--config.resume_from=latest")
    if result["straight_exit"] or result["first_half_exit"] or result["resume_exit"]:
        return result
    a, b = exported_weights(os.path.join(straight, run_name)), exported_weights(os.path.join(split, run_name))
    result["checkpoints"] = [a["checkpoint"], b["checkpoint"]]
    result["same_tensors"] = sorted(a["tensors"]) == sorted(b["tensors"])
    result["tensors"] = len(a["tensors"])
    result["max_abs_difference"] = max((float((a["tensors"][k].float() - b["tensors"][k].float()).abs().max())
                                        for k in a["tensors"] if k in b["tensors"]), default=float("nan"))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launch", action="append", default=[], help="accelerate config name in scripts/accelerate_configs")
    parser.add_argument("--root", default=os.path.join(REPO, "logs", "launch_paths"))
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    results = {}
    for name in args.launch or ["deepspeed_zero2", "fsdp"]:
        os.makedirs(os.path.join(args.root, name), exist_ok=True)
        results[name] = check(name, args.root)
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    ok = all(r.get("max_abs_difference") == 0.0 for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
