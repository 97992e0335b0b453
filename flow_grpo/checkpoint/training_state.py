"""What a trainer checkpoint holds, and how it is written and read back.

``checkpoint-<step>/``
  ``lora/``                      the EMA LoRA in the family's diffusers format (``pipe.load_lora_weights`` loads it), or
  ``transformer/``               the EMA transformer in diffusers layout for full fine-tuning
  ``state/trainable.safetensors`` the current (non-EMA) trained weights, objective heads included (``log_z.*``)
  ``state/ema.safetensors``      the EMA shadow
  ``state/objective.safetensors`` the objective's snapshots and counters (DiffusionNFT's old policy, AWM's
                                 KL-EMA, DPO's reference), when it keeps any
  ``state/optimizer.safetensors`` + ``optimizer.json``   optimizer state without pickle (DDP / one process)
  ``state/accelerate/``          under DeepSpeed or FSDP, whose optimizer states are sharded over processes:
                                 accelerate's own ``save_state`` (every process writes its shard)
  ``state/scaler.json``          the fp16 grad scaler, when there is one
  ``state/rng/rank<r>.json``     each process's Python, NumPy, torch and CUDA generators
  ``trainer_state.json``         epoch, global step, sampler counter, world size (written last)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil

import torch

from flow_grpo.checkpoint import folders
from flow_grpo.collectives import agree
from flow_grpo.data import DistributedKRepeatSampler
from flow_grpo.ema import EMA
from flow_grpo.lora import save_lora


@dataclasses.dataclass
class TrainingState:
    """Everything a checkpoint saves and a resume restores."""

    accelerator: object
    unwrapped: torch.nn.Module  # the trained transformer, exported as lora/ (use_lora) or transformer/
    prepared: torch.nn.Module  # the same as prepared by accelerate (its full weights are gathered under DeepSpeed/FSDP)
    use_lora: bool
    trainable: dict[str, torch.nn.Parameter]  # name -> trained parameter, objective heads included
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    sampler: DistributedKRepeatSampler
    objective: object  # flow_grpo.objectives.Objective: its state_dict() is saved, when not empty
    pipeline_class: type  # the family's diffusers pipeline class: writes lora/ in its format


def sharded_state(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def _export_model(state: TrainingState, folder: str, full_weights) -> None:
    """The EMA weights (when there is an EMA) as a diffusers LoRA or transformer folder; main process only."""
    exported = state.ema.swapped_in() if state.ema is not None else contextlib.nullcontext()
    with exported:
        if state.use_lora:
            save_lora(state.unwrapped, os.path.join(folder, "lora"), state.pipeline_class)
        elif full_weights is not None:
            from safetensors.torch import save_file

            os.makedirs(os.path.join(folder, "transformer"))
            state.unwrapped.save_config(os.path.join(folder, "transformer"))
            save_file({k: v.contiguous() for k, v in full_weights.items()}, os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"))
        else:
            state.unwrapped.save_pretrained(os.path.join(folder, "transformer"))


def save_training_checkpoint(state: TrainingState, checkpoints_dir: str, epoch: int, global_step: int, keep: int) -> str | None:
    """Write a complete checkpoint atomically and keep the newest ``keep`` (0: all). Every process must call
    this; returns the checkpoint's path on the main process.

    A write that fails on any process (``OSError``: a full disk, an unwritable folder) fails on all of them at
    the same point, as :class:`folders.CheckpointWriteError`; the partial copy is removed and the checkpoints
    already published stay as they were.
    """
    accelerator = state.accelerator
    tmp, error = os.path.join(checkpoints_dir, f".tmp-checkpoint-{global_step}"), None

    def attempt(write) -> bool:
        nonlocal error
        try:
            write()
        except OSError as failure:
            error = failure
        return agree(accelerator, 0 if error is None else 1) == 0

    def fail() -> None:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = [os.path.basename(p) for _, p in folders.list_checkpoints(checkpoints_dir)] if accelerator.is_main_process else []
        why = f"{type(error).__name__}: {error}" if error is not None else "another process could not write its part (see its error)"
        raise folders.CheckpointWriteError(
            f"cannot write checkpoint-{global_step} in {checkpoints_dir!r}: {why}. The partial copy is removed; "
            f"the checkpoints already there are intact ({', '.join(kept) or 'none yet'}). Free space or give a writable "
            "config.logdir, then resume with config.resume_from=latest")

    def make_tmp() -> None:
        nonlocal tmp
        if accelerator.is_main_process:
            os.makedirs(checkpoints_dir, exist_ok=True)
            tmp = folders.new_tmp_dir(checkpoints_dir, global_step)
            os.makedirs(os.path.join(tmp, "state", "rng"))

    if not attempt(make_tmp):
        fail()
    full_weights = None

    def write_every_process_part() -> None:
        nonlocal full_weights
        folders.write_json(os.path.join(tmp, "state", "rng", f"rank{accelerator.process_index}.json"), folders.capture_rng_state())
        if sharded_state(accelerator):
            accelerator.save_state(os.path.join(tmp, "state", "accelerate"))
            full_weights = None if state.use_lora else accelerator.get_state_dict(state.prepared)

    if not attempt(write_every_process_part):
        fail()
    final = None

    def write_main_part() -> None:
        nonlocal final
        if not accelerator.is_main_process:
            return
        _export_model(state, tmp, full_weights)
        folders.save_tensors(os.path.join(tmp, "state", "trainable.safetensors"), state.trainable)
        if state.ema is not None:
            folders.save_tensors(os.path.join(tmp, "state", "ema.safetensors"), state.ema.state_dict())
        objective_state = state.objective.state_dict() if state.objective is not None else {}
        if objective_state:
            folders.save_tensors(os.path.join(tmp, "state", "objective.safetensors"), objective_state)
        if not sharded_state(accelerator):
            tensors, meta = folders.split_optimizer_state(state.optimizer.state_dict())
            folders.save_tensors(os.path.join(tmp, "state", "optimizer.safetensors"), tensors)
            folders.write_json(os.path.join(tmp, "state", "optimizer.json"), meta)
        if accelerator.scaler is not None:
            folders.write_json(os.path.join(tmp, "state", "scaler.json"), accelerator.scaler.state_dict())
        folders.write_json(
            os.path.join(tmp, folders.COMPLETE_MARKER),
            {"epoch": epoch, "global_step": global_step, "sampler": state.sampler.state_dict(),
             "world_size": accelerator.num_processes, "use_lora": bool(state.use_lora)},
        )
        final = folders.publish(tmp, checkpoints_dir, global_step)
        folders.prune_checkpoints(checkpoints_dir, keep)

    if not attempt(write_main_part):
        fail()
    return final


def load_training_checkpoint(state: TrainingState, path: str) -> dict:
    """Restore everything :func:`save_training_checkpoint` wrote; returns the trainer state (epoch, global step)."""
    accelerator = state.accelerator
    saved_state = folders.read_json(os.path.join(path, folders.COMPLETE_MARKER))
    if bool(saved_state.get("use_lora")) != bool(state.use_lora):
        raise folders.CheckpointError(f"{path!r} was written with use_lora={saved_state.get('use_lora')}, this run has use_lora={state.use_lora}")
    saved = folders.load_tensors(os.path.join(path, "state", "trainable.safetensors"))
    if set(saved) != set(state.trainable):
        missing = sorted(set(state.trainable) - set(saved))[:3]
        raise folders.CheckpointError(f"{path!r} does not hold this run's trained weights (missing e.g. {missing})")
    with torch.no_grad():
        for name, param in state.trainable.items():
            if saved[name].shape != param.shape:
                raise folders.CheckpointError(f"{path!r}: {name} has shape {tuple(saved[name].shape)}, expected {tuple(param.shape)}")
            param.copy_(saved[name].to(param.dtype))
    if state.ema is not None:
        state.ema.load_state_dict(folders.load_tensors(os.path.join(path, "state", "ema.safetensors")))
    if state.objective is not None and state.objective.state_dict():
        state.objective.load_state_dict(folders.load_tensors(os.path.join(path, "state", "objective.safetensors")))
    if sharded_state(accelerator):
        accelerator.load_state(os.path.join(path, "state", "accelerate"))
    else:
        meta = folders.read_json(os.path.join(path, "state", "optimizer.json"))
        optimizer_tensors = folders.load_tensors(os.path.join(path, "state", "optimizer.safetensors"))
        state.optimizer.load_state_dict(folders.join_optimizer_state(optimizer_tensors, meta))
    scaler_path = os.path.join(path, "state", "scaler.json")
    if accelerator.scaler is not None and os.path.isfile(scaler_path):
        accelerator.scaler.load_state_dict(folders.read_json(scaler_path))
    state.sampler.load_state_dict(saved_state["sampler"])
    rng_path = os.path.join(path, "state", "rng", f"rank{accelerator.process_index}.json")
    if saved_state.get("world_size") == accelerator.num_processes and os.path.isfile(rng_path):
        folders.restore_rng_state(folders.read_json(rng_path))
    return saved_state
