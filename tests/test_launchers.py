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
