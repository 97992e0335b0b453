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

import contextlib
import os
import signal
import sys
from typing import NamedTuple

import torch

from flow_grpo.checkpoint import folders
from flow_grpo.checkpoint.folders import CheckpointWriteError
from flow_grpo.checkpoint.training_state import save_training_checkpoint
from flow_grpo.collectives import agree
from flow_grpo.errors import InputError
from flow_grpo.rewards.registry import RewardError
from flow_grpo.training.update import NonFiniteUpdates

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


# ---- the supervisor: what scripts/train.py's loop leaves to this module ----

PREEMPTED_MARKER = "preempted.json"


class RunStopped(Exception):
    """The run ends here on purpose, a checkpoint written: ``status`` is its exit status, ``message`` what this
    process prints ("" when another process says it)."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(message)
        self.status, self.message = status, message


class ExitRule(NamedTuple):
    error: type  # the exception (and its subclasses)
    before_training: int | None  # the exit status during setup: the config, the prompts, the rewards' factories, the model
    while_training: int | None  # from the base model's evaluation on; None: a bug, its traceback kept
    names_epoch: bool = False  # the message says which epoch


# What ends a run, and its exit status (docs/operations.md, "Exit statuses"): the first rule that matches wins; an
# exception in none is a bug and keeps its traceback. A collective with no answer ends a training run with 1, and
# an epoch given up (RunStopped) has its own status: 75 after a stop signal, 1 after a reward failed.
EXIT_RULES = (
    ExitRule(CheckpointWriteError, 2, 2),  # the earlier checkpoints are intact
    ExitRule(NonFiniteUpdates, 1, 1, names_epoch=True),  # train.max_nonfinite_steps skipped steps in a row
    ExitRule(RewardError, 2, 1),  # a reward that cannot be built is bad input; one that fails while training ends the run
    ExitRule(InputError, 2, 2),  # a malformed config, a missing model or prompt file, a corrupt checkpoint
    ExitRule(FileNotFoundError, 2, None),
)


class Supervisor:
    """The fault handling of a run, out of the training loop's sight: the phase the run is in (for an error that
    interrupts it), the stop signals, the checkpoint written when the run ends early, the preemption marker, and
    :meth:`exit_status`, the one table from what ended the run to its exit status.

    Made before anything else (setup errors go through :meth:`exit_status` too); :meth:`start` arms it once
    the training state exists. ``rollouts`` wraps an epoch's rollouts, ``end_of_epoch`` says whether the run
    ends after the epoch just completed, ``end_epoch`` writes its checkpoint and stops a preempted run."""

    def __init__(self):
        self.phase = "setup"  # what the run is doing, in the words of an error message
        self.epoch_in_flight = 0  # 1-based; 0 before the first epoch
        self.training = False
        self.stop: StopRequest | None = None
        self.last_checkpoint: str | None = None
        self.epochs_done, self.train_seconds = 0, 0.0
        self._saved_step: int | None = None  # the global step of the newest checkpoint on disk
        self._state = self._config = self._run_dir = self._monitor = None

    def start(self, state, config, run_dir: str, resumed_at: tuple[int, int] | None) -> None:
        """Catch ``config.stop_signals`` and open the side group that names a missing rank (every process, here);
        ``resumed_at``: (epoch, global step) of the checkpoint the run resumed from."""
        self._state, self._config, self._run_dir = state, config, run_dir
        self.stop = StopRequest(parse_signals(config.stop_signals))
        self._monitor = monitor_group(min(config.dist_timeout_s or 60.0, 60.0))
        if resumed_at is not None:
            self.epochs_done, self._saved_step = resumed_at
            if state.accelerator.is_main_process and os.path.exists(os.path.join(run_dir, PREEMPTED_MARKER)):
                os.remove(os.path.join(run_dir, PREEMPTED_MARKER))
        self.training = True
        self.phase = "the base model's evaluation"

    @property
    def _is_main(self) -> bool:
        return self._state.accelerator.is_main_process

    def checkpoint(self, epochs_done: int, global_step: int) -> None:
        self.phase = f"the checkpoint after epoch {epochs_done}"
        self.last_checkpoint = save_training_checkpoint(self._state, os.path.join(self._run_dir, "checkpoints"), epochs_done,
                                                        global_step, self._config.num_checkpoint_limit)
        self._saved_step = global_step

    @contextlib.contextmanager
    def rollouts(self, epoch: int, global_step: int):
        """Epoch ``epoch + 1``'s rollouts. Abandoned (a stop signal, a reward that failed, on any process): the
        sampler and the generators go back to where the epoch began, the last completed epoch is checkpointed
        (unless it is already) and the run stops: exit 75 with the preemption marker, or 1."""
        self.phase, self.epoch_in_flight = f"epoch {epoch + 1}: rollouts", epoch + 1
        sampler_at_start, rng_at_start = self._state.sampler.state_dict(), folders.capture_rng_state()
        try:
            yield
        except EpochAbandoned as abandoned:
            # nothing was trained yet: the weights are the last completed epoch's, and so is the checkpoint
            self._state.sampler.load_state_dict(sampler_at_start)
            folders.restore_rng_state(rng_at_start)
            if self._saved_step != global_step:
                self.checkpoint(epoch, global_step)
            if abandoned.status != STOP_REQUESTED:
                raise RunStopped(1, f"error: {abandoned.error or 'a reward failed on another process'}; epoch {epoch + 1} is "
                                    f"abandoned and epoch {epoch}, the last completed, is checkpointed (resume with "
                                    "config.resume_from=latest)") from None
            raise RunStopped(EXIT_PREEMPTED, self._preempted(epoch, f"during epoch {epoch + 1}'s rollouts (abandoned)")) from None
        self.phase = f"epoch {epoch + 1}: update"

    def end_of_epoch(self, epochs_done: int, epoch_seconds: float) -> str:
        """Whether the run ends after this completed epoch, as every process agrees: "stop" (a stop signal on any
        process), "last" (the last epoch, or config.max_minutes of training spent) or ""."""
        from accelerate.utils import broadcast_object_list

        self.epochs_done, self.train_seconds = epochs_done, self.train_seconds + epoch_seconds
        if agree(self._state.accelerator, self.stop.local_status()) == STOP_REQUESTED:
            return "stop"
        if epochs_done == self._config.num_epochs:
            return "last"
        out_of_time = [bool(self._config.max_minutes) and self.train_seconds >= 60 * self._config.max_minutes]
        broadcast_object_list(out_of_time)  # the main process's clock decides
        return "last" if out_of_time[0] else ""

    def end_epoch(self, epochs_done: int, global_step: int, ending: str) -> None:
        """The checkpoint every config.save_freq epochs and when the run ends; after a stop signal, exit 75."""
        if epochs_done % self._config.save_freq == 0 or ending:
            self.checkpoint(epochs_done, global_step)
        if ending == "stop":
            raise RunStopped(EXIT_PREEMPTED, self._preempted(epochs_done, f"after epoch {epochs_done} (completed)"))

    def _preempted(self, epochs_done: int, when: str) -> str:
        """``preempted.json`` in the run folder (under ``accelerate launch`` the launcher exits 1 whatever its
        processes' status, so a job script that requeues checks this file; a resumed run removes it), and the
        message: the main process's only."""
        if not self._is_main:
            return ""
        found = folders.list_checkpoints(os.path.join(self._run_dir, "checkpoints"))
        checkpoint = found[-1][1] if found else ""
        folders.write_json(os.path.join(self._run_dir, PREEMPTED_MARKER), {"signal": self.stop.received, "epochs_done": epochs_done,
                                                                           "checkpoint": checkpoint, "exit_status": EXIT_PREEMPTED})
        return (f"stopped on {self.stop.received or 'a signal to another process'} {when}; checkpoint {checkpoint}; "
                f"exit {EXIT_PREEMPTED}: resume with config.resume_from=latest")

    def exit_status(self, error: Exception) -> int | None:
        """The exit status for what ended the run, its message printed; None for a bug (re-raise it)."""
        if isinstance(error, RunStopped):
            status, message = error.status, error.message
        elif self.training and is_collective_failure(error):
            accelerator = self._state.accelerator
            status, message = 1, "error: " + describe_collective_failure(error, accelerator.process_index, accelerator.num_processes,
                                                                       self._config.dist_timeout_s, self.phase, self._monitor)
        else:
            rule = next((rule for rule in EXIT_RULES if isinstance(error, rule.error)), None)
            status = None if rule is None else rule.while_training if self.training else rule.before_training
            if status is None:
                return None
            message = f"error: {f'epoch {self.epoch_in_flight}: ' if rule.names_epoch else ''}{error}"
        if message:
            print(message, file=sys.stderr, flush=True)
        return status

    def close(self) -> None:
        if self.stop is not None:
            self.stop.restore()
