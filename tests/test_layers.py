"""The library's layers import only downwards (docs/architecture.md, "Map"): pure math and data, then
sampling and the model boundary, the model adapters, the objectives, and the training parts on top."""

import ast
import os

from conftest import REPO

LAYERS = [
    # 0: pure math, data and utilities
    ["sde", "advantages", "rollout", "seeding", "data", "config_cli", "images", "flops", "snr", "ema", "plots",
     "runlog", "checkpoint", "checkpoint.atomic", "checkpoint.folders"],
    # 1: the sampling loop and the model boundary
    ["sampling", "policy"],
    # 2: models and what scores them
    ["sd3", "toy", "tiny_sd3", "tiny_models", "lora", "rewards", "reward_server", "geneval", "shapes"],
    # 3: objectives
    ["objectives"],
    # 4: training parts
    ["training", "checkpoint.training_state", "launch"],
]


def layer_of(module: str) -> int:
    """The layer of ``flow_grpo.<module>``: its longest listed prefix."""
    best, rank = "", None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, index
    assert rank is not None, f"flow_grpo.{module} is in no layer of tests/test_layers.py"
    return rank


def imported_modules(path: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flow_grpo"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "flow_grpo")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("flow_grpo"))
    return {m.removeprefix("flow_grpo").lstrip(".") for m in found} - {""}


def test_layers_import_only_downwards():
    root = os.path.join(REPO, "flow_grpo")
    violations, checked = [], 0
    for folder, _, files in os.walk(root):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            module = os.path.relpath(path, root)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            if module == "__init__":
                continue
            checked += 1
            for imported in imported_modules(path):
                if layer_of(imported) > layer_of(module):
                    violations.append(f"flow_grpo.{module} (layer {layer_of(module)}) imports flow_grpo.{imported} (layer {layer_of(imported)})")
    assert checked > 50
    assert not violations, "\n".join(violations)
