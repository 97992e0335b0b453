"""The 1D tutorial world: prompts like "a red circle" map to target points on a line.

Each colour owns a region of the line and each shape an offset inside it, so the target of a prompt is
``COLOUR_CENTERS[colour] + SHAPE_OFFSETS[shape]``. The base model is pretrained on data that is vague about
the shape: Gaussian around the prompt's target with a spread (``base_std``) comparable to the spacing of
the shapes, so that a base sample often lands on the spot of another shape of the same colour, much like a
text-to-image model that gets the colour right and the object only roughly. The reward is a narrow
Gaussian bump around the prompt's target. RL trains on some colour/shape combinations and is evaluated on
held-out ones.
"""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo.errors import InputError

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES = ("circle", "square", "triangle", "star")
COLOUR_CENTERS = {colour: -5.0 + 2.0 * i for i, colour in enumerate(COLOURS)}
SHAPE_OFFSETS = {shape: -0.6 + 0.4 * j for j, shape in enumerate(SHAPES)}


def make_prompt(colour: str, shape: str) -> str:
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape}"


def all_prompts() -> list[str]:
    return [make_prompt(colour, shape) for colour in COLOURS for shape in SHAPES]


def parse_prompt(prompt: str) -> tuple[str, str]:
    words = prompt.strip().lower().split()
    if len(words) < 2 or words[-2] not in COLOURS or words[-1] not in SHAPES:
        raise InputError(
            f"line_shapes prompt {prompt!r} is not 'a COLOUR SHAPE' with COLOUR in {COLOURS} and SHAPE in {SHAPES}"
        )
    return words[-2], words[-1]


class LineShapesWorld:
    data_dim = 1
    cond_dim = len(COLOURS) + len(SHAPES)

    def __init__(self, train_prompts, test_prompts, base_std=0.3, reward_width=0.1):
        self.train_prompts = list(train_prompts)
        self.test_prompts = list(test_prompts)
        for prompt in self.train_prompts + self.test_prompts:
            parse_prompt(prompt)
        self.base_std = base_std
        self.reward_width = reward_width

    def encode(self, prompts) -> torch.Tensor:
        """The toy text encoder: one-hot colour followed by one-hot shape."""
        cond = torch.zeros(len(prompts), self.cond_dim)
        for row, prompt in enumerate(prompts):
            colour, shape = parse_prompt(prompt)
            cond[row, COLOURS.index(colour)] = 1.0
            cond[row, len(COLOURS) + SHAPES.index(shape)] = 1.0
        return cond

    def targets(self, prompts) -> np.ndarray:
        return np.array([COLOUR_CENTERS[c] + SHAPE_OFFSETS[s] for c, s in map(parse_prompt, prompts)])

    def sample_base_data(self, n: int, generator: torch.Generator):
        """Pretraining data over train and test prompts: ``N(target, base_std^2)``."""
        prompts = self.train_prompts + self.test_prompts
        targets = torch.tensor(self.targets(prompts), dtype=torch.float32)
        picks = torch.randint(len(prompts), (n,), generator=generator)
        x0 = targets[picks, None] + self.base_std * torch.randn(n, 1, generator=generator)
        return x0, self.encode(prompts)[picks]

    def reward(self, x: torch.Tensor, prompts) -> np.ndarray:
        distance = x.reshape(-1).double().numpy() - self.targets(prompts)
        return np.exp(-0.5 * (distance / self.reward_width) ** 2)

    def metrics(self, x: torch.Tensor, prompts) -> dict[str, float]:
        """``right_shape_share``: samples nearer their own shape's spot than any other spot of the line."""
        values = x.reshape(-1).double().numpy()
        spots = np.array([COLOUR_CENTERS[c] + SHAPE_OFFSETS[s] for c in COLOURS for s in SHAPES])
        nearest = spots[np.argmin(np.abs(values[:, None] - spots[None, :]), axis=1)]
        return {"right_shape_share": float(np.mean(np.isclose(nearest, self.targets(prompts))))}

    def plot_samples(self, before: torch.Tensor, after: torch.Tensor, prompts, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        unique = list(dict.fromkeys(prompts))
        cols = min(3, len(unique))
        rows = (len(unique) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
        prompts = np.asarray(prompts, dtype=object)
        for ax, prompt in zip(axes.flat, unique):
            colour, _ = parse_prompt(prompt)
            lo, hi = COLOUR_CENTERS[colour] - 1.0, COLOUR_CENTERS[colour] + 1.0
            bins = np.linspace(lo, hi, 61)
            mask = prompts == prompt
            ax.hist(before[mask].reshape(-1).numpy(), bins=bins, alpha=0.55, label="before")
            ax.hist(after[mask].reshape(-1).numpy(), bins=bins, alpha=0.55, label="after")
            for shape in SHAPES:
                ax.axvline(COLOUR_CENTERS[colour] + SHAPE_OFFSETS[shape], color="grey", lw=0.6, ls=":")
            ax.axvline(self.targets([prompt])[0], color="black", lw=1.2)
            ax.set_title(prompt, fontsize=10)
        for ax in list(axes.flat)[len(unique):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        fig.suptitle("held-out prompts: samples before vs after (black line = target, dotted = other shapes)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
