"""A client for the reward server that rides out faults and never loses a reward.

Images are sent in chunks (64 per request by default), as lossless PNG unless JPEG is asked for. A
connection error, a timeout or a 5xx is retried with exponential backoff until ``deadline`` seconds have
passed, then a ``RewardServerError`` names the URL and the last failure. A 4xx is the request's fault and
is raised at once, never retried; so is a 200 whose body is not a valid answer.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from flow_grpo.reward_server.protocol import encode_images


class RewardServerError(RuntimeError):
    """The reward server could not give the scores; the message names the URL and what failed."""


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """How a :class:`RewardClient` talks to its server."""

    chunk_size: int = 64  # images per request
    image_format: str = "png"  # or "jpeg"
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    deadline: float = 900.0  # seconds of retrying a request before giving up
    backoff: float = 0.5  # first wait between retries (doubled each time, up to max_backoff)
    max_backoff: float = 15.0
    max_in_flight: int = 4  # requests of one call in parallel


class RewardClient:
    def __init__(self, url: str, token: str | None = None, settings: ClientSettings | None = None, **overrides):
        """``overrides``: fields of :class:`ClientSettings` to change, e.g. ``RewardClient(url, chunk_size=8)``."""
        settings = dataclasses.replace(settings or ClientSettings(), **overrides)
        self.url = url.rstrip("/")
        self.token = token
        self.chunk_size = int(settings.chunk_size)
        self.image_format = settings.image_format
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.deadline = settings.deadline
        self.backoff = settings.backoff
        self.max_backoff = settings.max_backoff
        self.max_in_flight = max(1, int(settings.max_in_flight))
        self.session = requests.Session()
        self.retries = 0  # requests retried so far (for logs and tests)

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def health(self) -> dict:
        response = self.session.get(f"{self.url}/health", timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def _post(self, payload: dict, num_images: int, deadline_at: float) -> dict:
        body = json.dumps(payload).encode("utf-8")
        attempt, last = 0, ""
        while True:
            try:
                response = self.session.post(f"{self.url}/score", data=body, headers=self._headers(), timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as error:
                last = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 400:
                    return self._check_answer(response, num_images)
                try:
                    message = response.json().get("error", response.text[:300])
                except ValueError:
                    message = response.text[:300]
                if response.status_code < 500:
                    raise RewardServerError(f"reward server {self.url} rejected the request (HTTP {response.status_code}): {message}")
                last = f"HTTP {response.status_code}: {message}"
            attempt += 1
            wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())
            if time.monotonic() + wait > deadline_at:
                raise RewardServerError(
                    f"reward server {self.url} gave no answer within the {self.deadline:g} s deadline "
                    f"({attempt} attempts); last error: {last}"
                )
            self.retries += 1
            time.sleep(wait)

    def _check_answer(self, response, num_images: int) -> dict:
        try:
            answer = response.json()
        except ValueError:
            raise RewardServerError(f"reward server {self.url} answered HTTP {response.status_code} with a body that is not JSON: {response.text[:200]!r}") from None
        scores = answer.get("scores") if isinstance(answer, dict) else None
        if not isinstance(scores, list) or len(scores) != num_images:
            raise RewardServerError(
                f"reward server {self.url} answered without a list of {num_images} 'scores': {str(answer)[:200]}"
            )
        try:
            answer["scores"] = [float("nan") if s is None else float(s) for s in scores]
        except (TypeError, ValueError):
            raise RewardServerError(f"reward server {self.url} answered scores that are not numbers: {scores[:5]}") from None
        info = answer.get("info") or {}
        if not isinstance(info, dict):
            raise RewardServerError(f"reward server {self.url} answered an 'info' that is not an object")
        answer["info"] = info
        return answer

    def score(self, reward: str, images, prompts, metadata=None, options=None) -> tuple[np.ndarray, dict]:
        """Scores [N] and info (per-image arrays) for ``images`` [N, 3, H, W] in [0, 1]."""
        n = len(prompts)
        if len(images) != n:
            raise ValueError(f"{len(images)} images but {n} prompts")
        metadata = list(metadata) if metadata is not None else [{} for _ in range(n)]
        deadline_at = time.monotonic() + self.deadline
        starts = list(range(0, n, self.chunk_size))

        def one(start):
            end = min(n, start + self.chunk_size)
            payload = {
                "reward": reward,
                "images": encode_images(images[start:end], self.image_format),
                "prompts": list(prompts[start:end]),
                "metadata": metadata[start:end],
            }
            if options:
                payload["options"] = options
            return self._post(payload, end - start, deadline_at)

        if len(starts) == 1 or self.max_in_flight == 1:
            answers = [one(s) for s in starts]
        else:
            with ThreadPoolExecutor(min(self.max_in_flight, len(starts))) as pool:
                answers = list(pool.map(one, starts))
        scores = np.asarray([s for a in answers for s in a["scores"]], dtype=np.float64)
        keys = {k for a in answers for k in a["info"]}
        info = {k: np.asarray([v for a in answers for v in a["info"].get(k, [None] * len(a["scores"]))], dtype=object) for k in keys}
        return scores, info
