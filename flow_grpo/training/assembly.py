"""The one place a training run is put together (docs/architecture.md, "Assembly"): the backbone's
transformer made trainable, the objective and its heads, the optimizer, accelerate's preparation, the EMA, the
policy and the learner. ``scripts/train.py``, ``scripts/benchmark.py``, ``scripts/gradient_snr.py`` and
``scripts/check_logprob_consistency.py`` all build their runs here, so none of them can drift from the trainer.

    backbone = load_backbone(config.pretrained.model, config.pretrained.family)
    model = prepare_model(backbone, config, accelerator.device)   # once per model: adds the LoRA
    run = assemble_run(backbone, model, config, accelerator)      # per run: optimizer, EMA, policy, learner
"""

from __future__ import annotations

import dataclasses

import torch

from flow_grpo.backbones.base import Backbone, Guidance
from flow_grpo.backbones.policy import BackbonePolicy
from flow_grpo.backbones.trainable import TrainableTransformer, inference_dtype, prepare_transformer
from flow_grpo.config_cli import ConfigError
from flow_grpo.ema import EMA
from flow_grpo.errors import InputError
from flow_grpo.objectives import OBJECTIVES, Objective, build_objective
from flow_grpo.rollout_types import Conditioning
from flow_grpo.sde import SDEParams
from flow_grpo.training.phases import Timer, no_timer
from flow_grpo.training.sizes import frame_size
from flow_grpo.training.update import Learner


@dataclasses.dataclass
class TrainingRun:
    """Everything a run trains with, built by :func:`assemble_run`."""

    backbone: Backbone
    model: TrainableTransformer
    objective: Objective
    optimizer: torch.optim.Optimizer  # as prepared by accelerate
    prepared: torch.nn.Module  # the transformer as prepared by accelerate (DDP-wrapped with several processes)
    unwrapped: torch.nn.Module  # the same, unwrapped: what checkpoints export
    sampling_transformer: torch.nn.Module  # what samples and evaluates (the prepared module under FSDP)
    trainable: dict[str, torch.nn.Parameter]  # name -> parameter: the model's, then the objective heads' (<head>.<name>)
    ema: EMA | None
    negative: Conditioning | None  # the negative prompt's conditioning (None: the family runs no negative pass)
    policy: BackbonePolicy
    learner: Learner


def prepare_model(backbone: Backbone, config, device) -> TrainableTransformer:
    """The backbone's transformer made trainable for ``config`` (LoRA or every weight; the frozen reference
    copy when the objective needs one). Draws the LoRA's initial weights from the global generator."""
    needs_reference = OBJECTIVES[config.train.objective].needs_reference(config.train)
    return prepare_transformer(backbone, config, device, needs_reference)


def check_samples(backbone: Backbone, config, dataset) -> None:
    """Stops before any work on samples the family cannot make (a frame size or frame count off its grid, a
    video for an image family) or a dataset of the wrong kind (input images for a text-only family, none for
    an editing one); the ``InputError`` names the family."""
    height, width = frame_size(config)
    backbone.latent_shape(height, width, config.num_frames)
    if dataset.has_input_images and not backbone.takes_input_image:
        raise InputError(f"{dataset.path} is an editing dataset (its prompts have input images), but {backbone.family} "
                         "generates from text only: use an editing family (flux_kontext)")
    if backbone.takes_input_image and not dataset.has_input_images:
        raise InputError(f"{backbone.family} edits images, but {dataset.path} has no 'image' field per prompt")


def make_optimizer(parameters, train_config) -> torch.optim.AdamW:
    """AdamW over ``parameters`` with ``config.train``'s learning rate, betas, weight decay and epsilon."""
    return torch.optim.AdamW(
        parameters, lr=train_config.learning_rate, betas=(train_config.adam_beta1, train_config.adam_beta2),
        weight_decay=train_config.adam_weight_decay, eps=train_config.adam_epsilon,
    )


def head_parameters(objective: Objective) -> dict[str, torch.nn.Parameter]:
    """The objective's own trained heads' parameters, named ``<head>.<parameter>`` (FlowRL's ``log_z.*``)."""
    return {f"{name}.{n}": p for name, module in objective.trained_modules.items() for n, p in module.named_parameters()}


def make_learner(accelerator, policy, objective: Objective, optimizer, model_trainable: dict, train_config,
                 timer: Timer = no_timer) -> Learner:
    """The update's :class:`Learner`: the EMA of the model's and the heads' trained weights (when
    ``train.ema``), the objective's snapshots attached to the model's, and the optimizer. The toy worlds'
    trainer builds its learner here too."""
    trainable = {**model_trainable, **head_parameters(objective)}
    ema = EMA(trainable.values(), train_config.ema_decay, train_config.ema_update_interval, names=list(trainable),
              warmup=train_config.ema_warmup) if train_config.ema else None
    objective.attach(list(model_trainable.values()), list(model_trainable))  # snapshots of the policy's weights, if any
    return Learner(accelerator=accelerator, policy=policy, objective=objective, optimizer=optimizer,
                   parameters=list(trainable.values()), ema=ema, timer=timer)


def settle_distributed_config(accelerator, config) -> None:
    """The settings the distributed mode decides, applied before anything records the config (the run folder's
    ``config.json`` then says what runs): a LoRA run under FSDP is refused, and FSDP turns the EMA off (the
    sharded weights have no full copy to average). Idempotent; :func:`assemble_run` calls it too."""
    import sys

    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        if config.use_lora:
            raise ConfigError("FSDP shards weights, which a LoRA run does not need: launch with multi_gpu.yaml or deepspeed_zero2.yaml")
        if config.train.ema:
            print("warning: EMA is off under FSDP (the sharded weights have no full copy to average)", file=sys.stderr)
            config.train.ema = False


def _distributed_settings(accelerator, config) -> None:
    """What FSDP and DeepSpeed need before ``accelerator.prepare``."""
    from accelerate.utils import DistributedType

    settle_distributed_config(accelerator, config)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed sizes its engine by a micro-batch and cannot read one from a dataloader here: ours is the
        # training minibatch (measured: accelerate.prepare raises without it)
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.train.batch_size


def assemble_run(backbone: Backbone, model: TrainableTransformer, config, accelerator, timer: Timer = no_timer) -> TrainingRun:
    """Objective, optimizer, accelerate, EMA, policy and learner around ``model``, as the trainer uses them.

    The objective's heads start from ``config.seed``. ``config.compile`` wraps the prepared transformer in
    ``torch.compile`` for sampling and training alike.
    """
    from accelerate.utils import DistributedType

    torch.manual_seed(config.seed)  # objective heads (FlowRL's log Z) start from the seed
    objective = build_objective(config.train, pooled_dim=backbone.pooled_dim)
    for module in objective.trained_modules.values():
        module.to(accelerator.device)
    trainable = {**model.trainable, **head_parameters(objective)}
    optimizer = make_optimizer(trainable.values(), config.train)
    _distributed_settings(accelerator, config)
    prepared, optimizer = accelerator.prepare(model.transformer, optimizer)
    unwrapped = accelerator.unwrap_model(prepared)
    # the module that samples and evaluates: FSDP's inner blocks run only under its root (measured: "Non-root
    # FSDP instance's _is_root should not have been set yet"), so under FSDP it is the prepared module
    sampling_transformer = prepared if accelerator.distributed_type == DistributedType.FSDP else unwrapped
    if config.compile:
        prepared = torch.compile(prepared)
        sampling_transformer = prepared if sampling_transformer is not unwrapped else torch.compile(unwrapped)
    objective.wrap_trained_modules(accelerator.prepare)
    negative = backbone.negative_conditioning(config.max_sequence_length, accelerator.device)
    scale = backbone.training_guidance_scale(config.sample.guidance_scale, config.train.cfg)
    policy = BackbonePolicy(
        backbone=backbone, transformer=prepared, unwrapped=sampling_transformer, frozen_reference=model.frozen_reference,
        guidance=Guidance(scale, negative, config.batched_cfg), sde=SDEParams(config.sample.noise_level, config.sample.sde_type),
        model_dtype=inference_dtype(config.mixed_precision),
    )
    learner = make_learner(accelerator, policy, objective, optimizer, model.trainable, config.train, timer)
    return TrainingRun(backbone=backbone, model=model, objective=objective, optimizer=optimizer, prepared=prepared,
                       unwrapped=unwrapped, sampling_transformer=sampling_transformer, trainable=trainable, ema=learner.ema,
                       negative=negative, policy=policy, learner=learner)
