"""What an objective is to the trainers and the update loop (docs/architecture.md, "Objectives").

The loop (``flow_grpo.training.update``) cuts this process's kept samples into minibatches and gives each
minibatch ``J`` micro-steps (``J`` = trained timesteps per sample); an optimizer step follows every
``gradient_accumulation_steps x J`` micro-steps. For each minibatch it calls :meth:`Objective.prepare` once
(without gradients), then :meth:`Objective.loss` for micro-step ``j = 0 .. J-1`` and back-propagates the
loss. Everything objective-specific (which tensors to score, references and snapshots, extra heads) lives in
the objective; the loop holds no objective branch.

An epoch, as the trainers run it::

    objective.attach(parameters, names)              # once: snapshots of the policy's weights, if any
    with objective.rollout_weights(global_step):     # the weights that sample (NFT's old policy, DPO's reference)
        rollout = collect(...)                       # SDE with log-probs if sde_rollouts, else the ODE
    advantages = compute_advantages(...)
    values = objective.training_advantages(rollout, advantages)   # what the update trains with
    keep = select_training_samples(values) if objective.skips_zero_advantages else every sample
    update(...)                                      # prepare / loss per minibatch, then objective.end_update()
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar, ContextManager

import torch

from flow_grpo.ema import Snapshot
from flow_grpo.flow_policy import FlowPolicy
from flow_grpo.rollout_types import Rollout, TransitionBatch
from flow_grpo.seeding import generator_for

Stats = dict[str, torch.Tensor]  # name -> 0-d tensor; the loop averages each name over the epoch's update


@dataclasses.dataclass
class Minibatch:
    """Rows of this process's rollout that one group of micro-steps trains on."""

    rollout: Rollout
    rows: torch.Tensor  # [n] indices into the rollout
    steps: torch.Tensor  # [n, J] step indices of each row; micro-step j trains steps[:, j]
    advantages: torch.Tensor  # [n] float32 on the training device (what training_advantages returned)
    device: torch.device
    noise_seed: int = 0  # seeds the fresh noise of forward-process objectives (:meth:`noise`)

    @property
    def num_micro_steps(self) -> int:
        return self.steps.shape[1]

    def transitions(self, j: int) -> TransitionBatch:
        """The stored transitions of micro-step ``j``: step ``steps[i, j]`` of row ``rows[i]``."""
        return self.rollout.transitions(self.rows, self.steps[:, j], self.device)

    def clean_latents(self) -> torch.Tensor:
        """x0 of each row [n, *latent]: the rollouts' final latents."""
        return self.rollout.final_latents[self.rows.to(self.rollout.final_latents.device)].to(self.device).float()

    def schedule_sigmas(self, j: int) -> torch.Tensor:
        """The flow time of step ``steps[:, j]`` in each row's sampling schedule [n]."""
        return self.rollout.sigmas[self.rows, self.steps[:, j]].to(self.device).float()

    def noise(self, j: int, name: str = "noise") -> torch.Tensor:
        """Standard normal noise shaped like the clean latents [n, *latent], the same for the same minibatch,
        micro-step and ``name`` (seeded, so a resumed run draws it again)."""
        shape = (len(self.rows), *self.rollout.final_latents.shape[1:])
        return torch.randn(shape, generator=generator_for(self.noise_seed, name, j)).to(self.device)

    def uniform(self, j: int, name: str) -> torch.Tensor:
        """Seeded uniform numbers in [0, 1), one per row [n]."""
        return torch.rand(len(self.rows), generator=generator_for(self.noise_seed, name, j)).to(self.device)

    def conditioning(self):
        return self.rollout.conditioning.select(self.rows).to(self.device)


def own_settings(config, name: str, defaults: dict):
    """``config.<name>`` (``config`` is ``config.train``), or the defaults where a config has no such section
    (a config built by hand)."""
    import ml_collections

    section = config.get(name) if hasattr(config, "get") else getattr(config, name, None)
    return section if section is not None else ml_collections.ConfigDict(dict(defaults))


class Objective:
    """A training objective: what it needs from a rollout, and the loss of one micro-step.

    Subclasses set ``name`` and the class flags, and implement :meth:`loss` (and the hooks they need). Extra
    modules trained beside the policy (FlowRL's log Z head) go in ``trained_modules``: the trainer has them
    wrapped for its processes (:meth:`wrap_trained_modules`, accelerate's ``prepare``) and saves them in
    checkpoints as ``<name>.<parameter>``.
    Snapshots of the policy's own weights (an old policy, a reference that moves) are :class:`Snapshot` objects
    made in :meth:`attach` and saved by :meth:`state_dict`.

    An objective's own settings are declared in its class as ``SETTINGS`` (key -> default): config/base.py
    gives every objective its section ``config.train.<name>`` from them, so an objective's settings live in its
    file (its one registration, ``@register_objective``, puts it in ``flow_grpo.objectives.OBJECTIVES``) and a named
    config states only what differs (``config.train.nft.mix_strength = 0.1``). ``self.settings`` is that
    section; the shared keys (``beta``, ``clip_range``, ``adv_clip_max``, the timesteps) stay in ``config.train``.

    Args:
        config: ``config.train`` (the shared keys, and this objective's section).
        pooled_dim: width of ``Conditioning.pooled``, for objectives with a prompt-conditioned head.
    """

    name: ClassVar[str]  # config.train.objective
    summary: ClassVar[str]  # one line: what it trains (python -m flow_grpo.objectives, the docs checks)
    sde_rollouts: ClassVar[bool] = True  # SDE rollouts storing every stochastic step; False: ODE, final latents
    needs_step_means: ClassVar[bool] = False  # also each stored step's Gaussian mean
    skips_zero_advantages: ClassVar[bool] = True  # samples whose training advantage is 0 are left out of the update
    keeps_groups_together: ClassVar[bool] = False  # minibatches cut from whole groups side by side (DGPO's group sums)
    SETTINGS: ClassVar[dict] = {}  # the objective's own keys and defaults: config.train.<name>.<key>
    settings_section: ClassVar[str | None] = None  # the section of SETTINGS when not ``name`` (a modified objective's)

    def __init__(self, config, pooled_dim: int = 0):
        self.config = config
        self.settings = own_settings(config, self.settings_section or self.name, self.SETTINGS)
        self.trained_modules: dict[str, torch.nn.Module] = {}
        self.snapshots: dict[str, Snapshot] = {}

    @classmethod
    def settings_sections(cls) -> dict[str, dict]:
        """Every ``config.train.<section>`` this objective reads, with its defaults (config/base.py makes them)."""
        return {cls.settings_section or cls.name: dict(cls.SETTINGS)} if cls.SETTINGS else {}

    def wrap_trained_modules(self, wrap) -> None:
        """Replace each of ``trained_modules`` by ``wrap(module)`` (accelerate's ``prepare``: DDP with several
        processes), so that the loss trains the wrapped module; called once, by the run's assembly."""
        self.trained_modules = {name: wrap(module) for name, module in self.trained_modules.items()}

    @classmethod
    def needs_reference(cls, config) -> bool:
        """Whether the loss calls ``policy.reference_velocity`` (the trainer then keeps a reference model)."""
        return config.beta > 0

    def attach(self, parameters: list[torch.nn.Parameter], names: list[str]) -> None:
        """Called once with the policy's trained parameters (and their names), before the first epoch."""

    def rollout_weights(self, global_step: int) -> ContextManager:
        """Entered around an epoch's rollouts: the weights that sample (default: the current ones)."""
        return contextlib.nullcontext()

    def training_advantages(self, rollout: Rollout, advantages: torch.Tensor) -> torch.Tensor:
        """The per-sample values [N] the update trains with (default: the group advantages)."""
        return advantages

    def prepare(self, policy: FlowPolicy, minibatch: Minibatch) -> tuple[Any, Stats]:
        """Called once per minibatch before its micro-steps, without gradients; returns a state handed to
        every :meth:`loss` call of the minibatch, and statistics to log."""
        return None, {}

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared: Any) -> tuple[torch.Tensor, Stats]:
        """The loss of micro-step ``j`` (a 0-d tensor to back-propagate) and statistics to log."""
        raise NotImplementedError

    def end_update(self, global_step: int) -> dict[str, float]:
        """Called after the epoch's update; returns statistics to log (e.g. a snapshot's decay)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint keeps for an exact resume: every snapshot's shadow, and the objective's counters."""
        state = {}
        for name, snapshot in self.snapshots.items():
            state.update({f"{name}.{key}": value for key, value in snapshot.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, snapshot in self.snapshots.items():
            prefix = f"{name}."
            snapshot.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})


@contextlib.contextmanager
def snapshot_weights(snapshot: Snapshot | None):
    """The policy's trained parameters replaced by ``snapshot``'s values inside the block (no gradients: call it
    before any forward whose graph is kept, since the parameters are written in place)."""
    if snapshot is None:
        yield
        return
    with torch.no_grad(), snapshot.swapped_in():
        yield


def snapshot_velocity(policy: FlowPolicy, snapshot: Snapshot, latents, sigmas, conditioning) -> torch.Tensor:
    """The policy's velocity with ``snapshot``'s weights (float32, detached, its own memory). Call it before
    the micro-step's forward with gradients: the weights are swapped in place."""
    with snapshot_weights(snapshot):
        return policy.velocity(latents, sigmas, conditioning).float().clone()


class RefreshedSnapshotObjective(Objective):
    """An objective that samples from a snapshot of the policy, replaced by the current weights every
    ``config.train.<name>.ref_update_step`` optimizer steps (0: never): online DPO's reference, SFT's sampler.
    The snapshot is kept under ``snapshot_name``; the refresh count travels with the checkpoint."""

    snapshot_name: ClassVar[str] = "ref"

    def attach(self, parameters, names):
        self.snapshots[self.snapshot_name] = Snapshot(parameters, names=names)
        self.refreshes = 0

    @contextlib.contextmanager
    def rollout_weights(self, global_step: int):
        every = self.settings.ref_update_step
        if every and global_step // every > self.refreshes:
            self.snapshots[self.snapshot_name].blend(0.0)  # online: the snapshot becomes the current policy
            self.refreshes = global_step // every
        with snapshot_weights(self.snapshots[self.snapshot_name]):
            yield

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "refreshes": torch.tensor(self.refreshes)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.refreshes = int(state["refreshes"])


# ---- the registry: one registration per objective ----

OBJECTIVES: dict[str, type[Objective]] = {}  # config.train.objective -> its class, filled as each file is imported


def register_objective(cls: type[Objective]) -> type[Objective]:
    """An objective's one registration, on its class in ``flow_grpo/objectives/<file>.py`` (flow_grpo.objectives
    imports every file): the trainers, ``config.train``'s sections, the docs checks and the tests read it."""
    for attribute in ("name", "summary"):
        if attribute not in vars(cls) or not isinstance(vars(cls)[attribute], str):
            raise TypeError(f"{cls.__name__} declares no {attribute}, which every objective declares (flow_grpo.objectives.base)")
    if cls.name in OBJECTIVES:
        raise TypeError(f"two objectives register the name {cls.name!r}: {OBJECTIVES[cls.name].__name__} and {cls.__name__}")
    OBJECTIVES[cls.name] = cls
    return cls
