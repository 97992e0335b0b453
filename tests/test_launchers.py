"""Launch scripts check their environment; accelerate configs parse; nothing hard-codes a host."""

import os
import re
import subprocess

import pytest
import yaml

from conftest import REPO

MULTI_NODE = os.path.join(REPO, "scripts", "multi_node", "grpo.sh")


def launch(env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "NODE_RANK", "NUM_NODES", "GPUS_PER_NODE", "MASTER_PORT")}
    env.update(env_overrides)
    return subprocess.run(["bash", MULTI_NODE], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "env,message",
    [
        ({}, "set MASTER_ADDR"),
        ({"MASTER_ADDR": "node0"}, "set NODE_RANK"),
        ({"MASTER_ADDR": "node0", "NODE_RANK": "0"}, "set NUM_NODES"),
        ({"MASTER_ADDR": "node0", "NODE_RANK": "x", "NUM_NODES": "2"}, "NODE_RANK must be a non-negative integer"),
        ({"MASTER_ADDR": "node0", "NODE_RANK": "2", "NUM_NODES": "2", "GPUS_PER_NODE": "8"}, "must be smaller than NUM_NODES"),
        ({"MASTER_ADDR": "node0", "NODE_RANK": "0", "NUM_NODES": "2", "GPUS_PER_NODE": "0"}, "no GPU visible"),
        ({"MASTER_ADDR": "node0", "NODE_RANK": "0", "NUM_NODES": "2", "MASTER_PORT": "http"}, "MASTER_PORT must be"),
    ],
)
def test_multi_node_launcher_validates_its_environment(env, message):
    result = launch(env)
    assert result.returncode == 2
    assert message in result.stderr


def test_accelerate_configs_parse():
    folder = os.path.join(REPO, "scripts", "accelerate_configs")
    expected = {"multi_gpu": "MULTI_GPU", "multi_node": "MULTI_GPU", "deepspeed_zero1": "DEEPSPEED",
                "deepspeed_zero2": "DEEPSPEED", "fsdp": "FSDP"}
    for name, kind in expected.items():
        with open(os.path.join(folder, f"{name}.yaml")) as handle:
            config = yaml.safe_load(handle)
        assert config["distributed_type"] == kind
    with open(os.path.join(folder, "deepspeed_zero2.yaml")) as handle:
        assert yaml.safe_load(handle)["deepspeed_config"]["zero_stage"] == 2


def test_no_hard_coded_addresses_or_credentials():
    ip = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
    secret = re.compile(r"\b(api[_-]?key|password|secret|token)\b\s*=\s*['\"][^'\"]+['\"]", re.IGNORECASE)
    for folder in ("scripts", "config", "flow_grpo"):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if not name.endswith((".py", ".sh", ".yaml")):
                    continue
                text = open(os.path.join(root, name), encoding="utf-8").read()
                addresses = [a for a in ip.findall(text) if a not in ("127.0.0.1", "0.0.0.0")]
                assert not addresses, (name, addresses)
                assert not secret.findall(text), name


SLURM = os.path.join(REPO, "scripts", "multi_node", "slurm.sbatch")


def _fake_slurm(tmp_path, preempt: bool):
    """srun and scontrol stand-ins on PATH (no SLURM here): srun records the command it would run on every node
    and, when ``preempt``, leaves what a preempted trainer leaves; scontrol records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    marker = 'mkdir -p "$LOGDIR/$RUN_NAME" && echo \'{"signal": "SIGUSR1"}\' > "$LOGDIR/$RUN_NAME/preempted.json"' if preempt else ":"
    (bin_dir / "srun").write_text(f'#!/usr/bin/env bash\necho "$@" >> "{tmp_path}/srun.txt"\n{marker}\nexit 1\n')
    (bin_dir / "scontrol").write_text(
        f'#!/usr/bin/env bash\nif [ "$1" = show ]; then echo node7; echo node8; else echo "$@" >> "{tmp_path}/scontrol.txt"; fi\n')
    for tool in ("srun", "scontrol"):
        os.chmod(bin_dir / tool, 0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "123", "SLURM_JOB_NAME": "job",
           "SLURM_JOB_NODELIST": "node[7-8]", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "4",
           "LOGDIR": str(tmp_path / "logs"), "RUN_NAME": "run"}
    return env


def test_slurm_script_resumes_when_there_is_a_checkpoint_and_requeues_when_preempted(tmp_path):
    env = _fake_slurm(tmp_path, preempt=False)
    result = subprocess.run(["bash", SLURM, "config/tiny.py:tiny", "--config.num_epochs=3"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1  # the trainer's failure (srun's status) is the job's
    first = (tmp_path / "srun.txt").read_text()
    assert "--num_machines 2 --num_processes 8" in first and "--main_process_ip node7" in first
    assert "--config tiny" not in first and "--config config/tiny.py:tiny" in first and "--config.num_epochs=3" in first
    assert "resume_from" not in first and not (tmp_path / "scontrol.txt").exists()

    checkpoint = tmp_path / "logs" / "run" / "checkpoints" / "checkpoint-8"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    env = _fake_slurm(tmp_path, preempt=True)
    result = subprocess.run(["bash", SLURM, "config/tiny.py:tiny"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--config.resume_from=latest" in (tmp_path / "srun.txt").read_text().splitlines()[-1]
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "123"]
    assert "requeueing job 123" in result.stdout


def test_train_sd3_is_an_alias_of_train(capsys):
    """The original's name runs scripts/train.py's main, nothing of its own; its --help lists the families and
    objectives the registries hold."""
    import sys

    from conftest import load_script

    alias = load_script("scripts/train_sd3.py")
    assert alias.main is sys.modules["train"].main
    assert os.path.samefile(sys.modules["train"].__file__, os.path.join(REPO, "scripts", "train.py"))
    assert alias.main(["--help"]) == 2
    err = capsys.readouterr().err
    assert "usage: --config" in err  # and what it trains, read from the registries
    from flow_grpo.backbones import BACKBONES
    from flow_grpo.objectives import OBJECTIVES

    assert all(f"  {name} " in err for name in OBJECTIVES) and all(f"{name} ({cls.tiny_model})" in err for name, cls in BACKBONES.items())
