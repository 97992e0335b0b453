"""Faults a long run meets, on the tiny SD3 (docs/operations.md): a stop signal, a hung reward, NaN gradients,
a checkpoint that cannot be written, and (two processes) a process that hangs. Each ends the run within its
bound with a message naming the problem, loses nothing beyond the epoch in flight, and resumes exactly."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, load_script
from flow_grpo.checkpoint import list_checkpoints, resolve_resume
from flow_grpo.launch import worker_processes
from flow_grpo.objectives.grpo import GRPO
from flow_grpo.rewards import register
from flow_grpo.training.stopping import EXIT_PREEMPTED, parse_signals

pytestmark = pytest.mark.slow  # training runs and subprocesses: make test runs this file, make test-fast does not

train = load_script("scripts/train.py")
TINY = os.path.join(REPO, "config", "tiny.py")
COMMON = ["--config.eval_freq=100", "--config.save_freq=100"]
STATE_FILES = ("lora/pytorch_lora_weights.safetensors", "state/trainable.safetensors", "state/ema.safetensors",
               "state/optimizer.safetensors")


def run(logdir, *overrides):
    return train.main(["--config", f"{TINY}:tiny", f"--config.logdir={logdir}", "--config.progress=false", *overrides])


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [r for r in map(json.loads, handle) if "reward_mean" in r]


def assert_same_checkpoint(a_dir, b_dir):
    a_path, b_path = resolve_resume("latest", str(a_dir)), resolve_resume("latest", str(b_dir))
    assert os.path.basename(a_path) == os.path.basename(b_path)
    for file in STATE_FILES:
        a, b = load_file(os.path.join(a_path, file)), load_file(os.path.join(b_path, file))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (file, key)


@pytest.fixture
def straight(trained_runs):
    """Four epochs never stopped: what every stopped-and-resumed run must end as (tests/test_train_sd3.py's
    test_exact_resume resumes to the same run: one run for both, conftest.TrainedRuns)."""
    return Path(trained_runs.get(f"{TINY}:tiny", "--config.num_epochs=4", *COMMON)) / "checkpoints"


CALLS = {"n": 0, "signal_at": None, "sleep_at": None, "block_at": None, "folder": None, "hung_at": None}


@register("test_fault_brightness")
def _brightness_with_faults(**_):
    """Mean brightness; on call ``signal_at`` it sends this process SIGTERM, on call ``sleep_at`` it hangs 20 s,
    on call ``block_at`` it puts a file where the folder ``CALLS["folder"]`` was (a folder that cannot be written)."""

    def score(images, prompts, metadata):
        CALLS["n"] += 1
        if CALLS["n"] == CALLS["block_at"]:
            os.rmdir(CALLS["folder"])
            with open(CALLS["folder"], "w") as handle:
                handle.write("not a folder")
        if CALLS["n"] == CALLS["signal_at"]:
            os.kill(os.getpid(), signal.SIGTERM)
        if CALLS["n"] == CALLS["sleep_at"]:
            CALLS["hung_at"] = time.time()
            time.sleep(20)
        return images.mean(dim=(1, 2, 3)).numpy(), {}

    return score


def test_stop_signals_parse_and_bad_names_are_refused():
    assert parse_signals("SIGTERM, usr1") == [signal.SIGTERM, signal.SIGUSR1]
    with pytest.raises(ValueError, match="SIGKILL"):
        parse_signals("SIGKILL")
    with pytest.raises(ValueError, match="SIGNOPE"):
        parse_signals("NOPE")


def test_sigterm_during_rollouts_abandons_the_epoch_checkpoints_and_resumes_exactly(tmp_path, capsys):
    # calls: 1 the base model's evaluation, then 2 per epoch: call 6 is epoch 3's first batch
    CALLS.update(n=0, signal_at=6, sleep_at=None)
    common = [*COMMON, "--config.reward_fn={'test_fault_brightness': 1.0}"]
    assert run(tmp_path, "--config.num_epochs=4", *common) == EXIT_PREEMPTED
    err = capsys.readouterr().err
    assert "SIGTERM received" in err and "during epoch 3's rollouts (abandoned)" in err
    checkpoints = tmp_path / "tiny" / "checkpoints"
    assert [s for s, _ in list_checkpoints(str(checkpoints))] == [4]  # epochs 1 and 2, two steps each
    assert [r["epoch"] for r in rows(tmp_path / "tiny")] == [1, 2]
    marker = json.loads((tmp_path / "tiny" / "preempted.json").read_text())
    assert marker["signal"] == "SIGTERM" and marker["epochs_done"] == 2 and marker["exit_status"] == EXIT_PREEMPTED
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
    CALLS.update(signal_at=None)
    assert run(tmp_path, "--config.num_epochs=4", "--config.resume_from=latest", *common) == 0
    assert [r["epoch"] for r in rows(tmp_path / "tiny")] == [1, 2, 3, 4]
    assert not (tmp_path / "tiny" / "preempted.json").exists()  # the resumed run removed it
    assert run(tmp_path / "straight", "--config.num_epochs=4", *common) == 0  # the same reward, never stopped
    assert_same_checkpoint(tmp_path / "straight" / "tiny" / "checkpoints", checkpoints)


def test_sigterm_during_the_update_completes_the_epoch_checkpoints_and_resumes_exactly(tmp_path, straight, capsys, monkeypatch):
    real_update = train.update

    def update_then_signal(learner, rollout, advantages, keep, config, generator, global_step):
        result = real_update(learner, rollout, advantages, keep, config, generator, global_step)
        if result[1] == 4:  # epoch 2's update is done
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(train, "update", update_then_signal)
    assert run(tmp_path, "--config.num_epochs=4", *COMMON) == EXIT_PREEMPTED
    assert "after epoch 2 (completed)" in capsys.readouterr().err
    checkpoints = tmp_path / "tiny" / "checkpoints"
    assert [s for s, _ in list_checkpoints(str(checkpoints))] == [4]
    monkeypatch.setattr(train, "update", real_update)
    assert run(tmp_path, "--config.num_epochs=4", "--config.resume_from=latest", *COMMON) == 0
    assert [r["epoch"] for r in rows(tmp_path / "tiny")] == [1, 2, 3, 4]
    assert_same_checkpoint(straight, checkpoints)


def test_a_hung_reward_ends_the_run_at_its_deadline_with_the_last_epoch_checkpointed(tmp_path, capsys):
    CALLS.update(n=0, signal_at=None, sleep_at=6)  # epoch 3's first batch hangs for 20 s
    code = run(tmp_path, "--config.num_epochs=4", "--config.reward_deadline_s=2", *COMMON,
               "--config.reward_fn={'test_fault_brightness': 1.0}")
    # did not wait for the hung call (the deadline counts from when the rewards are needed, after sampling)
    assert code == 1 and time.time() - CALLS["hung_at"] < 15
    err = capsys.readouterr().err
    assert "reward 'test_fault_brightness' gave no answer for batch 1 of 2 of epoch 3 within config.reward_deadline_s = 2 s" in err
    assert [s for s, _ in list_checkpoints(str(tmp_path / "tiny" / "checkpoints"))] == [4]
    assert "epoch 3 is abandoned and epoch 2, the last completed, is checkpointed" in err


def test_nonfinite_gradients_are_skipped_counted_and_stop_the_run_after_the_limit(tmp_path, capsys, monkeypatch):
    real_loss = GRPO.loss
    # micro-steps (1-based) whose loss is NaN; the tiny run steps its optimizer every 3 micro-steps, twice an epoch
    poisoned = {"calls": 0, "from": 2, "to": 2}

    def loss(self, policy, minibatch, j, prepared=None):
        value, stats = real_loss(self, policy, minibatch, j, prepared)
        poisoned["calls"] += 1
        if poisoned["from"] <= poisoned["calls"] <= poisoned["to"]:
            value = value * float("nan")
        return value, stats

    monkeypatch.setattr(GRPO, "loss", loss)
    assert run(tmp_path / "a", "--config.num_epochs=2", *COMMON) == 0
    first = rows(tmp_path / "a" / "tiny")
    assert [r["nonfinite_steps"] for r in first] == [1, 0]  # the first window, holding micro-step 2
    assert first[0]["global_step"] == first[1]["global_step"] - 2 == 1  # that step was not counted
    trained = load_file(os.path.join(resolve_resume("latest", str(tmp_path / "a" / "tiny" / "checkpoints")), "state", "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in trained.values())

    poisoned.update(calls=0, **{"from": 7, "to": 10**9})  # every window from epoch 2 on
    assert run(tmp_path / "b", "--config.num_epochs=4", "--config.save_freq=1", "--config.eval_freq=100",
               "--config.train.max_nonfinite_steps=3") == 1
    err = capsys.readouterr().err
    assert "error: epoch 3: 3 optimizer steps in a row had a non-finite gradient norm (NaN or inf) after global step 2" in err, err
    # the checkpoint of epoch 1 (step 2) is the last, and it is finite
    checkpoints = list_checkpoints(str(tmp_path / "b" / "tiny" / "checkpoints"))
    assert [s for s, _ in checkpoints] == [2]
    trained = load_file(os.path.join(checkpoints[-1][1], "state", "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in trained.values())


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG

    return apply


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one_and_the_run_resumes(tmp_path):
    assert run(tmp_path, "--config.num_epochs=2", *COMMON) == 0  # checkpoint-4
    checkpoints = tmp_path / "tiny" / "checkpoints"
    before = {f: load_file(os.path.join(checkpoints, "checkpoint-4", f)) for f in STATE_FILES}
    # files over 10 kB cannot be written (the LoRA is 11.7 kB): the next checkpoint fails as on a full disk
    command = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--config", f"{TINY}:tiny", f"--config.logdir={tmp_path}",
               "--config.progress=false", "--config.num_epochs=4", "--config.save_freq=1", "--config.eval_freq=100",
               "--config.resume_from=latest"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size(10_000))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: cannot write checkpoint-6 in" in result.stderr and "File too large" in result.stderr
    assert "the checkpoints already there are intact (checkpoint-4)" in result.stderr
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-4"]  # no partial copy left
    for file, tensors in before.items():
        after = load_file(os.path.join(checkpoints, "checkpoint-4", file))
        assert all(torch.equal(tensors[k], after[k]) for k in tensors)
    assert run(tmp_path, "--config.num_epochs=4", "--config.resume_from=latest", *COMMON) == 0
    assert [s for s, _ in list_checkpoints(str(checkpoints))] == [4, 8]


def test_a_checkpoints_folder_that_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    # (as root, permissions do not stop writes: the folder is replaced by a file during epoch 1's rollouts)
    CALLS.update(n=0, signal_at=None, sleep_at=None, block_at=2, folder=str(tmp_path / "tiny" / "checkpoints"))
    assert run(tmp_path, "--config.num_epochs=2", "--config.save_freq=1", "--config.eval_freq=100",
               "--config.reward_fn={'test_fault_brightness': 1.0}") == 2
    err = capsys.readouterr().err
    assert "error: cannot write checkpoint-2 in" in err and "FileExistsError" in err, err
    CALLS.update(block_at=None)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a process that exited but is not yet reaped by its parent is a zombie: not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_hung_process_ends_a_two_process_run_within_the_timeout_naming_the_rank(tmp_path):
    """Rank 1 is stopped (SIGSTOP) once a checkpoint is complete; rank 0 must give up within config.dist_timeout_s
    plus the monitored barrier, naming rank 1. The launcher would then wait 30 s (torch elastic's grace before it
    kills a worker that ignores SIGTERM, as a stopped one does) before it exits: the test kills rank 1 itself as
    soon as rank 0 is gone, so the suite does not wait for torch's grace period (a 70 s test before, ~25 s now)."""
    timeout_s = 10
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541",
        os.path.join(REPO, "scripts", "train.py"), "--config", f"{TINY}:tiny", f"--config.logdir={tmp_path}",
        "--config.progress=false", "--config.num_epochs=50", "--config.save_freq=1", "--config.eval_freq=100",
        f"--config.dist_timeout_s={timeout_s}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # stop rank 1 once a checkpoint is complete (a stop during the first one would leave none, rightly)
    deadline = time.time() + 300
    while not list_checkpoints(str(tmp_path / "tiny" / "checkpoints")):
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    workers = worker_processes(launcher.pid)
    assert set(workers) == {0, 1}, workers
    os.kill(workers[1], signal.SIGSTOP)  # rank 1 hangs
    stopped = time.time()
    try:
        while _alive(workers[0]) and time.time() < stopped + timeout_s + 10 + 60:
            time.sleep(0.2)
        rank0_gone = time.time() - stopped
        os.kill(workers[1], signal.SIGKILL)  # what the launcher does after its 30 s grace
        _, err = launcher.communicate(timeout=60)
    finally:
        for pid in workers.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert launcher.returncode != 0
    # where it waited depends on where rank 1 stopped (epoch 2's rollouts, update or checkpoint)
    assert "rank 0 of 2: a collective failed (" in err and f"no answer within config.dist_timeout_s = {timeout_s} s" in err, err[-3000:]
    assert re.search(r"Ranks? 1 failed to pass monitoredBarrier", err), err[-3000:]  # gloo says "Rank 1" or "Ranks 1"
    # the timeout, the monitored barrier (its own timeout: min(dist_timeout_s, 10 s)), slack
    assert rank0_gone < timeout_s + timeout_s + 30, rank0_gone
    # the checkpoints written before the hang are complete and resumable
    checkpoints = list_checkpoints(str(tmp_path / "tiny" / "checkpoints"))
    assert checkpoints and os.path.isfile(os.path.join(checkpoints[-1][1], "trainer_state.json"))
    assert np.isfinite(rows(tmp_path / "tiny")[0]["reward_mean"])


def test_a_reward_that_hangs_during_evaluation_is_bounded_too(tmp_path, capsys):
    CALLS.update(n=0, signal_at=None, sleep_at=1, block_at=None)  # call 1: the base model's evaluation
    assert run(tmp_path, "--config.num_epochs=2", "--config.reward_deadline_s=2", *COMMON,
               "--config.reward_fn={'test_fault_brightness': 1.0}") == 1
    assert time.time() - CALLS["hung_at"] < 15
    assert "reward 'test_fault_brightness' gave no answer for an evaluation batch of 4 images within" in capsys.readouterr().err
