"""Training objectives as plug-ins of the one update loop, selected by ``config.train.objective``.

One file per objective, its formulas in the module docstring:

- ``grpo``: Flow-GRPO's clipped surrogate per denoising step, plus beta times the Gaussian KL;
- ``grpo_guard``: the same on GRPO-Guard's re-centred, std-scaled ratio, divided by ``-dt``;
- ``mixgrpo``: MixGRPO, the clipped surrogate on a window that slides from high to low noise over training;
- ``flowrl``: FlowRL's trajectory balance with a learned log Z head;

and the forward-process objectives, trained on ODE rollouts' clean samples re-noised:

- ``nft``: DiffusionNFT's implicit positive and negative policies around an old-policy snapshot;
- ``awm``: Advantage Weighted Matching, a PPO ratio on a flow-matching surrogate log-likelihood;
- ``dpo``: online Diffusion-DPO between each group's best and worst image;
- ``dgpo``: DGPO's group-level DPO, every sample weighted by its advantage inside one sigmoid per group;
- ``sft``: flow matching on each group's best images;

and GARDO, a modifier of an objective's KL and advantages: ``grpo_gardo``, ``nft_gardo``.
"""

from __future__ import annotations

from flow_grpo.errors import InputError
from flow_grpo.objectives.awm import AWM
from flow_grpo.objectives.base import Minibatch, Objective
from flow_grpo.objectives.dgpo import DGPO
from flow_grpo.objectives.dpo import OnlineDPO
from flow_grpo.objectives.flowrl import FlowRL
from flow_grpo.objectives.gardo import GRPOWithGARDO, NFTWithGARDO
from flow_grpo.objectives.grpo import GRPO, KL_FORMS
from flow_grpo.objectives.grpo_guard import GRPOGuard
from flow_grpo.objectives.mixgrpo import MixGRPO
from flow_grpo.objectives.nft import DiffusionNFT
from flow_grpo.objectives.sft import RewardFilteredSFT

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (GRPO, GRPOGuard, MixGRPO, FlowRL, DiffusionNFT, AWM, OnlineDPO, DGPO, RewardFilteredSFT,
                              GRPOWithGARDO, NFTWithGARDO)
}


def check_train_config(config) -> None:
    """Refuse an unknown ``config.train.objective`` or ``kl_form`` (``config`` is ``config.train``) before any
    model is loaded."""
    if config.objective not in OBJECTIVES:
        raise InputError(f"unknown config.train.objective {config.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if config.kl_form not in KL_FORMS:
        raise InputError(f"unknown config.train.kl_form {config.kl_form!r}; valid: {', '.join(KL_FORMS)}")


def build_objective(config, pooled_dim: int = 0) -> Objective:
    """The objective ``config.objective`` names (``config`` is ``config.train``)."""
    check_train_config(config)
    return OBJECTIVES[config.objective](config, pooled_dim=pooled_dim)


__all__ = ["OBJECTIVES", "Minibatch", "Objective", "build_objective", "check_train_config"]
