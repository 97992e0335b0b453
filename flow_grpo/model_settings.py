"""The settings a model was trained with, carried to every script that samples it.

A model folder may hold ``flow_grpo.json`` (``scripts/pretrain_shapes.py`` writes one; the shipped shapes model
has it: 32 px, text length 16, guidance 4.5, 20 steps). A trainer checkpoint's run folder holds ``config.json``:
the run's base model, family, frame size, text length and evaluation steps and guidance. :func:`read_settings`
reads both (the checkpoint's run first, then its base model's folder); :func:`choose` gives a script its value:
the flag when one is given (with a warning naming both when the model was trained with another), else the
model's, else the script's default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

MODEL_SETTINGS_FILE = "flow_grpo.json"
KEYS = ("model", "family", "height", "width", "num_frames", "max_sequence_length", "guidance_scale", "num_steps")


@dataclasses.dataclass
class ModelSettings:
    values: dict  # name (one of KEYS) -> value
    sources: dict  # name -> the file it came from

    def get(self, name: str):
        return self.values.get(name)


def _run_config(checkpoint: str) -> str | None:
    """The ``config.json`` of the run a checkpoint belongs to: the nearest folder above it (up to three levels:
    ``<run>/checkpoints/checkpoint-N[/lora]``) that holds both ``config.json`` and ``checkpoints/``."""
    folder = os.path.abspath(checkpoint)
    for _ in range(4):
        if os.path.isfile(os.path.join(folder, "config.json")) and os.path.isdir(os.path.join(folder, "checkpoints")):
            return os.path.join(folder, "config.json")
        folder = os.path.dirname(folder)
    return None


def _from_run_config(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if not isinstance(config, dict) or "pretrained" not in config:
        return {}
    resolution = config.get("resolution")
    values = {
        "model": config["pretrained"].get("model"), "family": config["pretrained"].get("family") or None,
        "height": config.get("height") or resolution, "width": config.get("width") or resolution,
        "num_frames": config.get("num_frames"), "max_sequence_length": config.get("max_sequence_length"),
        "guidance_scale": config.get("sample", {}).get("eval_guidance_scale"),
        "num_steps": config.get("sample", {}).get("eval_num_steps"),
    }
    return {key: value for key, value in values.items() if value not in (None, "")}


def _from_model_folder(model: str) -> dict:
    path = os.path.join(model, MODEL_SETTINGS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    values = {key: stored[key] for key in KEYS if key in stored}
    if "resolution" in stored:
        values.setdefault("height", stored["resolution"])
        values.setdefault("width", stored["resolution"])
    return values


def read_settings(model: str = "", checkpoint: str = "") -> ModelSettings:
    """What ``checkpoint``'s run (if any) and the model folder (``model``, or the run's base model) say."""
    values, sources = {}, {}
    run_config = _run_config(checkpoint) if checkpoint else None
    if run_config:
        for key, value in _from_run_config(run_config).items():
            values[key], sources[key] = value, run_config
    folder = model or values.get("model", "")
    if folder and os.path.isdir(folder):
        for key, value in _from_model_folder(folder).items():
            if key not in values:
                values[key], sources[key] = value, os.path.join(folder, MODEL_SETTINGS_FILE)
    if "model" in values and not model and not values["model"].startswith("builtin:") and not os.path.exists(values["model"]) \
            and (os.path.isabs(values["model"]) or values["model"].startswith(".")):
        del values["model"], sources["model"]  # the run's base model was a local folder that is not here
    return ModelSettings(values, sources)


def choose(flag, name: str, settings: ModelSettings, default, label: str = ""):
    """``flag`` when given (not None), warning when the model was trained with another value; else the
    model's setting; else ``default``."""
    known = settings.get(name)
    if flag is None:
        return known if known is not None else default
    if known is not None and flag != known:
        print(f"warning: {label or name} {flag} differs from the {known} the model was trained with "
              f"({settings.sources[name]})", file=sys.stderr)
    return flag
