"""The run folder (docs/architecture.md, "Contracts"): config.json, metrics.jsonl, summary.json, samples/, plots/, checkpoints/."""

from __future__ import annotations

import datetime
import json
import math
import os

import numpy as np

from flow_grpo.checkpoint.atomic import atomic_write_json


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def config_to_dict(config) -> dict:
    return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)


def unique_run_dir(logdir: str, run_name: str) -> str:
    """``logdir/run_name``, or ``logdir/run_name_<timestamp>`` when that folder already holds a run."""
    path = os.path.join(logdir, run_name)
    if os.path.exists(os.path.join(path, "metrics.jsonl")):
        path = f"{path}_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return path


class RunLogger:
    """Owns one run folder. Metrics are appended and flushed line by line so a crash loses nothing logged."""

    def __init__(self, run_dir: str, config=None):
        self.run_dir = run_dir
        for sub in ("samples", "plots", "checkpoints"):
            os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
        if config is not None:
            atomic_write_json(os.path.join(run_dir, "config.json"), config_to_dict(config))
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def log(self, metrics: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_jsonable(metrics)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.metrics_path)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path("summary.json"), _jsonable(summary))


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def flat_config(config, prefix: str = "") -> dict:
    """Config as one level of ``a.b`` keys with scalar values (for tensorboard hparams)."""
    flat = {}
    for key, value in config_to_dict(config).items() if prefix == "" else config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def truncate_metrics(path: str, before_epoch: int) -> None:
    """Keep only rows of epochs before ``before_epoch`` (a resumed run re-logs the later ones)."""
    from flow_grpo.checkpoint.atomic import atomic_write_bytes

    rows = [r for r in read_metrics(path) if r.get("epoch", 0) < before_epoch]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
