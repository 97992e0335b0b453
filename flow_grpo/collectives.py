"""The two reductions over processes that the run's decisions use, each one all-reduce of one number, and
nothing on a single process: every process must call them at the same point."""

from __future__ import annotations

import torch
import torch.distributed as dist


def agree(accelerator, status: int) -> int:
    """The largest ``status`` of all processes (one all-reduce of one number); this process's on one process.
    Statuses are ordered so that the worst wins (``flow_grpo.training.stopping``; 0 = every process is fine)."""
    if accelerator.num_processes == 1:
        return status
    value = torch.tensor([status], device=accelerator.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def mean_over_processes(value: torch.Tensor) -> float:
    """The mean of a 0-d tensor over the processes of the default group (itself without one), for code that
    holds no accelerator (an objective's end of update)."""
    if dist.is_available() and dist.is_initialized():
        value = value.detach().clone().float().to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return float(value)
