"""Python config files selected as ``--config config/FILE.py:NAME`` with ``--config.a.b=value`` overrides.

A config file defines one function per experiment returning an ``ml_collections.ConfigDict`` and ends with::

    def get_config(name):
        return config_by_name(name, globals())

Errors name the bad part and list the valid choices: an unknown experiment, an unknown key (with the
closest matches), or a value of the wrong type.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import os
import sys
from typing import Callable, Sequence

import ml_collections

from flow_grpo.errors import InputError


class ConfigError(InputError):
    """A config name, path, key or value that cannot be used; the message says which and why."""


# keys that moved, so that an old command line gets told where its key went
RENAMED_KEYS = {
    "train.loss_mode": "train.objective",
    "sample.global_std": "train.global_std",
    "per_prompt_stat_tracking": "train.per_prompt_stat_tracking",
    "train.advantage_mode": "train.per_prompt_stat_tracking (true for grpo groups, false for ddpo)",
    "sample.batch_size": "sample.train_batch_size",
    # an objective's section no longer reuses a name of config.train's shared keys (issue 36)
    "train.nft.beta": "train.nft.mix_strength",
    "train.dpo.beta": "train.dpo.temperature",
    "train.dgpo.beta": "train.dgpo.temperature",
    "train.dgpo.clip_range": "train.dgpo.trust_region",
    "train.awm.ema_beta": "train.awm.kl_ema_beta",
    "train.awm.ema_decay": "train.awm.kl_ema_decay",
}


def experiment_names(namespace: dict) -> list[str]:
    """Public functions defined in a config module (other than ``get_config``): its experiment names."""
    module_name = namespace.get("__name__")
    return sorted(
        name
        for name, value in namespace.items()
        if inspect.isfunction(value)
        and not name.startswith("_")
        and name != "get_config"
        and value.__module__ == module_name
    )


def config_by_name(name: str, namespace: dict) -> ml_collections.ConfigDict:
    names = experiment_names(namespace)
    if name not in names:
        where = namespace.get("__file__", namespace.get("__name__", "?"))
        hint = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown config {name!r} in {where}{hint}; valid: {', '.join(names)}")
    return namespace[name]()


def load_module(path: str):
    """Import a Python file by path (config files load their siblings, e.g. base.py, this way)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    module_name = "_flow_grpo_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Load ``path/to/file.py:NAME`` by calling the file's ``get_config(NAME)``."""
    path, sep, name = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found (expected --config path/to/file.py:NAME)")
    module = load_module(path)
    names = experiment_names(vars(module))
    if not sep or not name:
        raise ConfigError(f"no experiment named in {spec!r}; use {path}:NAME with NAME one of: {', '.join(names)}")
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config(name)")
    config = module.get_config(name)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{spec!r} returned {type(config).__name__}, not an ml_collections.ConfigDict")
    return config


def _parse_value(key: str, text: str, current):
    """Convert the override text to the type of the current value."""

    def literal():
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
        try:  # JSON spellings too: {"binary": true}, null
            return json.loads(text)
        except ValueError:
            return text

    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}: expected true or false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{key}: expected an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}: expected a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        value = literal()
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"--config.{key}: expected a list such as [1, 2], got {text!r}")
        return type(current)(value)
    if isinstance(current, (dict, ml_collections.ConfigDict)):
        value = literal()
        if not isinstance(value, dict):
            raise ConfigError(f"--config.{key}: expected a dict such as {{'a': 1.0}}, got {text!r}")
        return value
    if text.strip().lower() == "none":
        return None
    return literal()


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, full + "."))
    return keys


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        container_keys = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
        if part not in container_keys:
            # a dict-valued field (like reward_fn = {"ocr": 1.0}) accepts new keys
            if isinstance(node, dict) and depth == len(parts) - 1:
                node[part] = _parse_value(key, text, None)
                return
            if key in RENAMED_KEYS:
                raise ConfigError(f"config key {key!r} was renamed: use --config.{RENAMED_KEYS[key]}")
            candidates = _all_keys(config)
            hint = difflib.get_close_matches(key, candidates, n=3)
            parent = ".".join(parts[:depth])
            siblings = ", ".join(sorted(container_keys)) or "(none)"
            raise ConfigError(
                f"unknown config key {here!r}"
                + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                + f"; keys under {parent or 'the root'!r}: {siblings}"
            )
        if depth == len(parts) - 1:
            value = _parse_value(key, text, node[part])
            try:
                node[part] = value
            except TypeError as error:
                raise ConfigError(f"--config.{key}={text!r}: {error}") from None
        else:
            node = node[part]


def parse_args(argv: Sequence[str] | None = None, default_config: str | None = None, help_epilog: str = "",
               after_overrides: Callable[[ml_collections.ConfigDict, set[str]], None] | None = None) -> ml_collections.ConfigDict:
    """Parse ``--config FILE.py:NAME`` (or ``--config=...``) and any ``--config.key=value`` / ``--config.key value``.
    ``-h`` / ``--help`` raises the usage (and ``help_epilog``, e.g. what the script can train) as a ConfigError;
    ``after_overrides(config, overridden keys)`` runs last (scripts/train.py fits the epoch to its processes there).

    Raises :class:`ConfigError` for anything it cannot use; ``main`` functions print it and exit 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    spec = default_config
    overrides: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            raise ConfigError(
                "usage: --config path/to/file.py:NAME [--config.key=value ...]"
                + (f" (default {default_config})" if default_config else "")
                + (f"\n{help_epilog}" if help_epilog else "")
            )
        if arg == "--config" or arg.startswith("--config="):
            if "=" in arg:
                spec = arg.split("=", 1)[1]
            else:
                if i + 1 >= len(argv):
                    raise ConfigError("--config needs a value: path/to/file.py:NAME")
                spec = argv[i + 1]
                i += 1
        elif arg.startswith("--config."):
            body = arg[len("--config.") :]
            if "=" in body:
                key, text = body.split("=", 1)
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value")
                key, text = body, argv[i + 1]
                i += 1
            overrides.append((key, text))
        else:
            raise ConfigError(f"unrecognised argument {arg!r}; expected --config FILE.py:NAME or --config.key=value")
        i += 1
    if spec is None:
        raise ConfigError("missing --config path/to/file.py:NAME")
    config = load_config(spec)
    if "run_name" in config and not config.run_name:
        config.run_name = spec.partition(":")[2]  # default run folder: the experiment's name
    for key, text in overrides:
        apply_override(config, key, text)
    if after_overrides is not None:
        after_overrides(config, {key for key, _ in overrides})
    return config
