"""The backbone interface (docs/backbones.md): what sampling and training need from one diffusers
flow-matching family, and nothing else.

A :class:`Backbone` wraps one diffusers pipeline (SD3, FLUX.1, Qwen-Image, ...) and gives

- ``encode(prompts, max_sequence_length, device)``: the family's typed :class:`~flow_grpo.rollout_types.Conditioning`;
  ``condition(prompts, max_sequence_length, device, input_images)`` adds the input images of an editing
  family (``takes_input_image``: FLUX.1 Kontext), which the conditioning then carries as latents;
- ``negative_conditioning(...)``: the negative prompt's, for families that run a negative pass (else None);
- ``latent_shape(height, width, num_frames)``: one sample's latent as the VAE makes it (``[C, h, w]`` for
  images, ``[C, f, h, w]`` for a video family, ``modality == "video"``: Wan). Sampling, the SDE step and every
  objective work on these; a family that packs 2x2 patches into tokens (FLUX, Qwen-Image) packs and unpacks
  inside ``velocity``. Packing is a permutation, so the step's log-prob (a mean over elements) and every
  element-wise loss are the same on either layout;
- ``sigmas(num_steps, height, width, device)``: the family's schedule, ``[T + 1]`` ending in 0;
- ``velocity(transformer, latents, sigmas, conditioning, guidance, model_dtype)``: ``v`` in float32 with the
  family's guidance, the one function sampling and training share;
- ``decode(latents, batch_size)``: images ``[N, 3, H, W]`` (videos ``[N, F, 3, H, W]``) in ``[0, 1]`` with the
  family's VAE scaling;
- ``lora_target_modules``, ``frozen_modules``, ``pooled_dim``: for making the transformer trainable.

Latents are float32 throughout; the transformer sees them in ``model_dtype`` and its output comes back as
float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, ClassVar, Sequence

import torch

from flow_grpo.errors import InputError
from flow_grpo.rollout_types import Conditioning


class ModelLoadError(InputError):
    """A model path, hub id or family that cannot be loaded; the message names it."""


@dataclasses.dataclass
class Guidance:
    """The guidance a velocity is computed with; each family reads ``scale`` its own way
    (``Backbone.guidance_kind``): classifier-free guidance with the negative conditioning when ``scale > 1``
    (SD3, Qwen-Image's true CFG), or a distilled guidance value fed to the model (FLUX.1-dev)."""

    scale: float = 4.5
    negative: Conditioning | None = None  # the negative prompt's conditioning: one row, or one per image
    batched: bool = True  # one transformer call on the doubled batch; False: two calls (less memory, slower)


@dataclasses.dataclass
class MaskedPromptConditioning(Conditioning):
    """A prompt's token states padded to a common length with their mask, for a family without a pooled
    embedding (Qwen-Image, Z-Image): one row per image."""

    prompt_embeds: torch.Tensor  # [N, L, D] the text encoder's states, zero after each prompt's end
    prompt_embeds_mask: torch.Tensor  # [N, L] int64: 1 on the prompt's tokens, 0 on padding

    @property
    def pooled(self) -> torch.Tensor:
        """The mean of the prompt's token states: ``[N, D]``."""
        mask = self.prompt_embeds_mask.unsqueeze(-1).to(self.prompt_embeds.dtype)
        return (self.prompt_embeds * mask).sum(1) / mask.sum(1).clamp(min=1)

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]


class Backbone:
    """One diffusers flow-matching family around its pipeline. Subclasses set the class attributes and
    implement the methods that raise ``NotImplementedError``."""

    family: ClassVar[str]  # the name in configs: config.pretrained.family
    pipeline_classes: ClassVar[tuple[str, ...]]  # diffusers pipeline class names this family loads (model_index.json)
    guidance_kind: ClassVar[str]  # "cfg" (a negative pass, scale > 1) or "embedded" (a guidance input, no negative pass)
    default_guidance_scale: ClassVar[float]  # what the family's pipeline samples with by default (inference_demo.py)
    negative_prompt: ClassVar[str | None] = ""  # the unconditional prompt of the negative pass (None: no negative pass)
    lora_target_modules: ClassVar[tuple[str, ...]]  # the LoRA targets Flow-GRPO trains on this family
    modality: ClassVar[str] = "image"  # "image": decode gives [N, 3, H, W]; "video": [N, F, 3, H, W]
    takes_input_image: ClassVar[bool] = False  # an editing family: every prompt comes with an input image
    tiny_model: ClassVar[str]  # its built-in tiny model, "builtin:tiny..." (config.pretrained.model)
    # the analytic forward FLOPs of its transformer: (transformer config, batch, image tokens, text tokens) ->
    # {"linear", "attention", "total"} (<family>/flops.py)
    transformer_flops: ClassVar[Callable[..., dict[str, float]]]
    presets: ClassVar[dict[str, str]] = {}  # the benchmark's full-size presets: name -> "module:function" (<family>/presets.py)

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        """The built-in tiny pipeline, initialised from ``seed`` (<family>/tiny.py)."""
        raise NotImplementedError

    @classmethod
    def image_tokens(cls, transformer_config, resolution: int, vae_scale_factor: int) -> int:
        """The transformer's image tokens at ``resolution`` x ``resolution``: latents patchified by ``patch_size``
        (a family that packs 2x2 latent patches into tokens with ``patch_size`` 1 says so)."""
        return (resolution // vae_scale_factor // transformer_config.patch_size) ** 2

    @classmethod
    def build_preset(cls, name: str, reduced: bool, device, dtype):
        """(pipeline, resolution) of the full-size preset ``name`` (or its CPU-sized analogue, ``reduced``)."""
        import importlib

        module, function = cls.presets[name].split(":")
        return getattr(importlib.import_module(module), function)(reduced, device, dtype)

    def __init__(self, pipeline):
        self.pipeline = pipeline

    # ---- components ----
    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipeline.transformer

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipeline.vae

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """The frozen text encoders (moved to the inference dtype when training)."""
        raise NotImplementedError

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipeline.vae_scale_factor)

    @property
    def pooled_dim(self) -> int:
        """The width of ``Conditioning.pooled`` (FlowRL's log Z head reads it)."""
        raise NotImplementedError

    # ---- what sampling and training call ----
    def encode(self, prompts: Sequence[str], max_sequence_length: int, device) -> Conditioning:
        raise NotImplementedError

    def condition(self, prompts: Sequence[str], max_sequence_length: int, device, input_images=None) -> Conditioning:
        """``encode(prompts)``, and for an editing family the input images ``[N, 3, H, W]`` in [0, 1] (one per
        prompt) joined to it (:meth:`attach_input_images`). Images for a family that takes none, or none for one
        that needs them, stop here with the family named."""
        if self.takes_input_image and input_images is None:
            raise InputError(f"{self.family} edits images: every prompt needs an input image (the dataset's 'image' field)")
        if not self.takes_input_image and input_images is not None:
            raise InputError(f"{self.family} generates from text only, but the prompts come with input images "
                             "(an editing dataset needs an editing family, e.g. flux_kontext)")
        conditioning = self.encode(prompts, max_sequence_length, device)
        if input_images is None:
            return conditioning
        if len(input_images) != len(prompts):
            raise InputError(f"{len(input_images)} input images for {len(prompts)} prompts")
        return self.attach_input_images(conditioning, input_images)

    def attach_input_images(self, conditioning: Conditioning, input_images: torch.Tensor) -> Conditioning:
        """An editing family's conditioning with the input images' latents (``takes_input_image``)."""
        raise NotImplementedError

    def negative_conditioning(self, max_sequence_length: int, device) -> Conditioning | None:
        """The negative prompt's conditioning (one row), or None for a family without a negative pass."""
        if self.negative_prompt is None:
            return None
        return self.encode([self.negative_prompt], max_sequence_length, device)

    def latent_shape(self, height: int, width: int, num_frames: int = 1) -> tuple[int, ...]:
        """One sample's latent, as the VAE encodes an image of ``height x width``: ``(C, h, w)``."""
        if num_frames != 1:
            raise InputError(f"{self.family} makes images, not videos: num_frames must be 1, got {num_frames}")
        scale = self.vae_scale_factor
        if height % (2 * scale) or width % (2 * scale):
            raise InputError(f"{self.family}: height and width must be multiples of {2 * scale}, got {height} x {width}")
        return (self.latent_channels, height // scale, width // scale)

    @property
    def latent_channels(self) -> int:
        raise NotImplementedError

    def sigmas(self, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        """The ``num_steps + 1`` flow times (ending in 0) the family's pipeline samples with."""
        raise NotImplementedError

    def velocity(self, transformer, latents: torch.Tensor, sigmas, conditioning: Conditioning, guidance: Guidance,
                 model_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``v`` (float32, the latents' shape) at flow time ``sigmas`` (a scalar or ``[B]``) with ``guidance``."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Latents ``[N, *latent_shape]`` to float32 images ``[N, 3, H, W]`` (a video family: ``[N, F, 3, H, W]``)
        in ``[0, 1]``, in chunks."""
        raise NotImplementedError

    def diffusers_call(self, conditioning: Conditioning, negative: Conditioning | None, latents: torch.Tensor, spec) -> torch.Tensor:
        """The family's own diffusers pipeline ``__call__`` on the same conditioning, initial latents
        (``[B, *latent_shape]``) and ``spec`` (steps, guidance, size): its images ``[B, 3, H, W]`` in [0, 1].
        The reference that sampling with noise level 0 must reproduce (tests/test_backbones.py)."""
        raise NotImplementedError

    def dead_lora_modules(self, targets: Sequence[str]) -> list[str]:
        """Full names of modules among ``targets`` (PEFT's suffix rule) that are not in the velocity's autograd
        graph (a LoRA there would never get a gradient, and DDP stops on parameters unused in the loss): left out
        of the LoRA, and frozen in full fine-tuning. Default: none."""
        return []

    def training_guidance_scale(self, sampling_scale: float, train_cfg: bool) -> float:
        """The scale the trainer re-scores with: the sampling one, or 1 (no negative pass) when ``train.cfg`` is
        off. An embedded guidance value is part of the model's input, so it never changes."""
        if self.guidance_kind == "embedded":
            return sampling_scale
        return sampling_scale if train_cfg else 1.0

    def summary(self) -> str:
        """One line: family, pipeline class, transformer size, guidance kind (printed before a run starts)."""
        count = sum(p.numel() for p in self.transformer.parameters())
        return f"{self.family} ({type(self.pipeline).__name__}, transformer {count / 1e6:.2f}M parameters, guidance {self.guidance_kind})"


def cast_latents(latents: torch.Tensor, model_dtype: torch.dtype | None, transformer) -> torch.Tensor:
    return latents.to(model_dtype or transformer.dtype)


def timestep_batch(sigmas, latents: torch.Tensor) -> torch.Tensor:
    """``sigmas`` (a scalar or ``[B]``) as a float32 ``[B]`` tensor on the latents' device."""
    return torch.as_tensor(sigmas, device=latents.device, dtype=torch.float32).reshape(-1).expand(latents.shape[0])


def classifier_free(call, guidance: Guidance):
    """``(v_uncond, v_text)`` from ``call(which)`` with ``which`` in ("negative", "positive", "both"): one call
    on the doubled batch (``guidance.batched``) or two; ``call("both")`` returns the negative half first."""
    if guidance.negative is None:
        raise ValueError("a guidance scale > 1 needs the negative prompt's conditioning")
    if guidance.batched:
        return call("both").chunk(2)
    return call("negative"), call("positive")


def flow_match_sigmas(scheduler, num_steps: int, image_seq_len: int, device=None, sigmas=None) -> torch.Tensor:
    """The sigmas ``[T + 1]`` (ending in 0) of ``FlowMatchEulerDiscreteScheduler.set_timesteps`` on a fresh
    copy of ``scheduler`` (the pipeline's own state is left alone), with the resolution-dependent shift ``mu``
    when the scheduler uses dynamic shifting (FLUX, Qwen-Image; diffusers' ``calculate_shift``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift  # SD3's and Qwen-Image's are the same formula

    fresh = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
    kwargs = {}
    if fresh.config.get("use_dynamic_shifting", False):
        kwargs["mu"] = calculate_shift(
            image_seq_len, fresh.config.get("base_image_seq_len", 256), fresh.config.get("max_image_seq_len", 4096),
            fresh.config.get("base_shift", 0.5), fresh.config.get("max_shift", 1.15),
        )
    if sigmas is not None:
        kwargs["sigmas"] = sigmas
    fresh.set_timesteps(num_steps if sigmas is None else None, device=device, **kwargs)
    return fresh.sigmas.float()


def decode_in_chunks(vae, latents: torch.Tensor, batch_size: int | None, unscale, frames: str = "image") -> torch.Tensor:
    """``vae.decode(unscale(chunk))`` per chunk of ``batch_size``, as float32 images in [0, 1]. ``frames``:
    ``"image"`` (the VAE makes ``[b, 3, H, W]``), ``"one"`` (a video VAE's ``[b, 3, 1, H, W]``, whose single
    frame is the image) or ``"video"`` (a video VAE's ``[b, 3, F, H, W]``, returned as ``[b, F, 3, H, W]``)."""
    if frames not in ("image", "one", "video"):
        raise ValueError(f"frames must be 'image', 'one' or 'video', got {frames!r}")
    images = []
    vae_dtype = next(vae.parameters()).dtype
    for chunk in latents.split(batch_size or latents.shape[0]):
        decoded = vae.decode(unscale(chunk).to(vae_dtype), return_dict=False)[0]
        if frames == "one":
            decoded = decoded[:, :, 0]
        elif frames == "video":
            decoded = decoded.transpose(1, 2)
        images.append((decoded.float() / 2 + 0.5).clamp(0, 1))
    return torch.cat(images)


def decode_normalised(vae, latents: torch.Tensor, batch_size: int | None, frames: str) -> torch.Tensor:
    """A causal video VAE's decode (``AutoencoderKLWan``, ``AutoencoderKLQwenImage``) of latents stored per
    channel as ``(z - latents_mean) / latents_std``: videos ``[b, C, f, h, w]`` (``frames="video"``), or images
    ``[b, C, h, w]`` sent through as one frame each (``frames="one"``)."""
    shape = (1, latents.shape[1], 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=latents.device).view(shape)
    std = torch.tensor(vae.config.latents_std, device=latents.device).view(shape)

    def unscale(chunk):
        return (chunk.unsqueeze(2) if frames == "one" else chunk) * std + mean

    return decode_in_chunks(vae, latents, batch_size, unscale, frames=frames)


def decode_scaled(vae, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """An ``AutoencoderKL``'s decode of latents stored as ``(z - shift_factor) * scaling_factor`` (SD3, FLUX)."""
    shift = vae.config.shift_factor or 0.0
    return decode_in_chunks(vae, latents, batch_size, lambda chunk: chunk / vae.config.scaling_factor + shift)


# ---- the registry: one registration per family ----

BACKBONES: dict[str, type[Backbone]] = {}  # config.pretrained.family -> its Backbone, filled as each folder is imported


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """A family's one registration, on its ``Backbone`` subclass in ``flow_grpo/backbones/<folder>/backbone.py``
    (flow_grpo.backbones imports every folder): the class declares its name, pipeline classes, tiny model,
    FLOPs and presets; loading, the built-in models, the benchmark and the tests read them from here."""
    for attribute in ("family", "pipeline_classes", "guidance_kind", "default_guidance_scale", "lora_target_modules",
                      "tiny_model", "transformer_flops"):
        if not hasattr(cls, attribute):
            raise TypeError(f"{cls.__name__} does not declare {attribute}, which every family declares (docs/backbones.md)")
    if cls.family in BACKBONES:
        raise TypeError(f"two backbones register the family {cls.family!r}: {BACKBONES[cls.family].__name__} and {cls.__name__}")
    BACKBONES[cls.family] = cls
    return cls


@contextlib.contextmanager
def default_dtype(dtype):
    """Build modules in ``dtype`` (a 20 B-parameter model initialised in float32 first would need 80 GB)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
