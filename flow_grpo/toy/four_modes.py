"""A 2D world whose reward has four equally good modes, to compare reward maximisation with FlowRL's
distribution matching on how many modes survive fine-tuning.

The base is a flow-matching model of a broad Gaussian N(0, base_std^2 I); the reward is
``max_k exp(-|x - m_k|^2 / (2 w^2))`` with modes m_k at (+-d, +-d). A mode is *covered* when it holds at
least ``coverage_share`` (10%) of the samples, a sample belonging to a mode when within ``radius`` of it.
"""

from __future__ import annotations

import numpy as np
import torch

PROMPT = "four modes"


class FourModesWorld:
    data_dim = 2
    cond_dim = 0

    def __init__(self, base_std: float = 1.5, mode_distance: float = 1.5, reward_width: float = 0.35,
                 radius: float = 0.75, coverage_share: float = 0.1):
        self.base_std = base_std
        self.modes = np.asarray([[sx * mode_distance, sy * mode_distance] for sx in (-1, 1) for sy in (-1, 1)])
        self.reward_width = reward_width
        self.radius = radius
        self.coverage_share = coverage_share
        self.train_prompts = [PROMPT]
        self.test_prompts = [PROMPT]

    def encode(self, prompts) -> torch.Tensor:
        return torch.zeros(len(prompts), 0)

    def sample_base_data(self, n: int, generator: torch.Generator):
        return self.base_std * torch.randn(n, 2, generator=generator), torch.zeros(n, 0)

    def _distances(self, x: torch.Tensor) -> np.ndarray:
        points = x.double().numpy()
        return np.linalg.norm(points[:, None, :] - self.modes[None, :, :], axis=-1)

    def reward(self, x: torch.Tensor, prompts) -> np.ndarray:
        return np.exp(-0.5 * (self._distances(x).min(axis=1) / self.reward_width) ** 2)

    def metrics(self, x: torch.Tensor, prompts) -> dict[str, float]:
        distances = self._distances(x)
        nearest = distances.argmin(axis=1)
        inside = distances.min(axis=1) < self.radius
        shares = [float(np.mean(inside & (nearest == k))) for k in range(len(self.modes))]
        metrics = {f"mode_{k}_share": share for k, share in enumerate(shares)}
        metrics["modes_covered"] = float(sum(share >= self.coverage_share for share in shares))
        metrics["in_mode_share"] = float(np.mean(inside))
        return metrics

    def plot_samples(self, before: torch.Tensor, after: torch.Tensor, prompts, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), sharex=True, sharey=True, layout="constrained")
        for ax, points, title in ((axes[0], before, "base (before)"), (axes[1], after, "fine-tuned (after)")):
            ax.scatter(points[:, 0], points[:, 1], s=3, c=self.reward(points, prompts), cmap="viridis", vmin=0, vmax=1)
            for mode in self.modes:
                ax.add_patch(plt.Circle(mode, self.radius, fill=False, color="red", lw=0.8))
            m = self.metrics(points, prompts)
            ax.set_title(f"{title}\\nmodes covered {m['modes_covered']:.0f}/4, reward {self.reward(points, prompts).mean():.3f}", fontsize=10)
            ax.set_xlim(-4, 4)
            ax.set_ylim(-4, 4)
            ax.set_aspect("equal")
        fig.savefig(path, dpi=110)
        plt.close(fig)
