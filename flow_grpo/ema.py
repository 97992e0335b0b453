"""Copies of the trained parameters: :class:`Snapshot`, which moves only when told (the objectives' old policies
and references), and :class:`EMA`, the exponential moving average that evaluation and exported checkpoints use."""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch


class Snapshot:
    """A float32 copy of the trained parameters that moves only when told: :meth:`blend` (``blend(0)`` copies
    the parameters), swapped in for a forward with :meth:`swapped_in`. The objectives keep their old policies
    and references as snapshots (DiffusionNFT's old policy and AWM's KL-EMA blend on their own schedules; DPO's
    reference and SFT's sampler are refreshed by copying)."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], names=None):
        self.parameters = list(parameters)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.parameters))]
        if len(self.names) != len(self.parameters):
            raise ValueError(f"{len(self.names)} names for {len(self.parameters)} parameters")
        self.shadow = [p.detach().float().clone() for p in self.parameters]
        self.num_updates = 0

    @torch.no_grad()
    def blend(self, decay: float) -> None:
        """``shadow = decay * shadow + (1 - decay) * param`` now; ``blend(0)`` copies the parameters."""
        for shadow, param in zip(self.shadow, self.parameters):
            shadow.mul_(decay).add_(param.detach().float(), alpha=1.0 - decay)

    @contextlib.contextmanager
    def swapped_in(self):
        """Temporarily replace the parameters by the snapshot's values."""
        backup = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for shadow, param in zip(self.shadow, self.parameters):
                param.copy_(shadow.to(param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for saved, param in zip(backup, self.parameters):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"shadow.{name}": s for name, s in zip(self.names, self.shadow)}
        state["num_updates"] = torch.tensor(self.num_updates)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len([k for k in state if k.startswith("shadow.")]) != len(self.shadow):
            raise ValueError(f"{type(self).__name__} state does not match the trained parameters")
        for name, shadow in zip(self.names, self.shadow):
            if f"shadow.{name}" not in state:
                raise ValueError(f"{type(self).__name__} state has no entry for {name!r}")
            shadow.copy_(state[f"shadow.{name}"])
        self.num_updates = int(state["num_updates"])


class EMA(Snapshot):
    """``shadow = decay * shadow + (1 - decay) * param`` every ``update_interval`` optimizer steps: the
    evaluation weights, which exported checkpoints hold. The shadow starts at the initial parameters and is
    kept in float32.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float = 0.9, update_interval: int = 8, names=None,
                 warmup: bool = False):
        """``warmup``: the decay is ``min(decay, (1 + n) / (10 + n))`` at the n-th update (DiffusionNFT's), so
        the first updates follow the weights closely."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        super().__init__(parameters, names)
        self.warmup = warmup
        self.decay = decay
        self.update_interval = max(1, int(update_interval))

    @torch.no_grad()
    def step(self, global_step: int) -> bool:
        """Update after optimizer step number ``global_step`` (1-based) when it is a multiple of the interval."""
        if global_step % self.update_interval:
            return False
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else self.decay
        self.blend(decay)
        self.num_updates += 1
        return True
