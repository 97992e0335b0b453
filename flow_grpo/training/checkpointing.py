"""What a train_sd3.py checkpoint holds, and how it is written and read back.

``checkpoint-<step>/``
  ``lora/``                      the EMA LoRA in diffusers format (``pipe.load_lora_weights`` loads it), or
  ``transformer/``               the EMA transformer in diffusers layout for full fine-tuning
  ``state/trainable.safetensors`` the current (non-EMA) trained weights
  ``state/ema.safetensors``      the EMA shadow
  ``state/optimizer.safetensors`` + ``optimizer.json``   optimizer state without pickle (DDP / one process)
  ``state/accelerate/``          under DeepSpeed or FSDP, whose optimizer states are sharded over processes:
                                 accelerate's own ``save_state`` (every process writes its shard)
  ``state/scaler.json``          the fp16 grad scaler, when there is one
  ``state/rng/rank<r>.json``     each process's Python, NumPy, torch and CUDA generators
  ``trainer_state.json``         epoch, global step, sampler counter, world size (written last)
"""

from __future__ import annotations

import contextlib
import os

import torch

from flow_grpo import checkpoint as ckpt
from flow_grpo.lora import save_lora


def sharded_state(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def save_training_checkpoint(
    *, accelerator, checkpoints_dir: str, global_step: int, epoch: int, unwrapped, prepared, trainable_named: dict,
    optimizer, ema, sampler, tracker, config,
) -> str | None:
    """Write a complete checkpoint atomically (all processes must call this); returns its path on the main process."""
    tmp = os.path.join(checkpoints_dir, f".tmp-checkpoint-{global_step}")
    if accelerator.is_main_process:
        tmp = ckpt.new_tmp_dir(checkpoints_dir, global_step)
        os.makedirs(os.path.join(tmp, "state", "rng"))
    accelerator.wait_for_everyone()
    ckpt.write_json(os.path.join(tmp, "state", "rng", f"rank{accelerator.process_index}.json"), ckpt.capture_rng_state())
    if sharded_state(accelerator):
        accelerator.save_state(os.path.join(tmp, "state", "accelerate"))
        full_weights = None if config.use_lora else accelerator.get_state_dict(prepared)
    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        exported = ema.swapped_in() if ema is not None else contextlib.nullcontext()
        with exported:
            if config.use_lora:
                save_lora(unwrapped, os.path.join(tmp, "lora"))
            elif sharded_state(accelerator):
                from safetensors.torch import save_file

                os.makedirs(os.path.join(tmp, "transformer"))
                unwrapped.save_config(os.path.join(tmp, "transformer"))
                save_file({k: v.contiguous() for k, v in full_weights.items()}, os.path.join(tmp, "transformer", "diffusion_pytorch_model.safetensors"))
            else:
                unwrapped.save_pretrained(os.path.join(tmp, "transformer"))
        ckpt.save_tensors(os.path.join(tmp, "state", "trainable.safetensors"), trainable_named)
        if ema is not None:
            ckpt.save_tensors(os.path.join(tmp, "state", "ema.safetensors"), ema.state_dict())
        if not sharded_state(accelerator):
            tensors, meta = ckpt.split_optimizer_state(optimizer.state_dict())
            ckpt.save_tensors(os.path.join(tmp, "state", "optimizer.safetensors"), tensors)
            ckpt.write_json(os.path.join(tmp, "state", "optimizer.json"), meta)
        if accelerator.scaler is not None:
            ckpt.write_json(os.path.join(tmp, "state", "scaler.json"), accelerator.scaler.state_dict())
        ckpt.write_json(
            os.path.join(tmp, ckpt.COMPLETE_MARKER),
            {
                "epoch": epoch,
                "global_step": global_step,
                "sampler": sampler.state_dict(),
                "stat_tracker": tracker.state_dict(),
                "world_size": accelerator.num_processes,
                "use_lora": bool(config.use_lora),
            },
        )
        final = ckpt.publish(tmp, checkpoints_dir, global_step)
        ckpt.prune_checkpoints(checkpoints_dir, config.num_checkpoint_limit)
    accelerator.wait_for_everyone()
    return final


def load_training_checkpoint(*, path: str, accelerator, trainable_named: dict, optimizer, ema, sampler, tracker, config) -> dict:
    """Restore everything ``save_training_checkpoint`` wrote; returns the trainer state (epoch, global step)."""
    state = ckpt.read_json(os.path.join(path, ckpt.COMPLETE_MARKER))
    if bool(state.get("use_lora")) != bool(config.use_lora):
        raise ckpt.CheckpointError(f"{path!r} was written with use_lora={state.get('use_lora')}, this run has use_lora={config.use_lora}")
    saved = ckpt.load_tensors(os.path.join(path, "state", "trainable.safetensors"))
    if set(saved) != set(trainable_named):
        missing = sorted(set(trainable_named) - set(saved))[:3]
        raise ckpt.CheckpointError(f"{path!r} does not hold this run's trained weights (missing e.g. {missing})")
    with torch.no_grad():
        for name, param in trainable_named.items():
            if saved[name].shape != param.shape:
                raise ckpt.CheckpointError(f"{path!r}: {name} has shape {tuple(saved[name].shape)}, expected {tuple(param.shape)}")
            param.copy_(saved[name].to(param.dtype))
    if ema is not None:
        ema.load_state_dict(ckpt.load_tensors(os.path.join(path, "state", "ema.safetensors")))
    if sharded_state(accelerator):
        accelerator.load_state(os.path.join(path, "state", "accelerate"))
    else:
        meta = ckpt.read_json(os.path.join(path, "state", "optimizer.json"))
        optimizer.load_state_dict(ckpt.join_optimizer_state(ckpt.load_tensors(os.path.join(path, "state", "optimizer.safetensors")), meta))
    scaler_path = os.path.join(path, "state", "scaler.json")
    if accelerator.scaler is not None and os.path.isfile(scaler_path):
        accelerator.scaler.load_state_dict(ckpt.read_json(scaler_path))
    sampler.load_state_dict(state["sampler"])
    tracker.load_state_dict(state["stat_tracker"])
    rng_path = os.path.join(path, "state", "rng", f"rank{accelerator.process_index}.json")
    if state.get("world_size") == accelerator.num_processes and os.path.isfile(rng_path):
        ckpt.restore_rng_state(ckpt.read_json(rng_path))
    return state
