"""Making a backbone's transformer trainable: a LoRA on the family's target modules, or every weight with a
frozen copy as the reference; and putting a trainer checkpoint's exported weights back into a pipeline."""

from __future__ import annotations

import copy
import dataclasses
import os

import torch

from flow_grpo.backbones.base import Backbone
from flow_grpo.lora import LoraLoadError, add_lora, load_lora, resolve_lora_path


def inference_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[mixed_precision]


def _move(module, device, dtype) -> None:
    """``module.to(device, dtype)``, leaving the dtype alone when it already matches (diffusers warns on casts)."""
    current = next(module.parameters()).dtype
    module.to(device) if current == dtype else module.to(device, dtype=dtype)


def _lora_file_state(path: str) -> dict[str, torch.Tensor]:
    """A diffusers-format LoRA file as a PEFT state dict of the transformer (no adapter names)."""
    from safetensors.torch import load_file

    folder, kind = resolve_lora_path(path)
    if kind != "diffusers":
        raise LoraLoadError(f"config.lora_path must be a diffusers/flow_grpo LoRA, got a {kind} folder: {folder!r}")
    file = folder if os.path.isfile(folder) else os.path.join(folder, "pytorch_lora_weights.safetensors")
    state = load_file(file)
    return {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.") or "lora" in k}


def lora_targets(backbone: Backbone, config) -> tuple[str, ...]:
    """``config.lora.target_modules``, or the family's own when it is empty."""
    return tuple(config.lora.target_modules) or tuple(backbone.lora_target_modules)


@dataclasses.dataclass
class TrainableTransformer:
    """The backbone's transformer made trainable."""

    transformer: torch.nn.Module
    trainable: dict[str, torch.nn.Parameter]  # name -> parameter: the LoRA weights, or every weight
    frozen_reference: torch.nn.Module | None  # a frozen copy for full fine-tuning with a reference; None for LoRA


def _load_initial_lora(transformer, config) -> None:
    from peft import set_peft_model_state_dict

    state = _lora_file_state(config.lora_path)
    try:
        result = set_peft_model_state_dict(transformer, state, adapter_name="default")
    except RuntimeError as error:
        raise LoraLoadError(
            f"config.lora_path {config.lora_path!r} does not fit a rank-{config.lora.rank} LoRA on these "
            f"modules: {str(error).splitlines()[0]}"
        ) from error
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise LoraLoadError(f"config.lora_path {config.lora_path!r} has weights for unknown layers, e.g. {unexpected[0]!r}")


def prepare_transformer(backbone: Backbone, config, device, needs_reference: bool) -> TrainableTransformer:
    """Freeze what is not trained, cast frozen weights to the inference dtype, add the LoRA (or unfreeze all).

    The reference is a frozen copy for full fine-tuning when the objective uses one (``needs_reference``),
    else None (the LoRA model with its adapters disabled is the reference).
    """
    dtype = inference_dtype(config.mixed_precision)
    for module in backbone.text_encoders:
        module.requires_grad_(False)
        _move(module, device, dtype)
    # the VAE stays float32 (decoding is cheap next to the transformer and fp16 VAEs can overflow)
    backbone.vae.requires_grad_(False)
    _move(backbone.vae, device, torch.float32)
    transformer = backbone.transformer
    transformer.requires_grad_(False)

    if config.merge_lora_path:
        # cold start: fuse a LoRA into the base weights before RL (it then is part of the reference too)
        _move(transformer, device, torch.float32)
        load_lora(backbone.pipeline, config.merge_lora_path, adapter_name="cold_start")
        transformer.fuse_lora(adapter_names=["cold_start"], lora_scale=1.0)
        transformer.unload_lora()

    reference = None
    if config.use_lora:
        _move(transformer, device, dtype)
        targets = lora_targets(backbone, config)
        try:
            add_lora(transformer, config.lora.rank, config.lora.alpha, targets, backbone.dead_lora_modules(targets))
        except ValueError as error:
            raise LoraLoadError(f"config.lora.target_modules {list(targets)} on {backbone.family}: {str(error).splitlines()[0]}") from error
        if config.lora_path:
            _load_initial_lora(transformer, config)
        trainable = {n: p for n, p in transformer.named_parameters() if "lora_" in n}
        for param in trainable.values():
            param.requires_grad_(True)
            param.data = param.data.float()  # trained weights in float32, frozen ones in the inference dtype
    else:
        _move(transformer, device, torch.float32)
        transformer.requires_grad_(True)
        modules = dict(transformer.named_modules())
        for name in backbone.dead_lora_modules(backbone.lora_target_modules):
            modules[name].requires_grad_(False)  # outside the velocity's graph: DDP would stop on them
        trainable = {n: p for n, p in transformer.named_parameters() if p.requires_grad}
        if needs_reference:
            reference = copy.deepcopy(transformer).requires_grad_(False).to(dtype)
    if config.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    return TrainableTransformer(transformer=transformer, trainable=trainable, frozen_reference=reference)


def trained_weights_kind(path: str) -> str:
    """What ``path`` holds: ``"transformer"`` (a full fine-tuning checkpoint's ``transformer/``), or a LoRA's
    format (``"diffusers"``, ``"peft"``; ``flow_grpo.lora.resolve_lora_path``). Raises ``LoraLoadError``
    naming both kinds when it holds neither."""
    if os.path.isfile(os.path.join(path, "transformer", "config.json")):
        return "transformer"
    try:
        return resolve_lora_path(path)[1]
    except LoraLoadError as error:
        if os.path.isdir(path):
            raise LoraLoadError(f"{error}; or a full fine-tuning checkpoint with a transformer/ folder") from None
        raise


def load_trained_weights(pipeline, checkpoint: str):
    """Put a trainer checkpoint's exported (EMA) weights into ``pipeline``: its ``transformer/`` (full
    fine-tuning) or its ``lora/`` (or any LoRA folder or file). Returns the pipeline."""
    if trained_weights_kind(checkpoint) == "transformer":
        old = pipeline.transformer
        loaded = type(old).from_pretrained(os.path.join(checkpoint, "transformer"), torch_dtype=old.dtype)
        pipeline.transformer = loaded.to(old.device)
    else:
        load_lora(pipeline, checkpoint)
    return pipeline
