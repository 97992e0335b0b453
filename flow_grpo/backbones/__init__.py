"""The backbone layer (docs/backbones.md): one folder per diffusers flow-matching family, each a
:class:`~flow_grpo.backbones.base.Backbone`; above this layer nothing knows the family.

    backbone = load_backbone("black-forest-labs/FLUX.1-dev")        # family from model_index.json
    backbone = load_backbone("/models/qwen-image", family="qwenimage")
    backbone = load_backbone("builtin:tiny_flux")                     # a tiny one built from config

To add a family: a folder here with its ``backbone.py`` (a ``Backbone`` subclass under ``@register_backbone``,
which declares the family's name, pipeline classes, tiny model, FLOPs and presets), its ``tiny.py`` and
``flops.py``. Every folder is imported here; the built-in models, the benchmark and the tests read the registry
(docs/backbones.md, "Adding a family").
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil

from flow_grpo.backbones.base import BACKBONES, Backbone, Guidance, ModelLoadError, register_backbone


def _import_every_family() -> None:
    """Import each folder's ``backbone.py``: its ``@register_backbone`` adds the family to ``BACKBONES``."""
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}.backbone")
    by_name = dict(sorted(BACKBONES.items()))  # whatever order the folders import each other in
    BACKBONES.clear()
    BACKBONES.update(by_name)


_import_every_family()
# the built-in tiny models: "builtin:tiny..." -> its family's Backbone
BUILTIN: dict[str, type[Backbone]] = {cls.tiny_model: cls for cls in BACKBONES.values()}


def backbone_class(family: str) -> type[Backbone]:
    if family not in BACKBONES:
        raise ModelLoadError(f"unknown model family {family!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[family]


def family_of_pipeline(class_name: str, where: str) -> str:
    """The family whose pipeline class is ``class_name`` (from a ``model_index.json``)."""
    for family, cls in BACKBONES.items():
        if class_name in cls.pipeline_classes:
            return family
    known = ", ".join(f"{name} ({', '.join(cls.pipeline_classes)})" for name, cls in BACKBONES.items())
    raise ModelLoadError(f"{where} is a {class_name}, which no backbone trains; known families: {known}")


def _looks_local(model: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative with "." or more than one "/", existing, or
    under an existing folder (``models/qwen`` when ``models/`` is here)."""
    head = model.split("/")[0]
    return (os.path.isabs(model) or model.startswith(".") or os.path.exists(model) or model.count("/") > 1
            or ("/" in model and os.path.isdir(head)))


def detect_family(model: str, revision: str = "") -> str:
    """The family of a local diffusers folder or a hub id, read from its ``model_index.json``."""
    if model in BUILTIN:
        return BUILTIN[model].family
    if _looks_local(model):
        index = os.path.join(model, "model_index.json")
        if not os.path.isdir(model):
            raise ModelLoadError(f"config.pretrained.model {model!r}: no such folder")
        if not os.path.isfile(index):
            raise ModelLoadError(f"config.pretrained.model {model!r} is not a diffusers pipeline folder (no model_index.json)")
        try:
            with open(index) as handle:
                class_name = json.load(handle).get("_class_name", "")
        except (json.JSONDecodeError, AttributeError) as error:
            raise ModelLoadError(f"{index}: not a diffusers model_index.json ({error})") from error
        if not class_name:
            raise ModelLoadError(f"{index} names no pipeline class (_class_name)")
    else:
        from diffusers import DiffusionPipeline

        try:
            class_name = DiffusionPipeline.load_config(model, **({"revision": revision} if revision else {}))["_class_name"]
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"cannot read the model_index.json of {model!r} (set config.pretrained.family to skip this): "
                                 f"{str(error).splitlines()[0]}") from error
    return family_of_pipeline(class_name, repr(model))


def load_pipeline(model: str, family: str = "", revision: str = "", torch_dtype=None):
    """The diffusers pipeline of ``model`` (a built-in tiny name, a local folder, or a hub id) and its family.
    ``torch_dtype``: the dtype the weights load in, or diffusers' ``{"default": ..., "<component>": ...}``
    (default float32; a 20 B model in float32 is 80 GB of RAM per process); built-in tiny models are float32."""
    if model.startswith("builtin:"):
        if model not in BUILTIN:
            raise ModelLoadError(f"unknown built-in model {model!r}; valid: {', '.join(BUILTIN)}")
        built = BUILTIN[model]
        if family and family != built.family:
            raise ModelLoadError(f"{model!r} is a {built.family} model, but config.pretrained.family is {family!r}")
        return built.tiny_pipeline(seed=0), built.family
    if family and _looks_local(model):
        found = detect_family(model)
        if found != family:
            raise ModelLoadError(f"config.pretrained.model {model!r} holds a {found} pipeline, but config.pretrained.family is {family!r}")
    family = family or detect_family(model, revision)
    cls = backbone_class(family)
    if _looks_local(model) and not os.path.isfile(os.path.join(model, "model_index.json")):
        raise ModelLoadError(f"config.pretrained.model {model!r} is not a diffusers pipeline folder (no model_index.json)")
    import diffusers

    pipeline_class = getattr(diffusers, cls.pipeline_classes[0])
    kwargs = {"revision": revision} if revision else {}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    try:
        return pipeline_class.from_pretrained(model, **kwargs), family
    except (OSError, ValueError, EnvironmentError) as error:
        raise ModelLoadError(f"cannot load config.pretrained.model {model!r} as {family}: {str(error).splitlines()[0]}") from error


def load_backbone(model: str, family: str = "", revision: str = "", torch_dtype=None) -> Backbone:
    """The :class:`Backbone` of ``model``; ``family`` (``config.pretrained.family``) skips the detection."""
    if family:
        backbone_class(family)  # an unknown family stops here, with the known ones
    pipeline, family = load_pipeline(model, family, revision, torch_dtype)
    pipeline.set_progress_bar_config(disable=True)
    return backbone_class(family)(pipeline)


def backbone_for_pipeline(pipeline) -> Backbone:
    """The :class:`Backbone` around an already built pipeline (e.g. one a test or script made)."""
    return backbone_class(family_of_pipeline(type(pipeline).__name__, type(pipeline).__name__))(pipeline)


__all__ = ["BACKBONES", "BUILTIN", "Backbone", "Guidance", "ModelLoadError", "backbone_class", "backbone_for_pipeline",
           "detect_family", "load_backbone", "load_pipeline", "register_backbone"]
