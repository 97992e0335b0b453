"""Dump every named config of config/*.py to one JSON file, and compare two dumps key by key.

    python scripts/dump_configs.py --out /tmp/configs_before.json
    # ... restructure config/ ...
    python scripts/dump_configs.py --out /tmp/configs_after.json --compare /tmp/configs_before.json

The dump is ``{"FILE.py:NAME": config}`` for every experiment of every config file with a ``get_config``
(``flow_grpo.config_cli.experiment_names``), each config as ``to_dict()`` with tuples written as lists and keys
sorted. ``--compare`` prints every config added or removed and every key added, removed or changed (old and new
value), and exits 1 if there is any; otherwise it prints one line and exits 0. ``--renamed`` reads the earlier
dump's keys under their new names first (``flow_grpo.config_cli.RENAMED_KEYS``), so that a renamed key with its
value kept is no difference.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from flow_grpo.config_cli import RENAMED_KEYS, experiment_names, load_config, load_module  # noqa: E402


def json_safe(value):
    """Tuples as lists, dict keys as strings, everything else as JSON writes it."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [json_safe(item) for item in value]
    return value


def dump_all(config_dir: str) -> dict:
    """``{"FILE.py:NAME": config as a JSON-safe dict}`` for every named config in ``config_dir``."""
    configs = {}
    for path in sorted(glob.glob(os.path.join(config_dir, "*.py"))):
        if "def get_config" not in open(path).read():
            continue
        for name in experiment_names(vars(load_module(path))):
            configs[f"{os.path.basename(path)}:{name}"] = json_safe(load_config(f"{path}:{name}").to_dict())
    return configs


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"a.b.c": value}`` for every leaf of a nested dict (a dict-valued key such as reward_fn is walked too)."""
    leaves = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            leaves.update(flatten(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def renamed(leaves: dict) -> dict:
    """Flat keys under their new names (RENAMED_KEYS)."""
    return {RENAMED_KEYS.get(key, key): value for key, value in leaves.items()}


def differences(old: dict, new: dict, rename: bool = False) -> list[str]:
    """One line per config added or removed and per key added, removed or changed."""
    lines = [f"removed config {name}" for name in sorted(old.keys() - new.keys())]
    lines += [f"added config {name}" for name in sorted(new.keys() - old.keys())]
    for name in sorted(old.keys() & new.keys()):
        before, after = flatten(old[name]), flatten(new[name])
        before = renamed(before) if rename else before
        lines += [f"{name}: removed key {key} (was {before[key]!r})" for key in sorted(before.keys() - after.keys())]
        lines += [f"{name}: added key {key} = {after[key]!r}" for key in sorted(after.keys() - before.keys())]
        lines += [f"{name}: {key} changed {before[key]!r} -> {after[key]!r}"
                  for key in sorted(before.keys() & after.keys()) if before[key] != after[key]]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the dump (JSON)")
    parser.add_argument("--compare", default="", help="an earlier dump to compare this one with, key by key")
    parser.add_argument("--config-dir", default=os.path.join(REPO, "config"))
    parser.add_argument("--renamed", action="store_true", help="compare the earlier dump's keys under their new names")
    args = parser.parse_args(argv)
    configs = dump_all(args.config_dir)
    with open(args.out, "w") as handle:
        json.dump(configs, handle, indent=1, sort_keys=True)
    print(f"wrote {len(configs)} configs to {args.out}")
    if not args.compare:
        return 0
    with open(args.compare) as handle:
        old = json.load(handle)
    lines = differences(old, json.loads(json.dumps(configs, sort_keys=True)), rename=args.renamed)
    for line in lines:
        print(line)
    if lines:
        print(f"{len(lines)} differences against {args.compare}")
        return 1
    print(f"{len(configs)} configs identical key by key" + (" (renamed keys under their new names)" if args.renamed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
