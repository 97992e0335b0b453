"""How much of a policy-gradient estimate is signal: cosines between independent estimates.

Two estimates ``g_a = s + n_a`` and ``g_b = s + n_b`` of the same true gradient ``s``, each from ``m`` samples
with independent noise of total variance ``N / m``, have an expected cosine of about

    c = |s|^2 / (|s|^2 + N / m)        (high dimension: the noise terms are nearly orthogonal)

so ``rho = c / (1 - c) = m |s|^2 / N`` is the estimate's signal-to-noise ratio and grows linearly with ``m``.
An estimate whose cosine to the truth is ``sqrt(c_target)`` (pairwise cosine ``c_target``) needs
``m * rho(c_target) / rho(c)`` samples. The "Adam-normalised" cosine divides every coordinate by its
root-mean-square over the estimates first, as Adam's second moment would.
"""

from __future__ import annotations

import itertools

import torch


def pairwise_cosines(gradients: torch.Tensor) -> torch.Tensor:
    """Cosine of every pair of rows of ``gradients`` [R, P] (R >= 2 estimates of P parameters)."""
    if gradients.ndim != 2 or gradients.shape[0] < 2:
        raise ValueError(f"need at least 2 gradient estimates as rows of a 2-d tensor, got shape {tuple(gradients.shape)}")
    rows = gradients.double()
    return torch.stack([torch.nn.functional.cosine_similarity(rows[a], rows[b], dim=0) for a, b in itertools.combinations(range(len(rows)), 2)])


def adam_normalised(gradients: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each coordinate divided by its root-mean-square over the estimates (rows)."""
    return gradients.double() / (gradients.double().pow(2).mean(0).sqrt() + eps)


def snr_from_cosine(cosine: float) -> float:
    """rho = c / (1 - c): the estimate's |signal|^2 over its noise variance; 0 for c <= 0."""
    if cosine >= 1:
        return float("inf")
    return max(0.0, cosine) / (1.0 - max(0.0, cosine))


def samples_for_cosine(samples: int, cosine: float, target: float = 0.5) -> float:
    """Samples per estimate that would give pairwise cosine ``target``, from ``samples`` giving ``cosine``."""
    rho = snr_from_cosine(cosine)
    if rho == 0:
        return float("inf")
    return samples * snr_from_cosine(target) / rho


def ideal_samples_for_cosine(noise_dims: int, target: float = 0.5) -> float:
    """Samples per estimate that the best possible reward would need for pairwise cosine ``target``.

    A policy-gradient estimate ``A * J^T eps / std`` credits every one of the ``noise_dims`` Gaussian noise
    coordinates the update sees (latent size x trained steps). With a reward that is linear in a single one
    of them and an isotropic Jacobian ``J``, one sample's signal-to-noise ratio is ``1 / (noise_dims + 1)``
    (signal ``|J^T a|^2``, noise ``tr(J^T J) + |J^T a|^2``), so ``rho(target) * (noise_dims + 1)`` samples are
    needed: a floor that no reward beats while J treats the noise directions alike (a J aligned with the
    reward could do better), set by the size of the noise the sampler injects."""
    return snr_from_cosine(target) * (noise_dims + 1)


def summary(gradients: torch.Tensor, samples: int, target: float = 0.5) -> dict:
    """Raw and Adam-normalised pairwise cosines (mean, standard error) and the samples a ``target`` would need.

    The standard error treats the pairs as independent, which they are not (each estimate is in R - 1
    pairs): read it as a rough scale. ``cosine_upper`` (mean + 2 s.e.) bounds the signal when the mean is ~0.
    """
    out = {"estimates": int(gradients.shape[0]), "samples_per_estimate": int(samples), "target_cosine": target}
    for name, rows in (("raw", gradients), ("adam", adam_normalised(gradients))):
        cosines = pairwise_cosines(rows)
        mean = float(cosines.mean())
        sem = float(cosines.std() / len(cosines) ** 0.5) if len(cosines) > 1 else float("nan")
        out[f"{name}_cosine_mean"] = mean
        out[f"{name}_cosine_sem"] = sem
        out[f"{name}_cosine_upper"] = mean + 2 * sem if sem == sem else mean
        out[f"{name}_samples_for_target"] = samples_for_cosine(samples, mean, target)
        out[f"{name}_samples_for_target_at_upper"] = samples_for_cosine(samples, out[f"{name}_cosine_upper"], target)
    return out


def parameter_groups(named_sizes: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
    """Flat indices of each kind of weight, pooled over the transformer's blocks: a name with its block
    numbers replaced by ``*`` (``transformer_blocks.*.attn.to_q.bias``) names a group."""
    import re

    groups: dict[str, list[torch.Tensor]] = {}
    start = 0
    for name, size in named_sizes:
        groups.setdefault(re.sub(r"\.\d+(?=\.|$)", ".*", name), []).append(torch.arange(start, start + size))
        start += size
    return {name: torch.cat(parts) for name, parts in groups.items()}


def breakdown(per_step: torch.Tensor, groups: dict[str, torch.Tensor], samples: int, target: float = 0.5) -> dict:
    """Where the signal sits: ``summary`` of each trained step's gradient, of the first j steps' sum, and of
    each parameter group's slice of the full gradient. ``per_step`` is [R estimates, S steps, P parameters]."""
    if per_step.ndim != 3:
        raise ValueError(f"per_step must be [estimates, steps, parameters], got shape {tuple(per_step.shape)}")
    total = per_step.sum(1)
    return {
        "steps": [summary(per_step[:, j], samples, target) for j in range(per_step.shape[1])],
        "first_steps": [summary(per_step[:, : j + 1].sum(1), samples, target) for j in range(per_step.shape[1])],
        "groups": {name: dict(summary(total[:, index], samples, target), parameters=len(index)) for name, index in groups.items()},
    }
