"""LoRA on any backbone's transformer: add, save in diffusers' format, load from our checkpoints or PEFT folders.

Saved LoRAs are diffusers LoRA folders (``pytorch_lora_weights.safetensors`` with the adapter's rank and
alpha in the file's metadata), written by the family's own pipeline class, so that pipeline's
``load_lora_weights(path)`` loads them (``StableDiffusion3Pipeline``, ``FluxPipeline``, ``QwenImagePipeline``).
The target modules of each family are its backbone's ``lora_target_modules`` (docs/backbones.md).
"""

from __future__ import annotations

import json
import os

import torch

from flow_grpo.errors import InputError

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"


class LoraLoadError(InputError):
    """A LoRA path that is missing, of an unknown layout, or that does not fit the model."""


def add_lora(transformer, rank: int, alpha: int, target_modules, exclude_modules=(), adapter_name: str = "default",
             init: str | bool = "gaussian"):
    """Add a trainable LoRA adapter (B = 0 at init, so the model is unchanged) and return its config.
    ``exclude_modules``: full module names among the targets to leave out."""
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=list(target_modules),
                        exclude_modules=list(exclude_modules) or None)
    transformer.add_adapter(config, adapter_name=adapter_name)
    return config


def lora_state_dict(transformer, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=adapter_name)


def _adapter_metadata(transformer, adapter_name: str) -> dict:
    config = transformer.peft_config[adapter_name]
    return {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": sorted(config.target_modules),
        "lora_dropout": config.lora_dropout,
        "bias": config.bias,
        "use_dora": config.use_dora,
        **({"exclude_modules": sorted(config.exclude_modules)} if getattr(config, "exclude_modules", None) else {}),
    }


def save_lora(transformer, path: str, pipeline_class, adapter_name: str = "default", state_dict: dict | None = None) -> None:
    """Write ``path/pytorch_lora_weights.safetensors`` in the LoRA format of ``pipeline_class`` (the family's
    diffusers pipeline class, which has ``save_lora_weights``).

    ``state_dict`` replaces the adapter's current weights (e.g. the EMA copy) while keeping its config.
    """
    state = state_dict if state_dict is not None else lora_state_dict(transformer, adapter_name)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    pipeline_class.save_lora_weights(
        path, transformer_lora_layers=state, transformer_lora_adapter_metadata=_adapter_metadata(transformer, adapter_name)
    )


def resolve_lora_path(path: str) -> tuple[str, str]:
    """``(folder, kind)`` with ``kind`` ``"diffusers"`` or ``"peft"``; a trainer checkpoint folder resolves to its
    ``lora/`` subfolder. Raises :class:`LoraLoadError` naming what was expected."""
    if not os.path.exists(path):
        raise LoraLoadError(f"LoRA path {path!r} does not exist")
    if os.path.isfile(path):
        if path.endswith(".safetensors"):
            return path, "diffusers"
        raise LoraLoadError(f"LoRA file {path!r} is not a .safetensors file (pickled .bin/.pt files are not loaded)")
    if os.path.isdir(os.path.join(path, "lora")):
        path = os.path.join(path, "lora")
    if os.path.isfile(os.path.join(path, DIFFUSERS_LORA_FILE)):
        return path, "diffusers"
    if os.path.isfile(os.path.join(path, PEFT_CONFIG_FILE)):
        if not os.path.isfile(os.path.join(path, PEFT_WEIGHTS_FILE)):
            raise LoraLoadError(f"PEFT folder {path!r} has {PEFT_CONFIG_FILE} but no {PEFT_WEIGHTS_FILE}")
        return path, "peft"
    raise LoraLoadError(
        f"{path!r} holds no LoRA: expected {DIFFUSERS_LORA_FILE} (diffusers / flow_grpo checkpoints), "
        f"{PEFT_CONFIG_FILE} + {PEFT_WEIGHTS_FILE} (PEFT), or a checkpoint folder with a lora/ subfolder"
    )


def _count_adapter_layers(transformer, adapter_name: str) -> int:
    return sum(1 for module in transformer.modules() if hasattr(module, "lora_A") and adapter_name in module.lora_A)


def load_lora(pipeline, path: str, adapter_name: str = "flow_grpo") -> str:
    """Load a LoRA into ``pipeline.transformer`` as ``adapter_name`` and activate it. Returns the format."""
    folder, kind = resolve_lora_path(path)
    transformer = pipeline.transformer
    try:
        if kind == "diffusers":
            # the transformer's part of pipeline.load_lora_weights (our LoRAs hold no text-encoder weights)
            directory, weight_name = (os.path.dirname(folder) or ".", os.path.basename(folder)) if os.path.isfile(folder) else (folder, DIFFUSERS_LORA_FILE)
            transformer.load_lora_adapter(directory, weight_name=weight_name, prefix="transformer", adapter_name=adapter_name)
        else:
            from peft import LoraConfig, set_peft_model_state_dict
            from safetensors.torch import load_file

            with open(os.path.join(folder, PEFT_CONFIG_FILE)) as handle:
                json.load(handle)  # a clear JSON error before PEFT's
            config = LoraConfig.from_pretrained(folder)
            state = load_file(os.path.join(folder, PEFT_WEIGHTS_FILE))
            state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
            transformer.add_adapter(config, adapter_name=adapter_name)
            result = set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)
            unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
            if unexpected:
                raise LoraLoadError(f"{len(unexpected)} weights of {folder!r} match no layer of the transformer, e.g. {unexpected[0]!r}")
    except LoraLoadError:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, json.JSONDecodeError) as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[:2])
        raise LoraLoadError(f"cannot load the LoRA at {folder!r} into this transformer: {detail}") from error
    if _count_adapter_layers(transformer, adapter_name) == 0:
        raise LoraLoadError(f"the LoRA at {folder!r} matched no layer of this transformer")
    transformer.set_adapters([adapter_name]) if hasattr(transformer, "set_adapters") else transformer.set_adapter(adapter_name)
    return kind
