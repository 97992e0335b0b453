"""Phase timing hooks: the training parts wrap their phases (``sampling``, ``vae_decode``, ``reward_wait``,
``train_forward_backward``, ``optimizer``, ``ema``, ...) in ``timer(name)``. A run passes :func:`no_timer`;
scripts/benchmark.py passes a clock that synchronises the device, so it times the trainer's own code."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

Timer = Callable[[str], ContextManager]


def no_timer(_phase: str) -> ContextManager:
    return contextlib.nullcontext()
