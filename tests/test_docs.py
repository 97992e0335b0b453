"""The docs say what the code does, where a cheap check can tell, read from the registries rather than from
copies of names in the code: every registered objective has its row in the architecture's table and is named in
docs/objectives.md, every registered family its tiny model and pipeline in docs/backbones.md; every config file
is named in the layout; every command of the README and the docs names a file that exists, every
``config/FILE.py:NAME`` a named config, every ``--config.key`` and ``config.key`` a key of the config, and every
``flow_grpo.module.name`` something importable."""

import glob
import os
import re

import pytest

from conftest import REPO
from flow_grpo.backbones import BACKBONES
from flow_grpo.config_cli import experiment_names, load_module
from flow_grpo.objectives import OBJECTIVES


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as handle:
        return handle.read()


def docs() -> dict[str, str]:
    """README.md and docs/*.md: path -> text."""
    paths = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
    return {path: read(path) for path in paths}


def test_the_architectures_objective_table_is_the_registry():
    table = re.findall(r"^\| `(\w+)` \| `objectives/(\w+)\.py` \|", read("docs/architecture.md"), flags=re.M)
    assert sorted(name for name, _ in table) == sorted(OBJECTIVES)
    assert all(OBJECTIVES[name].__module__ == f"flow_grpo.objectives.{module}" for name, module in table)


def test_every_objective_is_named_in_the_objectives_page():
    text = read("docs/objectives.md")
    assert [name for name in OBJECTIVES if not re.search(rf"\b{name}\b", text)] == []


@pytest.mark.parametrize("family", list(BACKBONES))
def test_every_family_has_its_column_in_the_backbones_page(family):
    """Its tiny model and its pipeline class in docs/backbones.md's tables, and its folder in the layout."""
    cls, text = BACKBONES[family], read("docs/backbones.md")
    assert f"`{cls.tiny_model}`" in text and f"`{cls.pipeline_classes[0]}`" in text, family
    assert os.path.isdir(os.path.join(REPO, "flow_grpo", "backbones", cls.__module__.split(".")[2]))


def test_named_configs_in_the_docs_exist():
    named = {}
    stale = []
    for path, text in docs().items():
        for file, name in set(re.findall(r"config/(\w+)\.py:(\w+)(?![<{*\w])", text)):  # not config/tiny.py:tiny_<objective> or toy.py:four_modes_*
            if name == "NAME":
                continue
            if file not in named:
                module = os.path.join(REPO, "config", f"{file}.py")
                named[file] = experiment_names(vars(load_module(module))) if os.path.exists(module) else []
            if name not in named[file]:
                stale.append(f"{path}: config/{file}.py:{name}")
    assert not stale, stale


def config_keys(config, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if hasattr(value, "items") and not isinstance(value, dict):
            keys |= config_keys(value, f"{prefix}{key}.")
    return keys


def test_config_keys_in_the_docs_exist():
    """``--config.key`` and ``config.key`` (in backticks) name keys of the trainer's config (config/base.py)."""
    keys = config_keys(load_module(os.path.join(REPO, "config", "base.py")).default())
    stale = []
    for path, text in docs().items():
        named = set(re.findall(r"--config\.([a-z_][\w.]*[a-z_0-9])", text)) | set(re.findall(r"`config\.([a-z_][\w.]*[a-z_0-9])[` =]", text))
        stale += [f"{path}: config.{key}" for key in sorted(named) if key not in keys and key not in ("json", "a.b")]
    assert not stale, stale


def test_modules_and_functions_the_docs_name_exist():
    """``flow_grpo.module`` or ``flow_grpo.module.name`` (in backticks) imports."""
    import importlib

    stale = []
    for path, text in docs().items():
        for dotted in sorted(set(re.findall(r"`(flow_grpo(?:\.\w+)+)`", text))):
            if dotted.endswith((".json", ".py", ".md")):
                continue
            parts, found = dotted.split("."), None
            for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    found = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for attribute in parts[cut:]:
                    found = getattr(found, attribute, None)
                break
            if found is None:
                stale.append(f"{path}: {dotted}")
    assert not stale, stale


def test_layout_names_every_config_file():
    layout = read("docs/architecture.md") + read("README.md")
    configs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "config", "*.py")))
    assert [c for c in configs if c not in layout] == []


def test_commands_in_the_docs_name_files_that_exist():
    """``python X.py``, ``bash X.sh`` and ``--config X.py:NAME`` in the README and docs/*.md point at files of
    the repository (moved files leave no stale command behind)."""
    texts = docs()
    pattern = re.compile(r"(?:python3? |bash |--config |--config_file |launch (?:[-\w=. ]+ )?)((?:[\w.-]+/)*[\w.-]+\.(?:py|sh|yaml))")
    stale = []
    for name, text in texts.items():
        for path in pattern.findall(text):
            if path.startswith(("-", "/")) or "FILE" in path or "NAME" in path:
                continue
            if not os.path.exists(os.path.join(REPO, path)):
                stale.append(f"{name}: {path}")
    assert not stale, stale
