"""Closed-form image statistics as rewards: cheap, deterministic, for CPU runs and tests."""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo.rewards.registry import register

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}


@register("brightness")
def brightness(**_):
    """Mean pixel value in [0, 1]."""

    def score(images, prompts, metadata):
        return images.float().mean(dim=(1, 2, 3)).cpu().double().numpy(), {}

    return score


@register("prompt_colour")
def prompt_colour(**_):
    """1 - (RMS distance of the mean colour to the colour named in the prompt) / sqrt(3): in [0, 1].

    The first of red, green, blue, yellow, white, black found in the prompt is the target; a prompt naming
    none of them raises an error that names the prompt.
    """

    def score(images, prompts, metadata):
        targets = []
        for prompt in prompts:
            words = prompt.lower().replace(",", " ").split()
            found = next((COLOURS[w] for w in words if w in COLOURS), None)
            if found is None:
                raise ValueError(f"prompt {prompt!r} names none of the colours {', '.join(COLOURS)}")
            targets.append(found)
        mean_colour = images.float().mean(dim=(2, 3)).cpu()
        distance = torch.linalg.norm(mean_colour - torch.tensor(targets), dim=1) / np.sqrt(3)
        return (1.0 - distance).double().numpy(), {}

    return score
