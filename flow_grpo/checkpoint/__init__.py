"""Checkpoints, all in one place: atomic writes (``atomic``), checkpoint folders and their tensor/JSON
serialisation without pickle (``folders``), and what a training checkpoint holds (``training_state``, imported
on its own: it needs accelerate and the model code)."""

from flow_grpo.checkpoint.atomic import atomic_publish_dir, atomic_write_bytes, atomic_write_json
from flow_grpo.checkpoint.folders import (
    COMPLETE_MARKER,
    CheckpointError,
    list_checkpoints,
    prune_checkpoints,
    resolve_resume,
)

__all__ = [
    "COMPLETE_MARKER",
    "CheckpointError",
    "atomic_publish_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "list_checkpoints",
    "prune_checkpoints",
    "resolve_resume",
]
