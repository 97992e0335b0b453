"""GARDO, Gated and Adaptive Regularization with Diversity-aware Optimization (arXiv 2512.24138; code
tinnerhrhe/GARDO, also in the original flow_grpo): a modifier of an objective's reward and regulariser, not a
loss of its own. It composes with Flow-GRPO and DiffusionNFT:

    config.train.objective = "grpo_gardo"     # or "nft_gardo"; GARDO's keys in config.train.gardo

and changes three things of the objective it modifies (the paper's text was not at hand, so no equation
numbers; the formulas are the authors' code's):

1. Gated KL: the penalty ``beta KL`` applies only to the samples whose reward is uncertain. With the main reward
   ``r`` (``avg``) and auxiliary rewards ``r_k`` (``gardo.aux_rewards``: columns of ``config.reward_fn``,
   weight 0 so that they only judge), each sample's win rates over this process's batch,
   ``win(i) = (#{j: r_j < r_i} + #{j != i: r_j = r_i} / 2) / (N - 1)``, give

       u_i = mean_k win_k(i) - win_main(i)                 the judges rate i above the main reward
       gated = { i : u_i > percentile({u >= 0}, 100 (1 - s)) }

   and the KL term is its mean over the gated samples of a minibatch (none: no KL). The share ``s`` adapts
   per epoch (the authors' RiskCompensator): with ``m`` the mean of ``{u >= 0}`` and the last
   ``kl_share_history`` epochs' ``m``, ``s <- 1.1 s`` above their max, ``0.9 s`` below their min, within
   ``kl_share_range`` (start ``kl_share`` = 0.1). This is the authors' code, whose ranks put the best at 1:
   its ``rank_main - mean rank_aux`` is large where the main reward rates a sample *below* the judges
   (``gardo.uncertain = "underrated"``, the default). Summaries of the paper speak of regularising where the
   proxy reward is unreliable, which may as well mean where it rates a sample *above* them (reward hacking):
   ``"overrated"`` flips the sign. Without auxiliary rewards every sample is gated (a plain KL to the moving
   reference below).
2. An adaptive reference: the KL's reference is a snapshot of the trained weights (the base at the start),
   reset to the current weights after an epoch whose mean KL exceeded ``reset_kl``, and at least every
   ``reset_every`` epochs.
3. Diversity-aware advantages: within each group, ``d_i = min_{j != i} (1 - cos(f_i, f_j))``, the distance
   to the nearest other sample's features ``f`` (``gardo.features``: the final latents, or the decoded
   images; the paper's are DINOv3 embeddings, which no CPU test can load), and

       A_i <- A_i d_i / mean_group(d)     for A_i >= 0 (the better half), unchanged below; then clipped

   so a good sample far from its group's others counts more. The authors use ``r - mean`` without a std;
   here ``A`` keeps the trainer's normalisation (``train.global_std``), a scale.

With several processes the gate and the distances use each process's own samples (the authors gather them);
the reset decision uses the KL averaged over processes, so every process keeps the same reference.
"""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo.advantages import clip_advantages
from flow_grpo.collectives import mean_over_processes
from flow_grpo.ema import Snapshot
from flow_grpo.errors import InputError
from flow_grpo.objectives.base import Minibatch, own_settings, register_objective, snapshot_velocity, snapshot_weights
from flow_grpo.objectives.grpo import GRPO
from flow_grpo.objectives.nft import DiffusionNFT
from flow_grpo.rollout_types import Rollout

GARDO_SETTINGS = {
    "aux_rewards": (),  # reward columns that judge the main reward (config.reward_fn names, weight 0 there)
    "uncertain": "underrated",  # gate where the judges rate a sample above the main reward (the authors' code); "overrated": below
    "kl_share": 0.1,  # the share of samples with u >= 0 gated at the start
    "kl_share_range": (0.02, 0.2),
    "kl_share_history": 20,  # epochs of mean uncertainty the share is compared with
    "reset_every": 15,  # epochs between resets of the reference at the latest (0: no periodic reset)
    "reset_kl": 3e-4,  # an epoch's mean KL above this resets the reference after it (0: no such reset)
    "diversity": True,  # diversity-aware advantages
    "features": "latents",  # what the diversity distance compares: "latents" (final) or "images"
}
FEATURES = ("latents", "images")
UNCERTAIN = ("overrated", "underrated")


def win_rates(rewards: np.ndarray) -> np.ndarray:
    """Each sample's share of the others it beats, ties counting half: [N] in [0, 1]."""
    rewards = np.asarray(rewards, dtype=np.float64)
    n = len(rewards)
    if n < 2:
        return np.full(n, 0.5)
    below = (rewards[None, :] < rewards[:, None]).sum(axis=1)
    ties = (rewards[None, :] == rewards[:, None]).sum(axis=1) - 1
    return (below + 0.5 * ties) / (n - 1)


def uncertainty(main: np.ndarray, aux: list[np.ndarray]) -> np.ndarray:
    """``u = mean_k win_k - win_main`` [N]: how much higher the judges rate each sample than the main reward
    (the authors' ``rank_main - mean rank_aux`` over ``N - 1``)."""
    return np.mean([win_rates(column) for column in aux], axis=0) - win_rates(main)


def gated_samples(u: np.ndarray, share: float) -> np.ndarray:
    """[N] bool: ``u > percentile({u >= 0}, 100 (1 - share))`` (none when no ``u >= 0``)."""
    candidates = u[u >= 0]
    if len(candidates) == 0:
        return np.zeros(len(u), dtype=bool)
    return u > np.percentile(candidates, 100 * (1 - share))


def adapted_share(share: float, history: list[float], current: float, share_range) -> float:
    """The RiskCompensator rule: ``1.1 share`` when ``current`` exceeds every value of ``history``, ``0.9
    share`` when it is below every one, else unchanged; within ``share_range``."""
    if history and current > max(history):
        share *= 1.1
    elif history and current < min(history):
        share *= 0.9
    return float(np.clip(share, share_range[0], share_range[1]))


def nearest_distances(features: torch.Tensor) -> torch.Tensor:
    """``min_{j != i} (1 - cos(f_i, f_j))`` for ``features`` [n, d]: [n] (0 for a lone sample)."""
    if len(features) < 2:
        return torch.zeros(len(features))
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    distance = 1 - (unit @ unit.T).clamp(-1, 1)
    distance.fill_diagonal_(float("inf"))
    return distance.min(dim=1).values


def diversity_weights(advantages: torch.Tensor, groups: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """[N]: ``d_i / mean_group(d)`` where ``A_i >= 0``, 1 elsewhere (and in groups without distance)."""
    weights = torch.ones(len(advantages), dtype=torch.float64)
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).flatten()
        distances = nearest_distances(features[members])
        if distances.mean() <= 0:
            continue
        better = advantages[members] >= 0
        weights[members[better]] = (distances / distances.mean())[better]
    return weights.float()


class GARDO:
    """The modifier, mixed in before an objective with a KL term that calls ``reference_mean`` (GRPO) or
    ``reference_velocity`` (NFT) and ``reduce_kl``; see the module docstring. ``config.train.gardo``."""

    @classmethod
    def settings_sections(cls) -> dict[str, dict]:
        return {**super().settings_sections(), "gardo": dict(GARDO_SETTINGS)}

    @classmethod
    def needs_reference(cls, config) -> bool:
        return False  # its reference is its own snapshot

    def __init__(self, config, pooled_dim: int = 0):
        super().__init__(config, pooled_dim=pooled_dim)
        self.gardo = own_settings(config, "gardo", GARDO_SETTINGS)
        if self.gardo.features not in FEATURES:
            raise InputError(f"unknown config.train.gardo.features {self.gardo.features!r}; valid: {', '.join(FEATURES)}")
        if self.gardo.uncertain not in UNCERTAIN:
            raise InputError(f"unknown config.train.gardo.uncertain {self.gardo.uncertain!r}; valid: {', '.join(UNCERTAIN)}")
        self.share = float(self.gardo.kl_share)
        self.history: list[float] = []
        self.epochs_since_reset = 0
        self.resets = 0
        self.kl_mask: torch.Tensor | None = None
        self._epoch_kls: list[torch.Tensor] = []  # each micro-step's mean KL (over all its samples)

    def attach(self, parameters, names):
        super().attach(parameters, names)
        self.snapshots["gardo_ref"] = Snapshot(parameters, names=names)

    # ---- before the update: the advantages and the gate ----

    def features(self, rollout: Rollout) -> torch.Tensor:
        source = rollout.final_latents if self.gardo.features == "latents" else rollout.images
        if source is None:
            raise InputError("config.train.gardo.features = 'images' needs decoded images in the rollout; use 'latents'")
        return source.detach().float().reshape(len(source), -1).cpu()

    def training_advantages(self, rollout: Rollout, advantages: torch.Tensor) -> torch.Tensor:
        if self.gardo.diversity:
            weights = diversity_weights(advantages, rollout.group_ids.cpu(), self.features(rollout))
            advantages = clip_advantages(advantages * weights, self.config.adv_clip_max)
        self.kl_mask = self.gate(rollout)
        return super().training_advantages(rollout, advantages)

    def gate(self, rollout: Rollout) -> torch.Tensor:
        """[N] bool: the samples whose KL counts this epoch (and the share adapted)."""
        names = list(self.gardo.aux_rewards)
        missing = [name for name in names if name not in rollout.rewards]
        if missing:
            raise InputError(f"config.train.gardo.aux_rewards names {missing}, which config.reward_fn does not compute "
                             f"(columns: {', '.join(rollout.rewards)}); add them with weight 0")
        if not names:
            return torch.ones(len(rollout), dtype=torch.bool)
        main = np.asarray(rollout.rewards["avg"], dtype=np.float64)
        u = uncertainty(main, [np.asarray(rollout.rewards[name], dtype=np.float64) for name in names])
        if self.gardo.uncertain == "overrated":
            u = -u
        current = float(np.mean(u[u >= 0])) if (u >= 0).any() else 0.0
        self.share = adapted_share(self.share, self.history, current, self.gardo.kl_share_range)
        self.history = (self.history + [current])[-int(self.gardo.kl_share_history):]
        return torch.as_tensor(gated_samples(u, self.share))

    # ---- in the loss: the moving reference and the gated mean ----

    def reference_mean(self, policy, batch) -> torch.Tensor:
        with snapshot_weights(self.snapshots["gardo_ref"]):
            return policy.score(batch).mean.float().clone()

    def reference_velocity(self, policy, x_t, t, conditioning) -> torch.Tensor:
        return snapshot_velocity(policy, self.snapshots["gardo_ref"], x_t, t, conditioning)

    def reduce_kl(self, kl: torch.Tensor, minibatch: Minibatch) -> torch.Tensor:
        mask = self.kl_mask[minibatch.rows.cpu()].to(kl.device).float()
        self._epoch_kls.append(kl.detach().mean())
        return (kl * mask).sum() / torch.clamp(mask.sum(), min=1.0)

    # ---- after the update: the reset ----

    def end_update(self, global_step: int) -> dict[str, float]:
        stats = super().end_update(global_step)
        epoch_kl = mean_over_processes(torch.stack(self._epoch_kls).mean() if self._epoch_kls else torch.zeros(()))
        gated = float(self.kl_mask.float().mean()) if self.kl_mask is not None else 0.0
        self._epoch_kls = []
        self.epochs_since_reset += 1
        every, threshold = int(self.gardo.reset_every), float(self.gardo.reset_kl)
        if (threshold > 0 and epoch_kl > threshold) or (every > 0 and self.epochs_since_reset >= every):
            self.snapshots["gardo_ref"].blend(0.0)  # the reference becomes the current policy
            self.epochs_since_reset = 0
            self.resets += 1
        return {**stats, "gardo_epoch_kl": epoch_kl, "gardo_gated_share": gated, "gardo_kl_share": self.share,
                "gardo_resets": float(self.resets)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "gardo_counters": torch.tensor([self.epochs_since_reset, self.resets]),
                "gardo_share": torch.tensor(self.share, dtype=torch.float64),
                "gardo_history": torch.tensor(self.history, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.epochs_since_reset, self.resets = (int(v) for v in state["gardo_counters"])
        self.share = float(state["gardo_share"])
        self.history = [float(v) for v in state["gardo_history"]]


@register_objective
class GRPOWithGARDO(GARDO, GRPO):
    """Flow-GRPO with GARDO's gated KL, moving reference and diversity-aware advantages."""

    name = "grpo_gardo"
    summary = "Flow-GRPO with GARDO's gated KL, moving reference and diversity-aware advantages"
    settings_section = "grpo"


@register_objective
class NFTWithGARDO(GARDO, DiffusionNFT):
    """DiffusionNFT with GARDO's gated velocity penalty, moving reference and diversity-aware advantages."""

    name = "nft_gardo"
    summary = "DiffusionNFT with GARDO's gated velocity penalty, moving reference and diversity-aware advantages"
    settings_section = "nft"
