"""Any reward, computed by a reward server: give its options a ``server_url``.

    config.reward_fn = {"geneval": 1.0}
    config.reward_options = {"geneval": {"server_url": "http://127.0.0.1:18085"}}

Options: ``server_url`` (required), ``server_reward`` (the name on the server, default the same name),
``token`` (default $FLOW_GRPO_REWARD_TOKEN), ``chunk_size`` (64), ``image_format`` ("png" or "jpeg"),
``deadline`` (seconds of retrying before giving up, 900), ``read_timeout`` (300), ``request_options``
(forwarded as the request's ``options``).
"""

from __future__ import annotations

import os

from flow_grpo.rewards.registry import RewardError, register

CLIENT_OPTIONS = ("chunk_size", "image_format", "deadline", "read_timeout", "connect_timeout", "max_in_flight", "backoff")


def remote_reward(name: str, server_url: str, server_reward: str = "", token: str | None = None, request_options=None, **options):
    from flow_grpo.reward_server.client import RewardClient

    unknown = set(options) - set(CLIENT_OPTIONS) - {"device"}
    if unknown:
        raise RewardError(f"remote reward {name!r}: unknown options {sorted(unknown)}; valid: {', '.join(CLIENT_OPTIONS)}")
    client = RewardClient(
        server_url, token=token or os.environ.get("FLOW_GRPO_REWARD_TOKEN"),
        **{k: v for k, v in options.items() if k in CLIENT_OPTIONS},
    )
    target = server_reward or name

    def score(images, prompts, metadata):
        return client.score(target, images, prompts, metadata, dict(request_options or {}))

    score.client = client
    return score


@register("deqa")
def deqa(**_):
    raise RewardError(
        "deqa (DeQA-Score, an image-quality VLM) runs behind a reward server: set "
        "config.reward_options = {'deqa': {'server_url': 'http://HOST:PORT'}}"
    )
