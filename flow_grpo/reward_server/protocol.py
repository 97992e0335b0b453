"""The reward server's wire format: JSON bodies, images as base64 PNG or JPEG. No pickle anywhere.

Request  ``POST /score``: ``{"reward": NAME, "images": [base64, ...], "prompts": [...], "metadata": [...],
"options": {...}}`` (``metadata`` and ``options`` optional).
Response: ``{"scores": [float, ...], "info": {key: [value per image], ...}}``; errors: a 4xx or 5xx status with
``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from flow_grpo.images import to_pil, to_tensor

IMAGE_FORMATS = ("png", "jpeg")


class ProtocolError(ValueError):
    """A request that breaks the protocol; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def encode_image(image, image_format: str = "png", quality: int = 95) -> str:
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; valid: {', '.join(IMAGE_FORMATS)}")
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_images(images: torch.Tensor, image_format: str = "png") -> list[str]:
    return [encode_image(image, image_format) for image in to_pil(images)]


def decode_image(text, index: int, max_pixels: int) -> Image.Image:
    """One base64 PNG/JPEG, checked: a string, valid base64, a readable image, at most ``max_pixels``."""
    if not isinstance(text, str):
        raise ProtocolError(f"images[{index}] must be a base64 string, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"images[{index}] is not valid base64") from None
    if not data:
        raise ProtocolError(f"images[{index}] is empty")
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in ("PNG", "JPEG"):
            raise ProtocolError(f"images[{index}] is {image.format}, not PNG or JPEG")
        width, height = image.size
        if width * height > max_pixels:
            raise ProtocolError(f"images[{index}] is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}", status=413)
        image.load()  # decode now: truncated data fails here
    except ProtocolError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ProtocolError(f"images[{index}] is not a readable PNG or JPEG image ({type(error).__name__}: {error})") from None
    return image.convert("RGB")


def images_to_batch(images: list[Image.Image]) -> torch.Tensor:
    """Decoded images to one [N, 3, H, W] float tensor in [0, 1]; images of different sizes are rejected."""
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        raise ProtocolError(f"all images of a request must have one size, got {sorted(sizes)}")
    return to_tensor(images)


def check_request(request: dict, rewards: dict, limits: dict) -> dict:
    """A ``POST /score`` body whose field types the server's pydantic model has checked (``ScoreRequest``):
    check what a type cannot say (a hosted reward, counts and lengths that agree, the limits, images that are
    PNG or JPEG of one size) and return the decoded fields, or raise ``ProtocolError`` naming the problem."""
    name = request["reward"]
    if name not in rewards:
        raise ProtocolError(f"unknown reward {name!r}; this server hosts: {', '.join(sorted(rewards))}", status=404)
    images, prompts = request["images"], request["prompts"]
    if not images:
        raise ProtocolError("'images' is empty")
    if len(images) > limits["max_images"]:
        raise ProtocolError(f"{len(images)} images in one request, over the limit of {limits['max_images']}", status=413)
    if len(prompts) != len(images):
        raise ProtocolError(f"{len(images)} images but {len(prompts)} prompts")
    metadata = request.get("metadata")
    metadata = [{} for _ in images] if metadata is None else metadata
    if len(metadata) != len(images):
        raise ProtocolError(f"{len(images)} images but {len(metadata)} metadata entries")
    options = request.get("options") or {}
    decoded = [decode_image(text, i, limits["max_pixels"]) for i, text in enumerate(images)]
    return {"reward": name, "images": images_to_batch(decoded), "prompts": prompts, "metadata": metadata, "options": options}


def jsonable_scores(name: str, scores, info: dict, num_images: int) -> dict:
    """A reward's output as the response object; NaN/inf become null (JSON has no NaN)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != (num_images,):
        raise ValueError(f"reward {name!r} returned {scores.shape[0]} scores for {num_images} images")

    def clean(value):
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, (np.integer,)):
            return int(value)
        if isinstance(value, np.ndarray):
            return [clean(v) for v in value.tolist()]
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        return value

    return {"scores": clean(scores), "info": {str(k): clean(np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in (info or {}).items()}}
