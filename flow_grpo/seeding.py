"""Seeds derived from names and counters, so that every random draw of a run is a function of
(config.seed, epoch, batch, process, sample): reproducible, resumable, and independent of batch layout."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts) -> int:
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator_for(*parts, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))
