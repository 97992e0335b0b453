"""Typed data between the phases of an epoch (docs/architecture.md, "Data flow").

:class:`Rollout` is what sampling hands to the rewards, the advantages and the objectives; a
:class:`TransitionBatch` is what one training micro-step re-scores. Shapes: ``N`` samples of this process in
the epoch, ``K`` stored denoising steps per sample (every step, or Flow-GRPO-Fast's SDE window), ``n`` rows of
a minibatch, ``*latent`` one latent's shape (``C, h, w`` for SD3, ``D`` for the toy worlds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

PER_SAMPLE = "per_sample"  # field metadata: False for fields that are not indexed by sample


def _select(value: Any, rows: torch.Tensor) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[rows.to(value.device)]
    if isinstance(value, np.ndarray):
        return value[rows.cpu().numpy()]
    if isinstance(value, TensorFields):
        return value.select(rows)
    if isinstance(value, dict):
        return {key: _select(item, rows) for key, item in value.items()}
    if isinstance(value, list):
        return [value[i] for i in rows.tolist()]
    raise TypeError(f"cannot select rows of a {type(value).__name__}")


def _concatenate(values: list) -> Any:
    first = values[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, np.ndarray):
        return np.concatenate(values)
    if isinstance(first, TensorFields):
        return concatenate(values)
    if isinstance(first, dict):
        return {key: _concatenate([value[key] for value in values]) for key in first}
    if isinstance(first, list):
        return [item for value in values for item in value]
    raise TypeError(f"cannot concatenate {type(first).__name__} fields")


def concatenate(parts: list):
    """Parts of the same ``TensorFields`` dataclass joined along the sample dimension (e.g. the sampling
    batches of an epoch into one :class:`Rollout`); fields that are not per sample come from the first part."""
    changes = {
        field.name: _concatenate([getattr(part, field.name) for part in parts])
        for field in dataclasses.fields(parts[0])
        if field.metadata.get(PER_SAMPLE, True)
    }
    return dataclasses.replace(parts[0], **changes)


class TensorFields:
    """For dataclasses whose fields are indexed by sample: ``select(rows)`` and ``to(device)`` act on every
    field (tensors, numpy arrays, lists, dicts of those, nested ``TensorFields``); a field declared with
    ``metadata={PER_SAMPLE: False}`` is carried over unchanged."""

    def select(self, rows: torch.Tensor):
        rows = torch.as_tensor(rows, dtype=torch.long)
        changes = {
            field.name: _select(getattr(self, field.name), rows)
            for field in dataclasses.fields(self)
            if field.metadata.get(PER_SAMPLE, True)
        }
        return dataclasses.replace(self, **changes)

    def to(self, device):
        changes = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (torch.Tensor, TensorFields)):
                changes[field.name] = value.to(device)
        return dataclasses.replace(self, **changes)


class Conditioning(TensorFields):
    """A model's per-sample conditioning (SD3: prompt embeddings; toy worlds: a prompt code). ``pooled`` is
    one vector per sample, the input of FlowRL's log Z head."""

    @property
    def pooled(self) -> torch.Tensor:
        raise NotImplementedError


@dataclasses.dataclass
class TransitionBatch(TensorFields):
    """Stored transitions ``x -> x_next`` of ``n`` samples, one denoising step each, ready to be re-scored."""

    latents: torch.Tensor  # [n, *latent] x at the start of the step
    next_latents: torch.Tensor  # [n, *latent] the x_next the sampler drew
    sigmas: torch.Tensor  # [n]
    sigmas_next: torch.Tensor  # [n]
    old_log_probs: torch.Tensor  # [n] log p(x_next | x) under the sampling policy
    conditioning: Conditioning
    old_means: torch.Tensor | None = None  # [n, *latent] the sampling policy's step mean (GRPO-Guard)


@dataclasses.dataclass
class Rollout(TensorFields):
    """One epoch of this process's samples, rewards included. SDE rollouts (the GRPO family) store every
    stochastic step's latents and log-probs; ODE rollouts (the forward-process objectives) only the clean
    ``final_latents`` and the sampling schedule (``sigmas``)."""

    prompts: list[str]  # [N]
    metadata: list[dict]  # [N] the prompt's metadata (GenEval: tag, objects, ...)
    group_ids: torch.Tensor  # [N] int64: samples with equal ids, over all processes, form one GRPO group
    conditioning: Conditioning  # [N, ...]
    final_latents: torch.Tensor  # [N, *latent] the clean sample x0 of each trajectory
    rewards: dict[str, np.ndarray]  # column -> [N]; "avg" is the weighted sum the advantages use
    sigmas: torch.Tensor | None = None  # [N, K] flow time at the start of each stored step (ODE rollouts: each step)
    sigmas_next: torch.Tensor | None = None  # [N, K] and at its end
    latents: torch.Tensor | None = None  # [N, K + 1, *latent]: [:, j] enters stored step j, [:, j + 1] leaves it (SDE)
    log_probs: torch.Tensor | None = None  # [N, K] log-prob of each stored step under the sampling policy (SDE)
    prev_sample_means: torch.Tensor | None = None  # [N, K, *latent] each stored step's Gaussian mean (GRPO-Guard)
    images: torch.Tensor | None = None  # [N, 3, H, W] in [0, 1]
    reward_info: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # numeric per-sample info
    timing: dict[str, float] = dataclasses.field(default_factory=dict, metadata={PER_SAMPLE: False})

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def num_steps(self) -> int:
        """K: the stored steps of an SDE rollout, or the sampling schedule's steps of an ODE rollout."""
        return self.sigmas.shape[1]

    def step_metrics(self) -> dict[str, float]:
        """Where the stored steps lie: the highest flow time any of them starts at (a sliding window's
        position over epochs) and how many there are."""
        return {"stored_sigma_max": float(self.sigmas[:, 0].max()), "stored_steps": float(self.num_steps)}

    def transitions(self, rows: torch.Tensor, steps: torch.Tensor, device) -> TransitionBatch:
        """The stored step ``steps[i]`` of sample ``rows[i]`` for every i, on ``device``."""
        if self.latents is None or self.log_probs is None:
            raise ValueError("this rollout stored no denoising steps; an objective that re-scores steps needs SDE rollouts")
        return TransitionBatch(
            latents=self.latents[rows, steps].to(device),
            next_latents=self.latents[rows, steps + 1].to(device),
            sigmas=self.sigmas[rows, steps].to(device),
            sigmas_next=self.sigmas_next[rows, steps].to(device),
            old_log_probs=self.log_probs[rows, steps].to(device),
            conditioning=self.conditioning.select(rows).to(device),
            old_means=None if self.prev_sample_means is None else self.prev_sample_means[rows, steps].to(device),
        )
