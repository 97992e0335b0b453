"""Training objectives as plug-ins of the one update loop, selected by ``config.train.objective``.

An objective is its file here and one registration (``@register_objective`` on its class, which declares
its name, what it needs from a rollout and its settings, ``SETTINGS``); this package imports every file, and the
trainers, config/base.py's ``config.train`` sections, the docs checks and the tests read ``OBJECTIVES``. Each
file's module docstring has its formulas and source; ``python -m flow_grpo.objectives`` lists them (name, file,
rollouts, summary) and docs/objectives.md compares them.
"""

from __future__ import annotations

import importlib
import pkgutil

from flow_grpo.errors import InputError
from flow_grpo.objectives.base import OBJECTIVES, Minibatch, Objective, register_objective


def _import_every_objective() -> None:
    """Import each file: its ``@register_objective`` adds the objective to ``OBJECTIVES``."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in ("base", "__main__"):
            importlib.import_module(f"{__name__}.{module.name}")
    by_name = dict(sorted(OBJECTIVES.items()))  # whatever order the files import each other in
    OBJECTIVES.clear()
    OBJECTIVES.update(by_name)


_import_every_objective()
from flow_grpo.objectives.grpo import KL_FORMS  # noqa: E402 (after the registry is filled)


def check_train_config(config) -> None:
    """Refuse an unknown ``config.train.objective`` or ``kl_form`` (``config`` is ``config.train``) before any
    model is loaded."""
    if config.objective not in OBJECTIVES:
        raise InputError(f"unknown config.train.objective {config.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if config.kl_form not in KL_FORMS:
        raise InputError(f"unknown config.train.kl_form {config.kl_form!r}; valid: {', '.join(KL_FORMS)}")


def build_objective(config, pooled_dim: int = 0) -> Objective:
    """The objective ``config.objective`` names (``config`` is ``config.train``)."""
    check_train_config(config)
    return OBJECTIVES[config.objective](config, pooled_dim=pooled_dim)


__all__ = ["OBJECTIVES", "Minibatch", "Objective", "build_objective", "check_train_config", "register_objective"]
