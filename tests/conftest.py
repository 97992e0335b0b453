import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the tests never download: a hub model that is not here fails at once instead of after the hub client's retries
# (set before anything imports huggingface_hub, which reads it once)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_script(relative_path: str):
    """Import a script under scripts/ (or elsewhere) as a module, without running its main."""
    path = os.path.join(REPO, relative_path)
    name = "_script_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def tiny_pipeline():
    """A tiny SD3 pipeline (real diffusers classes); tests must not modify it (use fresh_tiny_pipeline)."""
    from flow_grpo.backbones.sd3.tiny import build_tiny_sd3_pipeline

    pipeline = build_tiny_sd3_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def fresh_tiny_pipeline():
    from flow_grpo.backbones.sd3.tiny import build_tiny_sd3_pipeline

    pipeline = build_tiny_sd3_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory, tiny_pipeline):
    """The tiny pipeline written to disk in diffusers layout."""
    path = tmp_path_factory.mktemp("tiny-sd3")
    tiny_pipeline.save_pretrained(str(path))
    return str(path)


def read_video_frames(path: str):
    """The frames of an MP4 (through OpenCV's FFmpeg decoder) or GIF file as ``[F, H, W, 3]`` uint8: how the
    tests check that what ``flow_grpo.videos.write_video`` wrote is a video a player can open."""
    import numpy as np

    if path.endswith(".gif"):
        from PIL import Image, ImageSequence

        with Image.open(path) as image:
            return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])
    import cv2

    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    if not frames:
        raise ValueError(f"{path!r}: no frames could be decoded")
    return np.stack(frames)
