"""The library's layers import only downwards (docs/architecture.md, "Map"): pure math and data, then
sampling and the model boundary, the model adapters, the objectives, and the training parts on top."""

import ast
import os

from conftest import REPO

LAYERS = [
    # 0: pure math, data and utilities
    ["sde", "advantages", "rollout_types", "seeding", "data", "config_cli", "images", "flops", "snr", "ema", "plots",
     "runlog", "checkpoint", "checkpoint.atomic", "checkpoint.folders", "videos", "errors", "collectives"],
    # 1: the sampling loop and the model boundary
    ["sampling_loop", "flow_policy"],
    # 2: models and what scores them
    ["backbones", "toy", "tiny_reward_models", "lora", "rewards", "reward_server", "geneval", "shapes"],
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


FAMILY_FOLDERS = ("backbones.sd3", "backbones.flux", "backbones.qwenimage", "backbones.wan", "backbones.flux_kontext")


def test_nothing_above_the_backbone_layer_knows_the_family():
    """Objectives and training parts import the backbone layer's interface, never a family's folder (only the
    registry, ``flow_grpo.backbones``, names them)."""
    root = os.path.join(REPO, "flow_grpo")
    offenders = []
    for folder in ("objectives", "training", "checkpoint"):
        for base, _, files in os.walk(os.path.join(root, folder)):
            for file in (f for f in files if f.endswith(".py")):
                path = os.path.join(base, file)
                family_imports = [m for m in imported_modules(path) if m.startswith(FAMILY_FOLDERS)]
                offenders += [f"{os.path.relpath(path, REPO)} imports flow_grpo.{m}" for m in family_imports]
    assert not offenders, "\n".join(offenders)


def parameter_counts(path: str):
    """(function name, line, parameters) of every function in ``path``; ``self`` and ``cls`` are not counted."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
            yield node.name, node.lineno, len([n for n in names if n not in ("self", "cls")])


def test_no_library_function_takes_more_than_eight_parameters():
    """Settings that travel together go in a typed request (e.g. ``SamplingSpec``), not in long signatures."""
    root = os.path.join(REPO, "flow_grpo")
    counts = []
    for base, _, files in os.walk(root):
        for file in (f for f in files if f.endswith(".py")):
            path = os.path.join(base, file)
            counts += [(n, os.path.relpath(path, REPO), name, line) for name, line, n in parameter_counts(path)]
    largest = max(counts)
    assert largest[0] <= 8, f"{largest[1]}:{largest[3]} {largest[2]} takes {largest[0]} parameters"
