"""Rewards of the shapes world's editing task (``flow_grpo.shapes.edits``; metadata with ``edit``,
``source`` and ``target`` scenes, as in ``dataset/shapes_edit``).

- ``shapes_edit``: the shapes detector's check of the edit times the preservation of what the instruction
  does not touch (:class:`~flow_grpo.shapes.edits.EditCheck`): 1 for the ground-truth edit, 0 for the
  unedited input (measured in docs/backbones.md). Info: ``edit``, ``preservation``, ``correct`` and one
  ``kind_<recolour|add|remove>`` column (NaN for other kinds).
- ``shapes_edit_pixels``: ``1 - mean |image - target scene|`` over pixels and channels: dense, for models
  whose samples are not shapes yet (a random tiny Kontext), never a check of the edit by itself (the unedited
  input scores high, since an edit changes few pixels).

Images of another size than the scene's (``metadata["resolution"]``, default 32) are resized to it first.
"""

from __future__ import annotations

import numpy as np
import torch

from flow_grpo.images import to_pil
from flow_grpo.rewards.registry import register
from flow_grpo.shapes.edits import EDIT_KINDS, check_edit, scene_image
from flow_grpo.shapes.render import RESOLUTION


def _at_scene_size(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-2:] == (resolution, resolution):
        return images.float()
    return torch.nn.functional.interpolate(images.float(), size=(resolution, resolution), mode="bilinear", antialias=True)


def _require_edit(meta: dict, i: int) -> None:
    missing = [key for key in ("edit", "source", "target") if key not in meta]
    if missing:
        raise ValueError(f"metadata[{i}] has no {', '.join(missing)}: the shapes editing rewards need the metadata of "
                         "dataset/shapes_edit (python dataset/make_shapes_edits.py)")


@register("shapes_edit")
def shapes_edit(tolerance: float = 2.5, background_threshold: float = 40.0, min_area: int = 12, **_):
    from flow_grpo.shapes.detector import ShapesDetector

    detector = ShapesDetector(background_threshold=background_threshold, min_area=min_area)

    def score(images, prompts, metadata):
        checks = []
        for i, meta in enumerate(metadata):
            _require_edit(meta, i)
        for image, meta in zip(images, metadata):
            pil = to_pil(_at_scene_size(image[None], int(meta.get("resolution", RESOLUTION))))[0]
            checks.append(check_edit(detector.analyse(pil)["detections"], meta, tolerance))
        info = {"edit": np.array([c.edit for c in checks]), "preservation": np.array([c.preservation for c in checks]),
                "correct": np.array([float(c.correct) for c in checks])}
        for kind in EDIT_KINDS:
            info[f"kind_{kind}"] = np.array([c.score if m["edit"]["kind"] == kind else np.nan for c, m in zip(checks, metadata)])
        return np.array([c.score for c in checks]), info

    return score


@register("shapes_edit_pixels")
def shapes_edit_pixels(**_):
    def score(images, prompts, metadata):
        scores = []
        for i, (image, meta) in enumerate(zip(images, metadata)):
            _require_edit(meta, i)
            resolution = int(meta.get("resolution", RESOLUTION))
            target = torch.from_numpy(np.asarray(scene_image(meta["target"], resolution), dtype=np.float32) / 255).permute(2, 0, 1)
            scores.append(1.0 - float((_at_scene_size(image[None], resolution)[0].cpu() - target).abs().mean()))
        return np.array(scores), {}

    return score
