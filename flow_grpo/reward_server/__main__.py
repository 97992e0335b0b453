"""Serve registered rewards over HTTP.

    python -m flow_grpo.reward_server --rewards ocr,pickscore --port 18085 --workers 2 --devices 0,1
    FLOW_GRPO_REWARD_TOKEN=secret python -m flow_grpo.reward_server --rewards geneval --host 0.0.0.0 --port 18085

Binds 127.0.0.1 unless told otherwise; a non-loopback address needs a bearer token (``--token`` or, better,
the FLOW_GRPO_REWARD_TOKEN environment variable, which does not show in the process list).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from flow_grpo.reward_server.server import DEFAULT_LIMITS, RewardServer
from flow_grpo.rewards.registry import RewardError, available_rewards

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_devices(text: str) -> list[str]:
    devices = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        devices.append(f"cuda:{part}" if part.isdigit() else part)
    return devices or ["cpu"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewards", required=True, help="comma-separated reward names")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18085)
    parser.add_argument("--workers", type=int, default=1, help="model copies; devices are dealt round-robin")
    parser.add_argument("--devices", default="cpu", help="e.g. 0,1 (CUDA indices) or cpu")
    parser.add_argument("--token", default=None, help="bearer token (default: $FLOW_GRPO_REWARD_TOKEN)")
    parser.add_argument("--allow-no-token", action="store_true", help="serve a non-loopback address without a token")
    parser.add_argument("--reward-options", default="{}", help='JSON, e.g. {"pickscore": {"model": "/models/pickscore"}}')
    parser.add_argument("--max-images", type=int, default=DEFAULT_LIMITS["max_images"])
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_LIMITS["max_body_bytes"] / 2**20)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_LIMITS["max_pixels"])
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    token = args.token or os.environ.get("FLOW_GRPO_REWARD_TOKEN") or None
    if args.host not in LOOPBACK and token is None and not args.allow_no_token:
        print(f"error: refusing to serve {args.host} without a bearer token; set FLOW_GRPO_REWARD_TOKEN "
              "(or pass --allow-no-token on a trusted network)", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    unknown = [n for n in names if n not in available_rewards()]
    if unknown:
        print(f"error: unknown reward(s) {unknown}; valid: {', '.join(available_rewards())}", file=sys.stderr)
        return 2
    try:
        options = json.loads(args.reward_options)
        if not isinstance(options, dict):
            raise ValueError("not an object")
    except ValueError as error:
        print(f"error: --reward-options is not a JSON object ({error})", file=sys.stderr)
        return 2
    limits = {"max_images": args.max_images, "max_body_bytes": int(args.max_body_mb * 2**20), "max_pixels": args.max_pixels}
    try:
        server = RewardServer(names, args.host, args.port, args.workers, parse_devices(args.devices), token, options, limits)
    except (RewardError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"reward server: {', '.join(names)} on {server.url} ({args.workers} worker(s), auth {'on' if token else 'off'}; "
          f"API page {server.url}/docs)", flush=True)
    try:
        server.serve_forever()  # until SIGINT / SIGTERM (uvicorn finishes the requests in flight)
    finally:
        server.socket.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
