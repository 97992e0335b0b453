"""The sizes a run derives from its config, computed in one place and printed before it starts, and the epoch
fitted to the number of processes a run is launched with (``config.scale``)."""

from __future__ import annotations

import dataclasses
import math

from flow_grpo.config_cli import ConfigError
from flow_grpo.errors import InputError
from flow_grpo.objectives import OBJECTIVES


@dataclasses.dataclass(frozen=True)
class RunSizes:
    processes: int
    images_per_batch: int  # per process and sampling batch (sample.train_batch_size)
    batches_per_epoch: int  # sampling batches per epoch (sample.num_batches_per_epoch)
    group_size: int  # images per group (sample.num_image_per_prompt)
    stored_steps: int  # stochastic steps stored per image: all sampling steps, or the SDE window (ODE: the schedule)
    trained_steps: int  # of those, trained per image: int(stored_steps * train.timestep_fraction), at least 1
    #                     (stratified: train.timestep_count)
    minibatch: int  # images per micro-step and process (train.batch_size)
    accumulation: int  # minibatches per optimizer step (train.gradient_accumulation_steps)
    inner_epochs: int  # passes over an epoch's samples (train.num_inner_epochs)

    @property
    def images_per_process(self) -> int:
        return self.images_per_batch * self.batches_per_epoch

    @property
    def images_per_epoch(self) -> int:
        return self.images_per_process * self.processes

    @property
    def groups_per_epoch(self) -> int:
        return self.images_per_epoch // self.group_size

    @property
    def micro_steps_per_optimizer_step(self) -> int:
        """One micro-step per (minibatch, trained step): what accelerate accumulates over."""
        return self.accumulation * self.trained_steps

    @property
    def images_per_optimizer_step(self) -> int:
        return self.minibatch * self.accumulation * self.processes

    @property
    def max_optimizer_steps_per_epoch(self) -> int:
        """With every sample kept (zero-advantage samples are dropped, so often fewer)."""
        return self.images_per_process // (self.minibatch * self.accumulation) * self.inner_epochs

    def describe(self) -> str:
        return "\n".join([
            f"  processes                          {self.processes}",
            f"  images per epoch                   {self.images_per_epoch} ({self.groups_per_epoch} groups of {self.group_size}; "
            f"{self.batches_per_epoch} batches of {self.images_per_batch} per process)",
            f"  denoising steps stored / trained   {self.stored_steps} / {self.trained_steps} per image",
            f"  micro-steps per optimizer step     {self.micro_steps_per_optimizer_step} "
            f"({self.accumulation} minibatches of {self.minibatch} x {self.trained_steps} trained steps)",
            f"  images per optimizer step          {self.images_per_optimizer_step} (all processes)",
            f"  optimizer steps per epoch          at most {self.max_optimizer_steps_per_epoch}",
        ])


def run_sizes(config, processes: int, group_size: int | None = None) -> RunSizes:
    """The run's sizes; raises ConfigError when the batches do not split as the update needs.

    ``group_size`` overrides ``sample.num_image_per_prompt`` (a toy world whose group is the whole batch).
    """
    sample, train = config.sample, config.train
    # SDE rollouts store the Fast window's steps (the toy worlds have no window); ODE rollouts (the forward-process
    # objectives) ignore the window and train on the whole schedule
    sde_rollouts = OBJECTIVES[train.objective].sde_rollouts if train.objective in OBJECTIVES else True
    stored = (sample.get("sde_window_size", 0) if sde_rollouts else 0) or sample.num_steps
    trained = train.timestep_count if train.timestep_strategy == "stratified" else max(1, int(stored * train.timestep_fraction))
    sizes = RunSizes(
        processes=processes, images_per_batch=sample.train_batch_size, batches_per_epoch=sample.num_batches_per_epoch,
        group_size=group_size or sample.num_image_per_prompt, stored_steps=stored,
        trained_steps=trained, minibatch=train.batch_size,
        accumulation=train.gradient_accumulation_steps, inner_epochs=train.num_inner_epochs,
    )
    if (processes * sizes.images_per_batch) % sizes.group_size:
        raise ConfigError(
            f"{processes} process(es) x sample.train_batch_size {sizes.images_per_batch} images per sampling batch do not "
            f"hold whole groups of sample.num_image_per_prompt = {sizes.group_size}: give batches that do, or leave them "
            f"to config.scale (a config sized by epoch_sizes is resized for the processes it is launched on)"
        )
    window = sizes.minibatch * sizes.accumulation
    if sizes.images_per_process % window:
        raise ConfigError(
            f"each process samples {sizes.images_per_process} images per epoch (sample.train_batch_size x "
            f"sample.num_batches_per_epoch), not a multiple of train.batch_size x train.gradient_accumulation_steps "
            f"= {window}: an optimizer step would mix two epochs' samples"
        )
    if sizes.trained_steps > stored:
        raise ConfigError(f"train.timestep_fraction {train.timestep_fraction} asks for {sizes.trained_steps} of {stored} stored steps")
    return sizes


def frame_size(config) -> tuple[int, int]:
    """``(height, width)`` of a sample: ``config.height`` and ``config.width``, or ``config.resolution`` where
    they are 0."""
    height, width = int(config.get("height", 0) or config.resolution), int(config.get("width", 0) or config.resolution)
    if height <= 0 or width <= 0:
        raise InputError(f"the sample size must be positive, got {height} x {width}")
    return height, width


# ---- an epoch on any number of processes (config.scale) ----

BATCH_KEYS = ("sample.train_batch_size", "sample.num_image_per_prompt", "sample.num_batches_per_epoch", "train.batch_size",
              "train.gradient_accumulation_steps", "train.num_inner_epochs")


def size_epoch(config, processes: int) -> None:
    """Set the batch keys so that ``config.scale``'s epoch runs on ``processes`` processes: ``groups_per_epoch``
    groups of ``group_size`` images in ``optimizer_steps_per_epoch`` optimizer steps, whatever the machine.

    Each process samples batches of ``b`` images, the largest multiple of ``k / gcd(k, processes)`` up to
    ``max_batch`` (the original's per-GPU batch: 9 for SD3.5-M on 80 GB, 3 for FLUX.1-dev, 4 for Qwen-Image), so
    that the processes' batch holds whole groups for the k-repeat sampler: for SD3.5-M b = 9 on 32 GPUs, 6 on 4,
    24 on 1 (sampling needs no activations kept); training micro-batches are ``b`` or, when ``b`` exceeds
    ``max_batch``, its largest divisor up to it (8 on 1 GPU). ``config.scale.processes`` records ``processes``.
    """
    scale, k = config.scale, config.scale.group_size
    unit = k // math.gcd(k, processes)
    sample_batch = max(unit, unit * (scale.max_batch // unit))
    train_batch = max(d for d in range(1, min(sample_batch, scale.max_batch) + 1) if sample_batch % d == 0)
    images_per_epoch = scale.groups_per_epoch * k
    if images_per_epoch % (processes * sample_batch):
        raise ConfigError(f"config.scale: {scale.groups_per_epoch} groups of {k} do not split into batches of {processes} "
                          f"process(es) x {sample_batch} images; launch another number of processes")
    config.sample.train_batch_size = sample_batch
    config.sample.num_image_per_prompt = k
    config.sample.num_batches_per_epoch = images_per_epoch // (processes * sample_batch)
    config.train.batch_size = train_batch
    config.train.num_inner_epochs = 1
    scale.processes = processes
    accumulate_into_steps(config, scale.optimizer_steps_per_epoch)


def accumulate_into_steps(config, per_epoch: int) -> None:
    """Accumulate an epoch's minibatches into ``per_epoch`` optimizer steps (at least one minibatch each)."""
    minibatches = config.sample.num_batches_per_epoch * config.sample.train_batch_size // config.train.batch_size
    config.train.gradient_accumulation_steps = max(1, minibatches // per_epoch)
    config.scale.optimizer_steps_per_epoch = per_epoch


def fit_to_processes(config, processes: int) -> list[str]:
    """A config sized for another number of processes (``config.scale.processes``, with the epoch it describes)
    resized for ``processes``: the same groups per epoch and optimizer steps per epoch in other batches. Returns
    what changed ("key a -> b"), nothing when the count is the one it was sized for or it records no epoch."""
    scale = config.get("scale")
    if not scale or not scale.groups_per_epoch or scale.processes in (0, processes):
        return []
    before = {key: _get(config, key) for key in BATCH_KEYS}
    sized_for = scale.processes
    size_epoch(config, processes)
    changes = [f"{key} {before[key]} -> {_get(config, key)}" for key in BATCH_KEYS if before[key] != _get(config, key)]
    sample, train = config.sample, config.train
    steps = sample.train_batch_size * sample.num_batches_per_epoch // (train.batch_size * train.gradient_accumulation_steps)
    return [f"config sized for {sized_for} process(es), launched on {processes}: the same {scale.groups_per_epoch} groups of "
            f"{scale.group_size} per epoch, {steps} optimizer step(s) ({scale.optimizer_steps_per_epoch} asked; "
            f"{'; '.join(changes) or 'no batch changes'}; --config.scale.groups_per_epoch=0 keeps the sizes as written)"]


def _get(config, key: str):
    section, name = key.split(".")
    return config[section][name]
