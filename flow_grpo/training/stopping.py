"""How a run stops when it must (docs/operations.md): preemption signals, an epoch abandoned on every process
at once, and collectives that get no answer.

Preemption. SLURM and Kubernetes send SIGTERM (or a signal asked for, e.g. ``#SBATCH --signal=USR1@300``)
some time before they kill a job. :class:`StopRequest` catches ``config.stop_signals`` and only notes the
request; the trainer looks at it where stopping is clean:

- between sampling batches and between reward batches: the epoch in flight is abandoned (its samples thrown
  away; the weights are still those of the last completed epoch), the sampler is set back to where that epoch
  began, a checkpoint of that state is written (unless one exists) and the run exits with
  :data:`EXIT_PREEMPTED`;
- after the update: the epoch is completed (its evaluation too, when due), checkpointed, and the run exits the
  same way.

Either way ``resume_from=latest`` continues exactly as a run that was never stopped. A second signal ends the
process at once (the default action), for when a checkpoint is not wanted.

Every process must agree on where to stop, or one would wait forever in a collective the others left:
:func:`agree` is one all-reduce of a status code (the largest wins), called at the same points by all.

A collective that gets no answer (a process that hangs, a node that is lost) fails after
``config.dist_timeout_s``, the process group's timeout. :func:`describe_collective_failure` turns gloo's
error into one that says so, and asks a side group's ``monitored_barrier`` which ranks are missing. Under NCCL
the communicator's watchdog ends the process at the same timeout and logs the collective itself.
"""

from __future__ import annotations

import signal
import sys

import torch

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: stopped on request with a checkpoint; resume_from=latest continues

# agree(): the largest status of any process wins
RUNNING, STOP_REQUESTED, REWARD_FAILED = 0, 1, 2


class EpochAbandoned(Exception):
    """The epoch in flight is given up on every process: ``status`` is why (STOP_REQUESTED or REWARD_FAILED);
    ``error`` is this process's own reward error, when it had one."""

    def __init__(self, status: int, error: Exception | None = None):
        super().__init__("stop requested" if status == STOP_REQUESTED else f"a reward failed: {error or 'on another process'}")
        self.status, self.error = status, error


def parse_signals(names: str) -> list[signal.Signals]:
    """``"SIGTERM,SIGUSR1"`` -> the signals; an unknown name is a ValueError naming it."""
    found = []
    for name in [n.strip().upper() for n in names.split(",") if n.strip()]:
        name = name if name.startswith("SIG") else "SIG" + name
        if not hasattr(signal, name) or name in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"config.stop_signals: {name!r} is not a signal that can be caught")
        found.append(getattr(signal, name))
    return found


class StopRequest:
    """Notes the first of ``signals`` that arrives; a second one ends the process with its default action."""

    def __init__(self, signals: list[signal.Signals]):
        self.received: str | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.received is not None:  # asked twice: stop now, without a checkpoint
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = signal.Signals(signum).name
        print(f"{self.received} received: stopping at the next clean point with a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def local_status(self) -> int:
        return STOP_REQUESTED if self.requested else RUNNING

    def restore(self) -> None:
        """Put the handlers back as they were (tests run several trainers in one process)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


COLLECTIVE_FAILURE_MARKERS = ("timed out", "timeout", "connection closed by peer", "connection reset by peer",
                              "broken pipe", "connection refused")


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that got no answer (a timeout, or a peer that went away)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(marker in text for marker in COLLECTIVE_FAILURE_MARKERS)


def monitor_group(timeout_s: float):
    """A gloo side group for :func:`missing_ranks` (every process must call this, at the start), or None."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return None
    import datetime

    return torch.distributed.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))


def missing_ranks(group, timeout_s: float) -> str:
    """What a ``monitored_barrier`` on ``group`` says of the other ranks: which failed to arrive, or that all did."""
    if group is None:
        return "no side group to ask which rank is missing"
    import datetime

    try:
        torch.distributed.monitored_barrier(group=group, timeout=datetime.timedelta(seconds=timeout_s), wait_all_ranks=True)
    except RuntimeError as error:
        return str(error).strip().splitlines()[0]
    return "every rank answered a monitored barrier afterwards"


def describe_collective_failure(error: BaseException, rank: int, world_size: int, timeout_s: float, where: str, group) -> str:
    """The message for a collective that got no answer: this rank, where it was, the bound, the missing ranks."""
    first_line = str(error).strip().splitlines()[0][:300]
    missing = missing_ranks(group, min(timeout_s, 10.0))
    if any(marker in first_line.lower() for marker in ("closed by peer", "reset by peer", "broken pipe", "refused")):
        what = "a peer closed its connection: its process or its node is gone"
    else:
        what = f"no answer within config.dist_timeout_s = {timeout_s:g} s: a process hung or was lost"
    return (f"rank {rank} of {world_size}: a collective failed ({where}): {what}. Monitored barrier: {missing}. "
            f"Backend: {first_line}. The last checkpoint is intact: resume with config.resume_from=latest")
