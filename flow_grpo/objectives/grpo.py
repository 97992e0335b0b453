"""Flow-GRPO (arXiv 2505.05470): the clipped policy-gradient surrogate per denoising step, plus beta times
the KL between the policy's and the reference's Gaussian steps.

Per micro-step, for n stored transitions ``x_t -> x_{t+1}`` with group advantages ``A`` [n]:

    ratio = exp(log p_theta(x_{t+1} | x_t) - log p_old(x_{t+1} | x_t))
    policy_loss = mean(max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)))
    KL = mean over elements of (mean_theta - mean_ref)^2 / (2 std^2)          (exact Gaussian KL, [n])
    loss = policy_loss + beta mean(KL)

``log p`` is the step's log-density averaged over the latent's elements (``flow_grpo.sde``), so ratios stay
near 1 and the clip ranges are small (1e-4 for ``sde``, 1e-5 for ``cps``).

The KL's scale, ``config.train.kl_form``:

- ``"exact"``: ``std`` is the transition's standard deviation, ``std_t sqrt(-dt)`` for the ``sde`` step: the
  KL between the two Gaussian steps.
- ``"paper"``: the original flow_grpo's ``mean((mean_theta - mean_ref)^2) / (2 std_t^2)`` with
  ``std_t = a sqrt(s / (1 - s))``, without the step's ``sqrt(-dt)``: ``-dt`` times the exact KL for ``sde``
  (1/7 to 1/30 of it over 10 steps), the same for ``cps`` (whose ``std_t`` is the transition's std). The
  published betas (0.04 GenEval and OCR, 0.01 PickScore) were tuned with this form.
"""

from __future__ import annotations

import torch

from flow_grpo.objectives.base import Minibatch, Objective, Stats, register_objective
from flow_grpo.flow_policy import FlowPolicy, StepScore
from flow_grpo.rollout_types import TransitionBatch


def clipped_policy_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO/GRPO surrogate ``mean(max(-A r, -A clip(r, 1 - eps, 1 + eps)))`` with ``r = exp(logp - logp_old)``.

    Args: ``log_prob`` [n] (with gradient), ``old_log_prob`` [n], ``advantages`` [n].
    Returns the loss (0-d) and the ratio [n] (for diagnostics).
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.mean(torch.maximum(unclipped, clipped)), ratio


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std_dev: torch.Tensor) -> torch.Tensor:
    """Exact KL between N(mean, std^2) and N(mean_ref, std^2), averaged over non-batch elements: shape [n].

    ``mean``, ``mean_ref``: [n, *latent]; ``std_dev``: [n, 1, ...], the transition's standard deviation as
    returned by ``sde_step_with_logprob`` (it includes ``sqrt(-dt)`` for the ``sde`` type).
    """
    per_element = (mean.float() - mean_ref.float()) ** 2 / (2 * std_dev.float() ** 2)
    return per_element.mean(dim=tuple(range(1, per_element.ndim)))


KL_FORMS = ("exact", "paper")


def step_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std_dev: torch.Tensor, dt: torch.Tensor, form: str, sde_type: str) -> torch.Tensor:
    """The per-step KL of ``kl_form`` ``form``, shape [n]: :func:`gaussian_kl`, times ``-dt`` [n] for the
    ``paper`` form of an ``sde`` step (the original divides by ``std_t^2 = std_dev^2 / -dt``)."""
    if form not in KL_FORMS:
        raise ValueError(f"unknown config.train.kl_form {form!r}; valid: {', '.join(KL_FORMS)}")
    kl = gaussian_kl(mean, mean_ref, std_dev)
    if form == "paper" and sde_type == "sde":
        kl = kl * (-dt.float().reshape(-1))
    return kl


@torch.no_grad()
def ratio_diagnostics(log_prob: torch.Tensor, old_log_prob: torch.Tensor, ratio: torch.Tensor, clip_range: float) -> Stats:
    """``approx_kl = 0.5 mean((logp - logp_old)^2)``, ``clipfrac`` (share of ratios outside the clip range) and
    ``ratio_mean``; all 0-d."""
    ratio = ratio.detach()
    return {
        "approx_kl": 0.5 * torch.mean((log_prob.detach() - old_log_prob) ** 2),
        "clipfrac": torch.mean((torch.abs(ratio - 1.0) > clip_range).float()),
        "ratio_mean": ratio.mean(),
    }


@register_objective
class GRPO(Objective):
    """The clipped surrogate with beta times the KL to the reference (``config.train``: ``clip_range``, ``beta``,
    ``kl_form``)."""

    name = "grpo"
    summary = "Flow-GRPO's clipped surrogate per denoising step, plus beta times the Gaussian KL to the reference"

    def __init__(self, config, pooled_dim: int = 0):
        super().__init__(config)
        if config.kl_form not in KL_FORMS:
            raise ValueError(f"unknown config.train.kl_form {config.kl_form!r}; valid: {', '.join(KL_FORMS)}")

    def policy_loss(self, score: StepScore, batch: TransitionBatch, advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, ratio [n]) of one micro-step; GRPO-Guard replaces the ratio."""
        return clipped_policy_loss(score.log_prob, batch.old_log_probs, advantages, self.config.clip_range)

    def reference_mean(self, policy: FlowPolicy, batch: TransitionBatch) -> torch.Tensor:
        """The reference's step mean [n, *latent] (the base's; GARDO's moves). Called before the forward with
        gradients."""
        return policy.reference_score(batch).mean

    def reduce_kl(self, kl: torch.Tensor, minibatch: Minibatch) -> torch.Tensor:
        """The per-sample KL [n] as the loss's term (0-d): the mean (GARDO: over its uncertain samples)."""
        return kl.mean()

    def loss(self, policy: FlowPolicy, minibatch: Minibatch, j: int, prepared=None) -> tuple[torch.Tensor, Stats]:
        batch = minibatch.transitions(j)
        mean_ref = self.reference_mean(policy, batch) if self.config.beta > 0 else None
        score = policy.score(batch)
        policy_loss, ratio = self.policy_loss(score, batch, minibatch.advantages)
        stats = {"policy_loss": policy_loss.detach(),
                 **ratio_diagnostics(score.log_prob, batch.old_log_probs, ratio, self.config.clip_range)}
        loss = policy_loss
        if mean_ref is not None:
            kl = self.reduce_kl(step_kl(score.mean, mean_ref, score.std_dev, batch.sigmas_next - batch.sigmas,
                                        self.config.kl_form, policy.sde.sde_type), minibatch)
            loss = loss + self.config.beta * kl
            stats["kl_loss"] = kl.detach()
        return loss, stats
