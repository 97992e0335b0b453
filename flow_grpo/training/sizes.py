"""The sizes a run derives from its config, computed in one place and printed before it starts."""

from __future__ import annotations

import dataclasses

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
            f"hold whole groups of sample.num_image_per_prompt = {sizes.group_size}: launch the number of processes "
            f"the config is sized for (e.g. 32 for config/grpo.py's plain names) or use its _1gpu / _4gpu variant"
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
