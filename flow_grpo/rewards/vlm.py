"""Rewards from a vision-language model behind any OpenAI-compatible chat endpoint (vLLM, sglang, ...).

Each image goes, with a question built from its prompt, to ``{base_url}/chat/completions`` as a base64 PNG
data URL; the answer is parsed for a score. An endpoint that is down, answers an error, or answers text
without a score stops with a ``RewardError`` naming the endpoint and quoting the answer.

- ``qwenvl``: asks for a 0-10 rating of alignment and quality after "Score:"; reward = score / 10.
- ``unifiedreward``: UnifiedReward's caption-alignment + quality question with a 1-5 "Final Score:";
  reward = score / 5.

Options: ``base_url`` (e.g. http://127.0.0.1:17140/v1, required), ``model`` (the served model name),
``api_key`` (default $OPENAI_API_KEY or "EMPTY"), ``timeout`` (120 s), ``max_concurrency`` (16),
``image_size`` (images resized to this square, 512; 0 keeps them), ``temperature`` (0).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from flow_grpo.images import to_pil
from flow_grpo.rewards.registry import RewardError, register

QWENVL_QUESTION = (
    "You are given a text prompt and an image generated from it. Rate how well the image matches the prompt "
    "(objects, counts, colours, positions, text) and its visual quality, as one number from 0 to 10. "
    "Answer with 'Score: <number>' on the last line.\nPrompt: {prompt}"
)
UNIFIEDREWARD_QUESTION = (
    "<image>\nYou are given a text caption and a generated image based on that caption. Your task is to evaluate "
    "this image based on two key criteria:\n1. Alignment with the Caption: Assess how well this image aligns with "
    "the provided caption. Consider the accuracy of depicted objects, their relationships, and attributes as "
    "described in the caption.\n2. Overall Image Quality: Examine the visual quality of this image, including "
    "clarity, detail preservation, color accuracy, and overall aesthetic appeal.\nBased on the above criteria, "
    "assign a score from 1 to 5 after 'Final Score:'.\nYour task is provided as follows:\nText Caption: [{prompt}]"
)


def _data_url(image, size: int) -> str:
    if size:
        image = image.resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class ChatQuestion:
    """What a VLM reward asks and how its answer is read: the last match of ``pattern`` in ``[low, high]``,
    divided by ``high``."""

    name: str
    question: str  # formatted with the image's prompt
    pattern: str
    low: float
    high: float


@dataclasses.dataclass
class ChatEndpoint:
    """The reward's ``reward_options``: where the VLM is served and how it is called."""

    base_url: str = ""
    model: str = ""
    api_key: str | None = None
    timeout: float = 120.0
    max_concurrency: int = 16
    image_size: int = 512
    temperature: float = 0.0


QWENVL = ChatQuestion("qwenvl", QWENVL_QUESTION, r"score\s*[:=]\s*(\d+(?:\.\d+)?)", 0.0, 10.0)
UNIFIEDREWARD = ChatQuestion("unifiedreward", UNIFIEDREWARD_QUESTION, r"final score\s*:\s*(\d+(?:\.\d+)?)", 1.0, 5.0)


def endpoint_from_options(ask: ChatQuestion, options: dict) -> ChatEndpoint:
    options = {k: v for k, v in options.items() if k != "device"}
    known = {f.name for f in dataclasses.fields(ChatEndpoint)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise RewardError(f"{ask.name}: unknown reward_options {unknown}; valid: {', '.join(sorted(known))}")
    return ChatEndpoint(**options)


def chat_scorer(ask_spec: ChatQuestion, endpoint: ChatEndpoint):
    """``fn(images, prompts, metadata)`` asking ``endpoint`` the question of ``ask_spec`` about each image."""
    name, low, high = ask_spec.name, ask_spec.low, ask_spec.high
    if not endpoint.base_url:
        raise RewardError(f"the {name} reward needs reward_options.{name}.base_url, an OpenAI-compatible endpoint such as http://127.0.0.1:17140/v1")
    url = endpoint.base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {endpoint.api_key or os.environ.get('OPENAI_API_KEY', 'EMPTY')}"}
    score_re = re.compile(ask_spec.pattern, re.IGNORECASE)
    session = requests.Session()

    def ask(prompt: str, image) -> float:
        body = {
            "model": endpoint.model,
            "temperature": endpoint.temperature,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": _data_url(image, endpoint.image_size)}},
                {"type": "text", "text": ask_spec.question.format(prompt=prompt)},
            ]}],
        }
        try:
            response = session.post(url, json=body, headers=headers, timeout=endpoint.timeout)
        except requests.RequestException as error:
            raise RewardError(f"{name}: endpoint {url} unreachable: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            raise RewardError(f"{name}: endpoint {url} answered HTTP {response.status_code}: {response.text[:300]!r}")
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RewardError(f"{name}: endpoint {url} answered something that is not a chat completion: {response.text[:300]!r}") from None
        matches = score_re.findall(text or "")
        if not matches:
            raise RewardError(f"{name}: no score in the answer of {url} for prompt {prompt!r}: {str(text)[:300]!r}")
        value = float(matches[-1])
        if not low <= value <= high:
            raise RewardError(f"{name}: score {value} outside [{low}, {high}] in the answer {str(text)[:200]!r}")
        return value / high

    def score(images, prompts, metadata):
        pil = to_pil(images)
        with ThreadPoolExecutor(max(1, min(endpoint.max_concurrency, len(pil)))) as pool:
            values = list(pool.map(ask, prompts, pil))
        return np.asarray(values), {}

    return score


@register("qwenvl")
def qwenvl(**options):
    return chat_scorer(QWENVL, endpoint_from_options(QWENVL, options))


@register("unifiedreward")
def unifiedreward(**options):
    return chat_scorer(UNIFIEDREWARD, endpoint_from_options(UNIFIEDREWARD, options))
