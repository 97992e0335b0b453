"""The mutation spot check of the test suite (docs/testing.md): ten hand-made one-line bugs, each applied to the
working tree in turn, and the tests that must catch it run against it. A bug is caught when one of its tests
fails; each test is also run on the clean tree first, so a catch is the bug's and not a test already failing.

    python scripts/check_mutations.py                 # all ten, a table at the end
    python scripts/check_mutations.py --only kl_term  # one of them
    python scripts/check_mutations.py --json out.json

Each mutation names its source text exactly; a text that is no longer in its file (the code moved on) is
reported as such, not skipped silently. The files are restored after each run, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    bug: str  # what the change does, for the table
    file: str  # relative to the repository
    edits: tuple[tuple[str, str], ...]  # (source text, its replacement); each source text occurs once in the file
    tests: tuple[str, ...]  # pytest node ids that must catch it


MUTATIONS = (
    Mutation("advantage_sign", "the sign of the group advantage flipped",
             "flow_grpo/advantages.py",
             (("advantages[in_group] = (group - group.mean()) / (std + eps)",
               "advantages[in_group] = (group.mean() - group) / (std + eps)"),),
             ("tests/test_grpo.py::test_group_advantages_global_and_per_group_std",)),
    Mutation("sigma_index", "the stored steps re-scored at the next step's sigma (an off-by-one)",
             "flow_grpo/sampling_loop.py",
             (("sigmas=sigmas[start:end],", "sigmas=sigmas[start + 1 : end + 1],"),),
             ("tests/test_backbones.py::test_rescoring_stored_steps_reproduces_log_probs_exactly",)),
    Mutation("ema_decay", "the EMA ignores its decay (the shadow copies the weights)",
             "flow_grpo/ema.py",
             (("decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else self.decay",
               "decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else 0.0"),),
             ("tests/test_train_sd3.py::test_checkpoint_lora_loads_with_diffusers_and_equals_the_ema",)),
    Mutation("resume_rng", "a resume that does not restore the random generators' state",
             "flow_grpo/checkpoint/training_state.py",
             (("        folders.restore_rng_state(folders.read_json(rng_path))",
               "        pass"),),
             ("tests/test_objectives.py::test_train_sd3_flowrl_trains_log_z_and_resumes_it_exactly",)),
    Mutation("packing_transposed", "FLUX's 2x2 latent packing with height and width swapped",
             "flow_grpo/backbones/flux/backbone.py",
             (("latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)",
               "latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 4, 2, 1, 3, 5)"),),
             ("tests/test_backbones.py::test_ode_sampling_equals_the_pipelines_call",)),
    Mutation("reward_scale", "the JPEG compressibility reward at 10x its published scale",
             "flow_grpo/rewards/jpeg.py",
             (("return -size / 500.0, {\"size_kb\": size}", "return -size / 50.0, {\"size_kb\": size}"),),
             ("tests/test_rewards.py::test_jpeg_flat_vs_noisy",)),
    Mutation("kl_term", "GRPO's KL term dropped from the loss (still logged)",
             "flow_grpo/objectives/grpo.py",
             (("            loss = loss + self.config.beta * kl", "            loss = loss"),),
             ("tests/test_training_parts.py::test_grpo_kl_step_by_hand",)),
    Mutation("checkpoint_incomplete", "a checkpoint published before its LoRA is written (the export after the rename)",
             "flow_grpo/checkpoint/training_state.py",
             (("        _export_model(state, tmp, full_weights)\n", ""),
              ("        final = folders.publish(tmp, checkpoints_dir, global_step)\n",
               "        final = folders.publish(tmp, checkpoints_dir, global_step)\n        _export_model(state, final, full_weights)\n")),
             ("tests/test_train_sd3.py::test_sigkill_during_checkpoint_write_keeps_the_previous_checkpoint",)),
    Mutation("stop_signal_ignored", "a stop signal noted by nobody (the handler returns at once)",
             "flow_grpo/training/stopping.py",
             (("        self.received = signal.Signals(signum).name\n", "        return\n"),),
             ("tests/test_faults.py::test_sigterm_during_the_update_completes_the_epoch_checkpoints_and_resumes_exactly",)),
    Mutation("config_key_unread", "train.global_std silently unread (always the batch-wide std)",
             "flow_grpo/training/advantages.py",
             (("group_advantages(keys[finite], all_rewards[finite], global_std=train_config.global_std)",
               "group_advantages(keys[finite], all_rewards[finite])"),),
             ("tests/test_training_parts.py::test_compute_advantages_groups_clips_and_drops_non_finite",)),
)


def run_tests(tests: tuple[str, ...], timeout_s: float) -> tuple[bool, float, str]:
    """(passed, seconds, the output's tail) of ``pytest tests`` in a fresh interpreter."""
    start = time.time()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", *tests], cwd=REPO,
                                capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, time.time() - start, f"timed out after {timeout_s:.0f} s"
    return result.returncode == 0, time.time() - start, (result.stdout + result.stderr)[-1500:]


def apply(mutation: Mutation) -> str:
    """Apply the mutation's edits to its file; returns the original text. Raises ValueError if a source text is
    not in the file exactly once."""
    path = os.path.join(REPO, mutation.file)
    with open(path) as handle:
        original = handle.read()
    text = original
    for old, new in mutation.edits:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{mutation.file}: {old.strip()!r} occurs {count} times (expected once): the code moved on; "
                             "update the mutation")
        text = text.replace(old, new)
    with open(path, "w") as handle:
        handle.write(text)
    return original


def check(mutation: Mutation, timeout_s: float) -> dict:
    clean_ok, clean_s, clean_out = run_tests(mutation.tests, timeout_s)
    row = {"name": mutation.name, "bug": mutation.bug, "file": mutation.file, "tests": list(mutation.tests),
           "clean_passes": clean_ok, "clean_s": round(clean_s, 1)}
    if not clean_ok:
        return {**row, "caught": None, "note": "the tests fail on the clean tree:\n" + clean_out}
    path = os.path.join(REPO, mutation.file)
    try:
        original = apply(mutation)
    except ValueError as error:
        return {**row, "caught": None, "note": str(error)}
    try:
        passed, seconds, out = run_tests(mutation.tests, timeout_s)
    finally:
        with open(path, "w") as handle:
            handle.write(original)
    failed = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    last_line = out.strip().splitlines()[-1] if out.strip() else ""
    return {**row, "caught": not passed, "mutated_s": round(seconds, 1), "note": failed[0] if failed else last_line}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names of the mutations to run (default: all)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {sorted(known)}")
    chosen = [known[n] for n in args.only] if args.only else list(MUTATIONS)
    rows = []
    for mutation in chosen:
        row = check(mutation, args.timeout)
        rows.append(row)
        verdict = {True: "caught", False: "MISSED", None: "not run"}[row["caught"]]
        print(f"{mutation.name:24s} {verdict:8s} {row.get('mutated_s', 0):6.1f}s  {row['note'] if row['caught'] is not True else ''}",
              flush=True)
    print("\n| bug | file | test that catches it | caught |\n|---|---|---|---|")
    for row in rows:
        tests = ", ".join(f"`{t.split('::')[-1]}`" for t in row["tests"])
        print(f"| {row['bug']} | `{row['file']}` | {tests} | {'yes' if row['caught'] else 'no'} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0 if all(row["caught"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
