"""Videos ``[F, 3, H, W]`` (batches ``[N, F, 3, H, W]``) of floats in [0, 1]: written as MP4 (OpenCV's FFmpeg
writer, MPEG-4 Part 2, which VLC, mpv, QuickTime and FFmpeg play) or, where OpenCV is not installed, as an
animated GIF; tiled into one grid clip; and laid out as a frame strip (rows: videos, columns: frames) for
pages that want a still picture. :func:`save_samples` is what the trainer and the demos call for images and
videos alike."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from flow_grpo.checkpoint.atomic import atomic_write_bytes
from flow_grpo.images import image_grid, to_pil

DEFAULT_FPS = 8  # the original Flow-GRPO's Wan videos


def _frames_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[F, 3, H, W]`` in [0, 1] to ``[F, H, W, 3]`` uint8."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"a video is [F, 3, H, W], got shape {tuple(frames.shape)}")
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def video_encoder() -> str:
    """``"mp4"`` when OpenCV (with FFmpeg) can write MP4 here, else ``"gif"``."""
    try:
        import cv2  # noqa: F401 (only whether it imports)
    except ImportError:
        return "gif"
    return "mp4"


def write_video(frames: torch.Tensor, path: str, fps: int = DEFAULT_FPS) -> str:
    """Writes ``frames`` ``[F, 3, H, W]`` to ``path`` (its extension becomes ``.gif`` where MP4 cannot be written)
    through a temporary file and a rename, so a reader never sees half a video; returns the path written."""
    array = _frames_uint8(frames)
    stem, _ = os.path.splitext(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if video_encoder() == "mp4":
        import cv2

        path = stem + ".mp4"
        # MPEG-4 wants even sizes: pad the last row / column by repeating it
        height, width = array.shape[1] + array.shape[1] % 2, array.shape[2] + array.shape[2] % 2
        array = np.pad(array, ((0, 0), (0, height - array.shape[1]), (0, width - array.shape[2]), (0, 0)), mode="edge")
        partial = f"{path}.partial.mp4"
        writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write an MP4 video to {partial!r}")
        for frame in array:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV takes BGR
        writer.release()
        os.replace(partial, path)
        return path
    import io

    from PIL import Image

    path = stem + ".gif"
    images = [Image.fromarray(frame) for frame in array]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def video_grid(videos: torch.Tensor, cols: int, gap: int = 2) -> torch.Tensor:
    """``[N, F, 3, H, W]`` tiled into one clip ``[F, 3, rows (H + gap) - gap, cols (W + gap) - gap]`` (white gaps)."""
    count, frames, _, height, width = videos.shape
    cols = max(1, min(cols, count))
    rows = -(-count // cols)
    grid = torch.ones(frames, 3, rows * (height + gap) - gap, cols * (width + gap) - gap)
    for i, video in enumerate(videos.float().cpu()):
        r, c = divmod(i, cols)
        grid[:, :, r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = video
    return grid


def strip_frames(num_frames: int, shown: int = 5) -> list[int]:
    """``shown`` frame indices evenly spaced from the first frame to the last."""
    if num_frames <= shown:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (shown - 1)) for i in range(shown)})


def frame_strip(videos: torch.Tensor, labels: Sequence[str] | None = None, shown: int = 5, cell: int | None = None):
    """A still picture of ``[N, F, 3, H, W]``: one row per video (labelled), its frames :func:`strip_frames` across."""
    indices = strip_frames(videos.shape[1], shown)
    tiles = to_pil(videos[:, indices].reshape(-1, *videos.shape[2:]))
    return image_grid(tiles, cols=len(indices), row_labels=list(labels) if labels else None,
                      col_labels=[f"frame {i}" for i in indices], cell=cell)


def save_samples(samples: torch.Tensor, png_path: str, cols: int = 4, labels: Sequence[str] | None = None) -> list[str]:
    """Images ``[N, 3, H, W]``: their grid at ``png_path``. Videos ``[N, F, 3, H, W]``: their grid clip beside it
    (same name, ``.mp4`` or ``.gif``) and their frame strip at ``png_path``. Returns the paths written."""
    if samples.ndim == 4:
        image_grid(to_pil(samples), cols=min(cols, len(samples))).save(png_path)
        return [png_path]
    if samples.ndim != 5:
        raise ValueError(f"samples are images [N, 3, H, W] or videos [N, F, 3, H, W], got shape {tuple(samples.shape)}")
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    clip = write_video(video_grid(samples, cols), os.path.splitext(png_path)[0] + ".mp4")
    frame_strip(samples[:8], labels=labels, cell=max(96, samples.shape[-1])).save(png_path)
    return [clip, png_path]
