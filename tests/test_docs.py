"""The docs say what the code does, where a cheap check can tell: every objective of the registry is listed
wherever the objectives are listed, every config file is named in the layout, and every command of the README
and the docs names a file that exists."""

import glob
import os
import re

import pytest

from conftest import REPO
from flow_grpo.objectives import OBJECTIVES


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as handle:
        return handle.read()


def test_the_architectures_objective_table_is_the_registry():
    table = re.findall(r"^\| `(\w+)` \| `objectives/(\w+)\.py` \|", read("docs/architecture.md"), flags=re.M)
    assert [name for name, _ in table] == list(OBJECTIVES)
    assert all(OBJECTIVES[name].__module__ == f"flow_grpo.objectives.{module}" for name, module in table)


@pytest.mark.parametrize("path", ["flow_grpo/objectives/__init__.py", "docs/objectives.md", "scripts/train.py", "config/base.py"])
def test_every_objective_is_named(path):
    text = read(path)
    missing = [name for name in OBJECTIVES if not re.search(rf"[`\"']{name}[`\"']|\b{name}\b", text)]
    assert not missing, f"{path} does not name {missing}"


def test_layout_names_every_config_file():
    layout = read("docs/architecture.md") + read("README.md")
    configs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "config", "*.py")))
    assert [c for c in configs if c not in layout] == []


def test_commands_in_the_docs_name_files_that_exist():
    """``python X.py``, ``bash X.sh`` and ``--config X.py:NAME`` in the README and docs/*.md point at files of
    the repository (moved files leave no stale command behind)."""
    texts = {"README.md": read("README.md"), **{os.path.relpath(p, REPO): read(os.path.relpath(p, REPO))
                                              for p in glob.glob(os.path.join(REPO, "docs", "*.md"))}}
    pattern = re.compile(r"(?:python3? |bash |--config |--config_file |launch (?:[-\w=. ]+ )?)((?:[\w.-]+/)*[\w.-]+\.(?:py|sh|yaml))")
    stale = []
    for name, text in texts.items():
        for path in pattern.findall(text):
            if path.startswith(("-", "/")) or "FILE" in path or "NAME" in path:
                continue
            if not os.path.exists(os.path.join(REPO, path)):
                stale.append(f"{name}: {path}")
    assert not stale, stale
