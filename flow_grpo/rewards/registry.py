"""Rewards are built by name and called as ``fn(images, prompts, metadata) -> (scores, info)``.

``images`` is a float tensor [N, 3, H, W] in [0, 1]; ``scores`` a float array [N]; ``info`` a dict of
per-image arrays (extra columns to log). A factory takes keyword options (device, model paths, ...) and
returns such a function; register it with ``@register("name")`` in its own module under ``flow_grpo/rewards/``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

_FACTORIES: dict[str, Callable] = {}
NAN_POLICIES = ("error", "drop")


class RewardError(RuntimeError):
    """A reward that cannot be built, raised, or answered something unusable; the message names it."""


def register(name: str):
    def decorator(factory):
        if name in _FACTORIES:
            raise ValueError(f"reward {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorator


def available_rewards() -> list[str]:
    _import_builtin_rewards()
    return sorted(_FACTORIES)


def build_reward(name: str, **options) -> Callable:
    """The reward ``name`` built with ``options``; with a ``server_url`` option, a client of that reward server."""
    _import_builtin_rewards()
    if "server_url" in options:
        from flow_grpo.rewards.remote import remote_reward

        return remote_reward(name, **options)
    if name not in _FACTORIES:
        raise RewardError(f"unknown reward {name!r}; valid: {', '.join(sorted(_FACTORIES))}")
    try:
        return _FACTORIES[name](**options)
    except RewardError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to build is reported with the reward's name
        hint = ""
        if isinstance(error, OSError):  # a model that cannot be downloaded or found
            hint = (f" (a reward's models are hub ids or local folders: point its model options at local copies with "
                    f"config.reward_options = {{{name!r}: {{...}}}}; docs/rewards.md lists each reward's options)")
        raise RewardError(f"cannot build reward {name!r}: {type(error).__name__}: {str(error).splitlines()[0]}{hint}") from error


def _import_builtin_rewards() -> None:
    # each module registers its rewards on import
    from flow_grpo.rewards import (  # noqa: F401
        aesthetic,
        clipscore,
        geneval,
        image_similarity,
        imagereward,
        jpeg,
        ocr,
        pickscore,
        remote,
        simple,
        vlm,
    )


def check_scores(name: str, scores, num_images: int) -> np.ndarray:
    """The scores as a float64 array [N], or a RewardError saying what is wrong with them."""
    try:
        scores = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise RewardError(f"reward {name!r} returned scores that are not numbers: {error}") from None
    if scores.shape != (num_images,):
        raise RewardError(f"reward {name!r} returned scores of shape {scores.shape} for {num_images} images")
    return scores


class MultiReward:
    """Weighted sum of several rewards: returns ``{"avg": ..., name: ...}`` columns, one float array [N] each.

    ``nan_policy``: ``"error"`` stops with a message naming the reward and how many images got NaN;
    ``"drop"`` passes NaN through; the trainer then leaves those samples out of the advantages and the update.
    """

    def __init__(self, weights: dict, options: dict | None = None, nan_policy: str = "error"):
        if not weights:
            raise RewardError("config.reward_fn is empty: name at least one reward, e.g. {'jpeg_compressibility': 1.0}")
        if nan_policy not in NAN_POLICIES:
            raise RewardError(f"unknown reward_nan_policy {nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
        options = dict(options or {})
        self.weights = {str(name): float(weight) for name, weight in dict(weights).items()}
        self.functions = {name: build_reward(name, **dict(options.get(name, {}))) for name in self.weights}
        self.nan_policy = nan_policy

    @property
    def columns(self) -> list[str]:
        return ["avg", *self.weights]

    def __call__(self, images, prompts, metadata) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        num_images = len(prompts)
        columns, info = {}, {}
        total = np.zeros(num_images)
        for name, fn in self.functions.items():
            try:
                result = fn(images, prompts, metadata)
            except RewardError:
                raise
            except Exception as error:  # noqa: BLE001 - report which reward failed
                raise RewardError(f"reward {name!r} raised {type(error).__name__}: {error}") from error
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RewardError(f"reward {name!r} must return (scores, info), got {type(result).__name__}")
            scores = check_scores(name, result[0], num_images)
            bad = ~np.isfinite(scores)
            if bad.any() and self.nan_policy == "error":
                raise RewardError(
                    f"reward {name!r} returned {int(bad.sum())} non-finite scores (NaN/inf) for {num_images} images; "
                    "set config.reward_nan_policy='drop' to leave those images out of the update instead"
                )
            columns[name] = scores
            total = total + self.weights[name] * scores
            for key, value in dict(result[1] or {}).items():
                info[f"{name}_{key}"] = np.asarray(value)
        columns["avg"] = total
        return {key: columns[key] for key in self.columns}, info


def multi_score(weights: dict, options: dict | None = None, nan_policy: str = "error") -> MultiReward:
    return MultiReward(weights, options, nan_policy)
