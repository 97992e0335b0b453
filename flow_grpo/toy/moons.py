"""The 2D two-moons world: an unconditional base model, a moon classifier, and two rewards.

Upper moon: ``(cos t, sin t)``; lower moon: ``(1 - cos t, 0.5 - sin t)``, ``t`` in [0, pi] (the layout of
scikit-learn's ``make_moons``), plus Gaussian noise. Rewards:

- ``unlearn``: ``1 - p(lower moon | x)`` from a small classifier trained on the base data;
- ``fidelity``: ``exp(-d^2 / (2 w^2))`` with ``d`` the distance to the nearer moon arc (the half circles of
  the two moons, so that points elsewhere on the full circles are not rewarded).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from flow_grpo.errors import InputError

REWARDS = ("unlearn", "fidelity")
PROMPT = "two moons"


def sample_moons(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points and their labels (0 upper, 1 lower)."""
    label = torch.randint(2, (n,), generator=generator)
    angle = math.pi * torch.rand(n, generator=generator)
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(label[:, None] == 1, lower, upper)
    return points + noise * torch.randn(n, 2, generator=generator), label


def _arc_distance(points: np.ndarray, centre, lower_half: bool) -> np.ndarray:
    rel = points - np.asarray(centre)
    on_side = rel[:, 1] <= 0 if lower_half else rel[:, 1] >= 0
    to_circle = np.abs(np.linalg.norm(rel, axis=1) - 1.0)
    to_ends = np.minimum(np.linalg.norm(rel - [1.0, 0.0], axis=1), np.linalg.norm(rel + [1.0, 0.0], axis=1))
    return np.where(on_side, to_circle, to_ends)


def arc_distances(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Distances of each point to the upper arc and to the lower arc."""
    points = x.double().numpy()
    return _arc_distance(points, (0.0, 0.0), lower_half=False), _arc_distance(points, (1.0, 0.5), lower_half=True)


class MoonClassifier(nn.Module):
    def __init__(self, hidden_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def fit_classifier(noise: float, seed: int, num_steps: int = 600) -> tuple[MoonClassifier, float]:
    """Logistic regression with an MLP on moon samples; returns the model and its held-out accuracy."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MoonClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(num_steps):
        x, y = sample_moons(512, noise, generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        x, y = sample_moons(4096, noise, generator)
        accuracy = ((model(x) > 0).long() == y).float().mean().item()
    return model, accuracy


class MoonsWorld:
    data_dim = 2
    cond_dim = 0

    def __init__(self, reward: str, data_noise: float = 0.1, reward_width: float = 0.05, classifier_seed: int = 0, off_moon_distance: float = 0.3):
        if reward not in REWARDS:
            raise InputError(f"unknown moons reward {reward!r}; valid: {', '.join(REWARDS)}")
        self.reward_name = reward
        self.data_noise = data_noise
        self.reward_width = reward_width
        self.off_moon_distance = off_moon_distance
        self.train_prompts = [PROMPT]
        self.test_prompts = [PROMPT]
        self.classifier = None
        self.classifier_accuracy = None
        if reward == "unlearn":
            self.classifier, self.classifier_accuracy = fit_classifier(data_noise, classifier_seed)

    def encode(self, prompts) -> torch.Tensor:
        for prompt in prompts:
            if prompt != PROMPT:
                raise InputError(f"the moons world has the single prompt {PROMPT!r}, got {prompt!r}")
        return torch.zeros(len(prompts), 0)

    def sample_base_data(self, n: int, generator: torch.Generator):
        x0, _ = sample_moons(n, self.data_noise, generator)
        return x0, torch.zeros(n, 0)

    def reward(self, x: torch.Tensor, prompts) -> np.ndarray:
        if self.reward_name == "unlearn":
            with torch.no_grad():
                return 1.0 - torch.sigmoid(self.classifier(x.float())).double().numpy()
        d_upper, d_lower = arc_distances(x)
        return np.exp(-0.5 * (np.minimum(d_upper, d_lower) / self.reward_width) ** 2)

    def metrics(self, x: torch.Tensor, prompts) -> dict[str, float]:
        """Geometric measures, independent of the classifier: which arc is nearer, and how far."""
        d_upper, d_lower = arc_distances(x)
        nearest = np.minimum(d_upper, d_lower)
        return {
            "lower_moon_share": float(np.mean(d_lower < d_upper)),
            "off_moon_share": float(np.mean(nearest > self.off_moon_distance)),
            "mean_arc_distance": float(np.mean(nearest)),
        }

    def plot_samples(self, before: torch.Tensor, after: torch.Tensor, prompts, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        angle = np.linspace(0, np.pi, 200)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True, layout="constrained")
        for ax, points, title in ((axes[0], before, "base (before)"), (axes[1], after, "fine-tuned (after)")):
            scores = self.reward(points, prompts)
            sc = ax.scatter(points[:, 0], points[:, 1], c=scores, s=4, cmap="viridis", vmin=0, vmax=1)
            ax.plot(np.cos(angle), np.sin(angle), color="red", lw=0.8)
            ax.plot(1 - np.cos(angle), 0.5 - np.sin(angle), color="red", lw=0.8)
            m = self.metrics(points, prompts)
            ax.set_title(
                f"{title}\nlower-moon share {m['lower_moon_share']:.2f}, mean arc distance {m['mean_arc_distance']:.3f}",
                fontsize=10,
            )
            ax.set_xlim(-2, 3)
            ax.set_ylim(-1.5, 2)
            ax.set_aspect("equal")
        fig.colorbar(sc, ax=axes, label=f"reward ({self.reward_name})")
        fig.savefig(path, dpi=110)
        plt.close(fig)
