"""Rewards are built by name and called as ``fn(images, prompts, metadata) -> (scores, info)``.

``images`` is a float tensor [N, 3, H, W] in [0, 1] (videos: [N, F, 3, H, W]); ``scores`` a float array [N];
``info`` a dict of per-image arrays (extra columns to log). A factory takes keyword options (device, model
paths, ...) and returns such a function; register it with ``@register("name")`` in its own module under
``flow_grpo/rewards/``.

Videos: a reward registered with ``takes_videos=True`` scores the whole clip (``temporal_consistency``); any
other reward scores every ``frame_interval``-th frame (0, 4, 8, ... by default, as the original Flow-GRPO's
video OCR) as an image with its video's prompt and metadata, and a video's score is the mean over those
frames (:func:`score_frames`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

_FACTORIES: dict[str, Callable] = {}
NAN_POLICIES = ("error", "drop")


class RewardError(RuntimeError):
    """A reward that cannot be built, raised, or answered something unusable; the message names it."""


_VIDEO_REWARDS: set[str] = set()
DEFAULT_FRAME_INTERVAL = 4


def register(name: str, takes_videos: bool = False):
    """Register a reward factory under ``name``; ``takes_videos``: its function scores ``[N, F, 3, H, W]``
    clips itself (else a video is scored frame by frame)."""

    def decorator(factory):
        if name in _FACTORIES:
            raise ValueError(f"reward {name!r} registered twice")
        _FACTORIES[name] = factory
        if takes_videos:
            _VIDEO_REWARDS.add(name)
        return factory

    return decorator


def takes_videos(name: str) -> bool:
    _import_builtin_rewards()
    return name in _VIDEO_REWARDS


def score_frames(fn, videos, prompts, metadata, frame_interval: int = DEFAULT_FRAME_INTERVAL):
    """An image reward ``fn`` on videos ``[N, F, 3, H, W]``: frames ``0, k, 2k, ...`` (``k = frame_interval``)
    scored as images with their video's prompt and metadata; returns the per-video mean score and the
    per-video mean of each numeric per-frame info column."""
    if frame_interval < 1:
        raise ValueError(f"reward_frame_interval must be at least 1, got {frame_interval}")
    frames = videos[:, ::frame_interval]
    count, per_video = frames.shape[0], frames.shape[1]
    flat = frames.reshape(count * per_video, *frames.shape[2:])
    result = fn(flat, [p for p in prompts for _ in range(per_video)], [m for m in metadata for _ in range(per_video)])
    if not (isinstance(result, tuple) and len(result) == 2):
        return result  # reported by the caller
    scores, info = result
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape == (count * per_video,):
        scores = scores.reshape(count, per_video).mean(axis=1)
    averaged = {}
    for key, value in dict(info or {}).items():
        value = np.asarray(value)
        if value.dtype.kind in "fiub" and value.shape == (count * per_video,):
            averaged[key] = value.astype(np.float64).reshape(count, per_video).mean(axis=1)
    return scores, averaged


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
        shapes_edit,
        simple,
        video,
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
    ``frame_interval``: on videos, the image rewards score every ``frame_interval``-th frame (:func:`score_frames`).
    """

    def __init__(self, weights: dict, options: dict | None = None, nan_policy: str = "error",
                 frame_interval: int = DEFAULT_FRAME_INTERVAL):
        if not weights:
            raise RewardError("config.reward_fn is empty: name at least one reward, e.g. {'jpeg_compressibility': 1.0}")
        if nan_policy not in NAN_POLICIES:
            raise RewardError(f"unknown reward_nan_policy {nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
        options = dict(options or {})
        self.weights = {str(name): float(weight) for name, weight in dict(weights).items()}
        self.functions = {name: build_reward(name, **dict(options.get(name, {}))) for name in self.weights}
        self.nan_policy = nan_policy
        self.frame_interval = int(frame_interval)
        self.video_native = {name for name in self.weights if takes_videos(name)}
        self.running: str | None = None  # the reward being computed now (a trainer waiting on a hung batch names it)

    @property
    def columns(self) -> list[str]:
        return ["avg", *self.weights]

    def __call__(self, images, prompts, metadata) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        num_images = len(prompts)
        columns, info = {}, {}
        total = np.zeros(num_images)
        for name, fn in self.functions.items():
            self.running = name
            videos = getattr(images, "ndim", 4) == 5
            if name in self.video_native and not videos:
                raise RewardError(f"reward {name!r} scores videos [N, F, 3, H, W], but got images of shape {tuple(images.shape)}")
            try:
                if videos and name not in self.video_native:
                    result = score_frames(fn, images, prompts, metadata, self.frame_interval)
                else:
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
        self.running = None
        return {key: columns[key] for key in self.columns}, info


def multi_score(weights: dict, options: dict | None = None, nan_policy: str = "error",
                frame_interval: int = DEFAULT_FRAME_INTERVAL) -> MultiReward:
    return MultiReward(weights, options, nan_policy, frame_interval)
