"""scripts/train.py on the tiny pipeline: learning, on-policy sanity, exact resume, crash safety, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, load_script
from flow_grpo.checkpoint import list_checkpoints, resolve_resume
from flow_grpo.rewards import register

pytestmark = pytest.mark.slow  # training runs and subprocesses: make test runs this file, make test-fast does not

train = load_script("scripts/train.py")
TINY = os.path.join(REPO, "config", "tiny.py")


def run(tmp_path, *overrides, name="tiny"):
    argv = ["--config", f"{TINY}:{name}", f"--config.logdir={tmp_path}", "--config.progress=false", *overrides]
    return train.main(argv)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One 24-epoch run shared by the tests that only read its outputs."""
    logdir = tmp_path_factory.mktemp("tiny_run")
    assert run(logdir) == 0
    return os.path.join(logdir, "tiny")


def test_reward_rises_on_the_tiny_pipeline(tiny_run):
    rows = [r for r in metrics(tiny_run) if "reward_mean" in r]
    assert len(rows) == 24
    first = np.mean([r["reward_mean"] for r in rows[:4]])
    last = np.mean([r["reward_mean"] for r in rows[-4:]])
    noise = np.mean([r["reward_std"] for r in rows[:4]])
    assert last - first > 2 * noise, (first, last, noise)


def test_on_policy_sanity_is_logged(tiny_run):
    rows = [r for r in metrics(tiny_run) if "reward_mean" in r]
    for row in rows:
        # the first micro-step of every epoch re-scores samples of the current policy: ratio 1
        assert row["first_microstep_approx_kl"] < 1e-10
        assert row["first_microstep_clipfrac"] == 0
    # before any update the LoRA is zero: the policy equals the reference, KL exactly 0
    assert rows[0]["first_microstep_kl"] == 0.0
    assert rows[-1]["kl_loss"] > 0


def test_run_folder_contract(tiny_run):
    rows = metrics(tiny_run)
    required = {"epoch", "global_step", "reward_mean", "approx_kl", "clipfrac", "policy_loss", "kl_loss", "epoch_time_s"}
    for row in (r for r in rows if "reward_mean" in r):
        assert required <= set(row)
    evals = [r for r in rows if "eval_reward_avg" in r]
    assert [r["epoch"] for r in evals][:1] == [0] and len(evals) == 4  # epochs 0, 8, 16 and the final one
    assert all("eval_reward_brightness" in r for r in evals)
    summary = json.load(open(os.path.join(tiny_run, "summary.json")))
    assert summary["global_step"] == rows[-1]["global_step"] == 48
    config = json.load(open(os.path.join(tiny_run, "config.json")))
    assert config["reward_fn"] == {"brightness": 1.0}
    for name in ("plots/curves.png", "samples/eval_epoch_00000.png", "samples/eval_epoch_00024.png", "samples/train_epoch_00024.png"):
        assert os.path.isfile(os.path.join(tiny_run, name)), name
    # num_checkpoint_limit 3: checkpoints at epochs 8, 16 and the final one
    assert [step for step, _ in list_checkpoints(os.path.join(tiny_run, "checkpoints"))] == [16, 32, 48]


def test_checkpoint_lora_loads_with_diffusers_and_equals_the_ema(tiny_run, tiny_pipeline_dir):
    from diffusers import StableDiffusion3Pipeline

    final = resolve_resume("latest", os.path.join(tiny_run, "checkpoints"))
    pipeline = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    pipeline.load_lora_weights(os.path.join(final, "lora"))
    lora = load_file(os.path.join(final, "lora", "pytorch_lora_weights.safetensors"))
    ema = load_file(os.path.join(final, "state", "ema.safetensors"))
    current = load_file(os.path.join(final, "state", "trainable.safetensors"))
    # the exported LoRA is the EMA copy (decay 0.9, updated every step here), not the current weights
    lora_b = sorted(k for k in lora if "lora_B" in k)
    names = sorted(k for k in current if "lora_B" in k)
    assert len(lora_b) == len(names) > 0
    torch.testing.assert_close(lora[lora_b[0]], ema[f"shadow.{names[0]}"])
    assert not torch.equal(lora[lora_b[0]], current[names[0]])


def test_exact_resume(tmp_path, trained_runs):
    """Four epochs straight (the run tests/test_faults.py resumes to, shared) and 2 + 2 resumed end bit-identical."""
    common = ["--config.eval_freq=100", "--config.save_freq=100"]
    straight_dir = trained_runs.get(f"{TINY}:tiny", "--config.num_epochs=4", *common)
    assert run(tmp_path / "split", "--config.num_epochs=2", *common) == 0
    assert run(tmp_path / "split", "--config.num_epochs=4", "--config.resume_from=latest", *common) == 0
    straight = resolve_resume("latest", os.path.join(straight_dir, "checkpoints"))
    resumed = resolve_resume("latest", str(tmp_path / "split" / "tiny" / "checkpoints"))
    assert os.path.basename(straight) == os.path.basename(resumed) == "checkpoint-8"
    for file in ("lora/pytorch_lora_weights.safetensors", "state/trainable.safetensors", "state/ema.safetensors", "state/optimizer.safetensors"):
        a, b = load_file(os.path.join(straight, file)), load_file(os.path.join(resumed, file))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (file, key)
    # the resumed run continued the same metrics file, without duplicate epochs
    epochs = [r["epoch"] for r in metrics(tmp_path / "split" / "tiny") if "reward_mean" in r]
    assert epochs == [1, 2, 3, 4]


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    import flow_grpo.checkpoint.training_state as checkpointing
    real_save_lora = checkpointing.save_lora

    def slow_save_lora(*args, **kwargs):
        real_save_lora(*args, **kwargs)
        open({marker!r}, "w").close()  # half of the checkpoint is on disk: now kill me
        time.sleep(60)

    checkpointing.save_lora = slow_save_lora
    sys.argv = ["train.py", "--config", {config!r}, "--config.logdir={logdir}", "--config.progress=false",
                "--config.num_epochs=4", "--config.save_freq=2", "--config.eval_freq=100", "--config.resume_from=latest"]
    exec(open({script!r}).read(), {{"__name__": "__main__", "__file__": {script!r}}})
    """
)


def test_sigkill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    logdir = tmp_path / "logs"
    assert run(logdir, "--config.num_epochs=2", "--config.eval_freq=100") == 0
    checkpoints = logdir / "tiny" / "checkpoints"
    before = list_checkpoints(str(checkpoints))
    assert [s for s, _ in before] == [4]
    marker = tmp_path / "half_written"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(repo=REPO, marker=str(marker), config=f"{TINY}:tiny", logdir=logdir,
                                          script=os.path.join(REPO, "scripts", "train.py")))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not marker.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # the half-written checkpoint is invisible; the previous one is intact and resumable
    assert [s for s, _ in list_checkpoints(str(checkpoints))] == [4]
    assert any(name.startswith(".tmp-checkpoint-") for name in os.listdir(checkpoints))
    assert run(logdir, "--config.num_epochs=3", "--config.eval_freq=100", "--config.resume_from=latest") == 0
    assert [s for s, _ in list_checkpoints(str(checkpoints))][-1] == 6


def test_unknown_config_and_reward_and_missing_model(tmp_path, capsys):
    assert train.main(["--config", f"{TINY}:tinyy"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'tinyy'" in err and "tiny_fast" in err
    assert run(tmp_path, "--config.reward_fn={'brigthness': 1.0}") == 2
    err = capsys.readouterr().err
    assert "unknown reward 'brigthness'" in err and "jpeg_compressibility" in err
    assert run(tmp_path, f"--config.pretrained.model={tmp_path}/no_such_model") == 2
    assert "no such folder" in capsys.readouterr().err
    assert run(tmp_path, "--config.dataset=/nonexistent/prompts") == 2
    assert "no train prompts" in capsys.readouterr().err


GRPO = os.path.join(REPO, "config", "grpo.py")


def test_the_papers_tasks_get_past_their_prompts(tmp_path, monkeypatch, capsys):
    """OCR, PickScore and GenEval read their prompt sets from the repository and stop only at what cannot be
    here: the SD3.5-M weights or the reward model, named in the message."""
    cpu = "--config.mixed_precision=no"  # (the tests' accelerate state is float32 already)
    assert train.main(["--config", f"{GRPO}:general_ocr_sd3_1gpu", f"--config.logdir={tmp_path}", cpu]) == 2
    err = capsys.readouterr().err  # the OCR model ships in the rapidocr wheel: it stops at the SD3.5-M weights
    assert "cannot load config.pretrained.model 'stabilityai/stable-diffusion-3.5-medium'" in err, err
    for name, reward in (("pickscore_sd3_1gpu", "pickscore"), ("geneval_sd3_1gpu", "geneval")):
        assert train.main(["--config", f"{GRPO}:{name}", f"--config.logdir={tmp_path}", cpu]) == 2
        err = capsys.readouterr().err
        assert f"cannot build reward {reward!r}" in err and "config.reward_options" in err, err
    # the plain names are sized for 32 processes: on one they are resized (config.scale) and get as far as the _1gpu
    # name; batches given by hand that do not hold whole groups stop before any model loads
    assert train.main(["--config", f"{GRPO}:general_ocr_sd3", f"--config.logdir={tmp_path}", cpu]) == 2
    captured = capsys.readouterr()
    assert "config sized for 32 process(es), launched on 1: the same 48 groups of 24 per epoch" in captured.out
    assert "cannot load config.pretrained.model 'stabilityai/stable-diffusion-3.5-medium'" in captured.err, captured.err
    assert train.main(["--config", f"{GRPO}:general_ocr_sd3", f"--config.logdir={tmp_path}", cpu, "--config.sample.train_batch_size=9"]) == 2
    err = capsys.readouterr().err
    assert "do not hold whole groups of sample.num_image_per_prompt = 24" in err and "config.scale" in err, err
    assert not os.listdir(tmp_path)  # nothing written for runs that never started


CALLS = {"n": 0}


@register("test_fails_on_epoch_3")
def _failing_reward(**_):
    def score(images, prompts, metadata):
        CALLS["n"] += 1
        if CALLS["n"] > 8:  # 1 eval batch at epoch 0, then 2 batches per epoch: fails in epoch 4
            raise RuntimeError("scorer crashed")
        return images.mean(dim=(1, 2, 3)).numpy(), {}

    return score


@register("test_nan")
def _nan_reward(**_):
    def score(images, prompts, metadata):
        values = images.mean(dim=(1, 2, 3)).double().numpy()
        values[::4] = np.nan  # one image per group of 4 in each batch
        return values, {}

    return score


def test_reward_that_raises_stops_with_its_name_after_checkpointing_the_last_completed_epoch(tmp_path, capsys):
    CALLS["n"] = 0
    code = run(tmp_path, "--config.reward_fn={'test_fails_on_epoch_3': 1.0}", "--config.num_epochs=6",
               "--config.save_freq=2", "--config.eval_freq=100")
    assert code == 1
    err = capsys.readouterr().err
    assert "reward 'test_fails_on_epoch_3' raised RuntimeError: scorer crashed" in err
    checkpoints = list_checkpoints(str(tmp_path / "tiny" / "checkpoints"))
    # 4: the periodic one after epoch 2; 6: epoch 3, written when epoch 4's reward failed (its samples are lost)
    assert [s for s, _ in checkpoints] == [4, 6]
    assert "epoch 4 is abandoned and epoch 3, the last completed, is checkpointed" in err
    assert json.load(open(os.path.join(checkpoints[1][1], "trainer_state.json")))["epoch"] == 3
    assert os.path.isfile(os.path.join(checkpoints[1][1], "lora", "pytorch_lora_weights.safetensors"))


def test_nan_rewards_error_by_default_and_can_be_dropped(tmp_path, capsys):
    assert run(tmp_path / "a", "--config.reward_fn={'test_nan': 1.0}", "--config.num_epochs=2") == 1
    # the first call is the evaluation of the base model: 4 test prompts, one NaN
    assert "reward 'test_nan' returned 1 non-finite scores (NaN/inf) for 4 images" in capsys.readouterr().err
    assert run(tmp_path / "b", "--config.reward_fn={'test_nan': 1.0}", "--config.num_epochs=2",
               "--config.reward_nan_policy=drop", "--config.eval_freq=100") == 0
    rows = [r for r in metrics(tmp_path / "b" / "tiny") if "reward_mean" in r]
    assert all(r["reward_nonfinite"] == 4 for r in rows)  # 16 images per epoch, every 4th NaN
    assert all(np.isfinite(r["reward_mean"]) and np.isfinite(r["policy_loss"]) for r in rows)


def test_two_processes_share_groups_and_advantages(two_process_runs):
    """accelerate launch with 2 CPU processes (gloo): groups spread over both, identical advantages, learning.
    Slow where it runs first (~35 s): one launch with the families' runs (conftest.two_process_runs); 24 epochs,
    as the one-process run, to learn."""
    run_dir, out = two_process_runs["tiny"]
    assert re.search(r"processes\s+2\n", out)  # the derived sizes printed at the start
    assert re.search(r"images per epoch\s+32 \(8 groups of 4; 2 batches of 8 per process\)", out)
    rows = [r for r in metrics(run_dir) if "reward_mean" in r]
    assert len(rows) == 24
    assert all(r["advantage_checksum_spread"] == 0 for r in rows)  # both processes computed the same advantages
    assert np.mean([r["group_process_span"] for r in rows]) > 1.5  # a prompt's k images sit on both processes
    first = np.mean([r["reward_mean"] for r in rows[:4]])
    last = np.mean([r["reward_mean"] for r in rows[-4:]])
    assert last - first > np.mean([r["reward_std"] for r in rows[:4]]), (first, last)
    assert [s for s, _ in list_checkpoints(str(run_dir / "checkpoints"))][-1] == 48


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("tiny_fast", []),
        ("tiny_full_finetune", []),
        ("tiny", ["--config.train.timestep_strategy=random", "--config.sample.same_latent=true", "--config.train.ema=false"]),
    ],
)
def test_variants_run(tmp_path, name, overrides):
    assert run(tmp_path, "--config.num_epochs=2", "--config.eval_freq=100", *overrides, name=name) == 0
    run_dir = tmp_path / {"tiny_fast": "tiny_fast", "tiny_full_finetune": "tiny_full"}.get(name, "tiny")
    rows = [r for r in metrics(run_dir) if "reward_mean" in r]
    assert len(rows) == 2 and all(np.isfinite(r["policy_loss"]) for r in rows)
    final = resolve_resume("latest", str(run_dir / "checkpoints"))
    expected = "transformer" if name == "tiny_full_finetune" else "lora"
    assert os.path.isdir(os.path.join(final, expected))


def test_max_minutes_stops_after_the_epoch_that_spends_them_with_an_eval_and_a_checkpoint(tmp_path):
    assert run(tmp_path, "--config.max_minutes=1e-6", "--config.num_epochs=50", "--config.eval_freq=100",
               "--config.save_freq=100") == 0
    rows = metrics(tmp_path / "tiny")
    trained = [r for r in rows if "reward_mean" in r]
    assert len(trained) == 1 and "eval_reward_avg" in trained[0]  # epoch 1 was the last: evaluated
    assert [s for s, _ in list_checkpoints(str(tmp_path / "tiny" / "checkpoints"))] == [trained[0]["global_step"]]
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["train_seconds"] == pytest.approx(trained[0]["epoch_time_s"])


def test_both_kl_forms_run_and_the_paper_form_is_smaller(tmp_path):
    """kl_form "paper" (what the published betas were tuned with) is -dt times the exact KL for the sde step."""
    kl = {}
    for form in ("exact", "paper"):
        assert run(tmp_path / form, f"--config.train.kl_form={form}", "--config.num_epochs=2", "--config.eval_freq=100") == 0
        rows = [r for r in metrics(tmp_path / form / "tiny") if "reward_mean" in r]
        assert rows[0]["first_microstep_kl"] == 0.0 and all(np.isfinite(r["kl_loss"]) for r in rows)
        kl[form] = rows[0]["kl_loss"]  # epoch 1: the second optimizer step's micro-steps see the same weights
    assert 0 < kl["paper"] < kl["exact"] / 2, kl
    assert run(tmp_path / "bad", "--config.train.kl_form=original") == 2


def test_lora_path_and_merge_lora_path(tmp_path, tiny_run):
    lora = os.path.join(resolve_resume("latest", os.path.join(tiny_run, "checkpoints")), "lora")
    # start the trained LoRA from a saved one: before the first update the policy is that LoRA,
    # so its KL to the (LoRA-disabled) reference is not zero
    assert run(tmp_path / "a", f"--config.lora_path={lora}", "--config.num_epochs=1", "--config.eval_freq=100") == 0
    row = [r for r in metrics(tmp_path / "a" / "tiny") if "reward_mean" in r][0]
    assert row["first_microstep_kl"] > 0
    # fuse it into the base instead: it becomes part of the reference, the KL starts at zero again
    assert run(tmp_path / "b", f"--config.merge_lora_path={lora}", "--config.num_epochs=1", "--config.eval_freq=100") == 0
    rows = metrics(tmp_path / "b" / "tiny")
    assert [r for r in rows if "reward_mean" in r][0]["first_microstep_kl"] == 0
    # the fused base evaluates like the base with that LoRA: the tiny run's final (EMA) evaluation
    fused_eval = rows[0]["eval_reward_avg"]
    lora_eval = [r for r in metrics(tiny_run) if "eval_reward_avg" in r][-1]["eval_reward_avg"]
    assert abs(fused_eval - lora_eval) < 1e-5
    assert run(tmp_path / "c", "--config.lora_path=/nonexistent/lora", "--config.num_epochs=1") == 2


def test_tensorboard_and_offline_wandb(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert run(tmp_path, "--config.num_epochs=2", "--config.eval_freq=100", "--config.log_with=tensorboard,wandb",
               "--config.wandb_mode=offline") == 0
    events = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "tiny" / "tracking") for f in files if f.startswith("events.")]
    scalars = {}
    for path in events:
        accumulator = EventAccumulator(path)
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [e.value for e in accumulator.Scalars(tag)]
    rows = [r for r in metrics(tmp_path / "tiny") if "reward_mean" in r]
    np.testing.assert_allclose(scalars["reward_mean"], [r["reward_mean"] for r in rows], rtol=1e-6)
    offline = [d for d in os.listdir(tmp_path / "tiny" / "wandb") if d.startswith("offline-run-")]
    assert len(offline) == 1
