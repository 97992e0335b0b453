"""Loading an SD3 pipeline (a hub id, a local folder or the built-in tiny one) and making its transformer
trainable: a LoRA, or every weight with a frozen copy as the reference."""

from __future__ import annotations

import copy
import dataclasses
import os

import torch

from flow_grpo.lora import LoraLoadError, add_lora, load_lora, resolve_lora_path

BUILTIN_TINY = "builtin:tiny"


def _move(module, device, dtype) -> None:
    """``module.to(device, dtype)``, leaving the dtype alone when it already matches (diffusers warns on casts)."""
    current = next(module.parameters()).dtype
    module.to(device) if current == dtype else module.to(device, dtype=dtype)


class ModelLoadError(ValueError):
    """A model path or hub id that cannot be loaded; the message names it."""


def inference_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[mixed_precision]


def load_sd3_pipeline(model: str, revision: str = ""):
    """A ``StableDiffusion3Pipeline`` from a local folder, a hub id, or ``builtin:tiny`` (built in code)."""
    if model == BUILTIN_TINY:
        from flow_grpo.tiny_sd3 import build_tiny_sd3_pipeline

        return build_tiny_sd3_pipeline(seed=0)
    if model.startswith("builtin:"):
        raise ModelLoadError(f"unknown built-in model {model!r}; valid: {BUILTIN_TINY}")
    from diffusers import StableDiffusion3Pipeline

    looks_local = os.path.isabs(model) or model.startswith(".") or os.path.exists(model)
    if looks_local:
        if not os.path.isdir(model):
            raise ModelLoadError(f"config.pretrained.model {model!r}: no such folder")
        if not os.path.isfile(os.path.join(model, "model_index.json")):
            raise ModelLoadError(f"config.pretrained.model {model!r} is not a diffusers pipeline folder (no model_index.json)")
    try:
        kwargs = {"revision": revision} if revision else {}
        return StableDiffusion3Pipeline.from_pretrained(model, **kwargs)
    except (OSError, ValueError, EnvironmentError) as error:
        raise ModelLoadError(f"cannot load config.pretrained.model {model!r}: {str(error).splitlines()[0]}") from error


def _lora_file_state(path: str) -> dict[str, torch.Tensor]:
    """A diffusers-format LoRA file as a PEFT state dict of the transformer (no adapter names)."""
    from safetensors.torch import load_file

    folder, kind = resolve_lora_path(path)
    if kind != "diffusers":
        raise LoraLoadError(f"config.lora_path must be a diffusers/flow_grpo LoRA, got a {kind} folder: {folder!r}")
    file = folder if os.path.isfile(folder) else os.path.join(folder, "pytorch_lora_weights.safetensors")
    state = load_file(file)
    return {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.") or "lora" in k}


@dataclasses.dataclass
class TrainableTransformer:
    """The pipeline's transformer made trainable."""

    transformer: torch.nn.Module
    trainable: dict[str, torch.nn.Parameter]  # name -> parameter: the LoRA weights, or every weight
    frozen_reference: torch.nn.Module | None  # a frozen copy for full fine-tuning with a reference; None for LoRA


def prepare_transformer(pipeline, config, device, needs_reference: bool) -> TrainableTransformer:
    """Freeze what is not trained, cast frozen weights to the inference dtype, add the LoRA (or unfreeze all).

    The reference is a frozen copy for full fine-tuning when the objective uses one (``needs_reference``),
    else None (the LoRA model with its adapters disabled is the reference).
    """
    dtype = inference_dtype(config.mixed_precision)
    for module in (pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3):
        if module is not None:
            module.requires_grad_(False)
            # the VAE stays float32 (decoding is cheap next to the transformer and fp16 VAEs can overflow)
            _move(module, device, torch.float32 if module is pipeline.vae else dtype)
    transformer = pipeline.transformer
    transformer.requires_grad_(False)

    if config.merge_lora_path:
        # cold start: fuse a LoRA into the base weights before RL (it then is part of the reference too)
        _move(transformer, device, torch.float32)
        load_lora(pipeline, config.merge_lora_path, adapter_name="cold_start")
        transformer.fuse_lora(adapter_names=["cold_start"], lora_scale=1.0)
        transformer.unload_lora()

    reference = None
    if config.use_lora:
        _move(transformer, device, dtype)
        add_lora(transformer, config.lora.rank, config.lora.alpha, tuple(config.lora.target_modules))
        if config.lora_path:
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
        trainable = {n: p for n, p in transformer.named_parameters() if "lora_" in n}
        for param in trainable.values():
            param.requires_grad_(True)
            param.data = param.data.float()  # trained weights in float32, frozen ones in the inference dtype
    else:
        _move(transformer, device, torch.float32)
        transformer.requires_grad_(True)
        trainable = dict(transformer.named_parameters())
        if needs_reference:
            reference = copy.deepcopy(transformer).requires_grad_(False).to(dtype)
    if config.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    return TrainableTransformer(transformer=transformer, trainable=trainable, frozen_reference=reference)


def load_trained_weights(pipeline, checkpoint: str):
    """Put a train_sd3.py checkpoint's exported (EMA) weights into ``pipeline``: its ``transformer/`` (full
    fine-tuning) or its ``lora/``. Returns the pipeline."""
    from flow_grpo.lora import load_lora

    if os.path.isdir(os.path.join(checkpoint, "transformer")):
        from diffusers import SD3Transformer2DModel

        pipeline.transformer = SD3Transformer2DModel.from_pretrained(os.path.join(checkpoint, "transformer"))
    else:
        load_lora(pipeline, checkpoint)
    return pipeline
