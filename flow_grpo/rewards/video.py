"""Video-native rewards: they score a whole clip ``[N, F, 3, H, W]`` in [0, 1] (image rewards on videos score
frames instead: ``flow_grpo.rewards.registry.score_frames``)."""

from __future__ import annotations

from flow_grpo.rewards.registry import register


@register("temporal_consistency", takes_videos=True)
def temporal_consistency(**_):
    """``1 - mean_t mean |x_{t+1} - x_t|``: one minus the mean absolute change between consecutive frames, in
    [0, 1] (1: a still clip; independent uniform noise frames score about 2/3). It rewards flicker-free
    motion and, alone, a frozen clip: pair it with a reward on content. Info: ``largest_jump``, the largest
    mean change between two consecutive frames of each clip."""

    def score(videos, prompts, metadata):
        if videos.ndim != 5:
            raise ValueError(f"temporal_consistency scores videos [N, F, 3, H, W], got shape {tuple(videos.shape)}")
        if videos.shape[1] < 2:
            raise ValueError("temporal_consistency needs at least 2 frames per video")
        change = (videos[:, 1:].float() - videos[:, :-1].float()).abs().mean(dim=(2, 3, 4))  # [N, F - 1]
        return (1.0 - change.mean(dim=1)).cpu().double().numpy(), {"largest_jump": change.amax(dim=1).cpu().double().numpy()}

    return score
