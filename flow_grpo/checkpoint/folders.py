"""Checkpoint folders: written whole or not at all, found again by step, pruned to a limit; no pickle.

A checkpoint is ``<dir>/checkpoint-<global_step>/``. It is assembled in a hidden sibling
``.tmp-checkpoint-<step>-<pid>/`` and renamed into place only when complete (``trainer_state.json`` is the
last file written), so a process killed mid-write leaves the previous checkpoints untouched and usable.

Tensors go to safetensors files and everything else to JSON: optimizer states are split into the two,
random-number-generator states are encoded as JSON (torch's byte states as base64).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from flow_grpo.checkpoint.atomic import atomic_publish_dir, atomic_write_json
from flow_grpo.errors import InputError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "trainer_state.json"


class CheckpointError(InputError):
    """A resume path that does not hold a usable checkpoint; the message says what was looked for."""


class CheckpointWriteError(InputError):
    """A checkpoint that could not be written (a full disk, a folder that cannot be written); the partial copy is
    removed and the checkpoints already there are untouched."""


def list_checkpoints(folder: str) -> list[tuple[int, str]]:
    """Complete checkpoints under ``folder`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = CHECKPOINT_RE.match(name)
        path = os.path.join(folder, name)
        if match and os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume(resume_from: str, checkpoints_dir: str) -> str:
    """``"latest"`` -> the newest complete checkpoint in ``checkpoints_dir``; a run folder -> its newest
    checkpoint; a checkpoint folder -> itself (if complete)."""
    if resume_from == "latest":
        found = list_checkpoints(checkpoints_dir)
        if not found:
            raise CheckpointError(f"resume_from='latest' but {checkpoints_dir!r} holds no complete checkpoint")
        return found[-1][1]
    if not os.path.isdir(resume_from):
        raise CheckpointError(f"resume_from {resume_from!r} does not exist")
    if os.path.isfile(os.path.join(resume_from, COMPLETE_MARKER)):
        return resume_from
    for candidate in (resume_from, os.path.join(resume_from, "checkpoints")):
        found = list_checkpoints(candidate)
        if found:
            return found[-1][1]
    raise CheckpointError(
        f"resume_from {resume_from!r} is neither a complete checkpoint (no {COMPLETE_MARKER}) nor a folder holding checkpoints"
    )


def prune_checkpoints(folder: str, limit: int) -> list[str]:
    """Delete the oldest complete checkpoints beyond ``limit`` (0 or less keeps all) and stale temporaries."""
    removed = []
    if limit > 0:
        for _, path in list_checkpoints(folder)[:-limit]:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def new_tmp_dir(folder: str, step: int, tag: str = "") -> str:
    path = os.path.join(folder, f".tmp-checkpoint-{step}{tag}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def publish(tmp_dir: str, folder: str, step: int) -> str:
    if not os.path.isfile(os.path.join(tmp_dir, COMPLETE_MARKER)):
        raise CheckpointError(f"refusing to publish {tmp_dir!r}: {COMPLETE_MARKER} missing")
    final = os.path.join(folder, f"checkpoint-{step}")
    atomic_publish_dir(tmp_dir, final)
    return final


def save_tensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, path)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} is missing")
    return load_file(path)


# --- optimizer state: tensors in safetensors, the rest in JSON ----------------------------------------------


def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, per_param = {}, {}
    for index, values in state_dict["state"].items():
        entry = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
                entry[name] = {"tensor": f"{index}.{name}"}
            else:
                entry[name] = {"value": value}
        per_param[str(index)] = entry
    return tensors, {"state": per_param, "param_groups": state_dict["param_groups"]}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for index, entry in meta["state"].items():
        state[int(index)] = {
            name: tensors[spec["tensor"]] if "tensor" in spec else spec["value"] for name, spec in entry.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


# --- random number generators as JSON ----------------------------------------------------------------------


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _from_b64(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def capture_rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (numpy_state["kind"], np.asarray(numpy_state["keys"], dtype=np.uint32), numpy_state["pos"],
         numpy_state["has_gauss"], numpy_state["cached"])
    )
    torch.set_rng_state(_from_b64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_from_b64(s) for s in state["cuda"]])


def write_json(path: str, obj) -> None:
    atomic_write_json(path, obj)


def read_json(path: str):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} is missing")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
