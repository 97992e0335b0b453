"""Load test of the reward server: concurrent clients, mixed request sizes, every answer checked.

Starts a server on loopback hosting the ``brightness`` reward (whose right answer the client can compute:
the mean of the PNG-quantised image), then ``--clients`` threads each send ``--requests`` requests of 1 to
``--max-images`` images of random sizes. Prints requests/s, images/s, p50/p99 latency, and how many answers
were wrong or lost (both must be 0).

    python scripts/bench_reward_server.py [--clients 16] [--requests 100] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import numpy as np
import torch


def expected_brightness(images: torch.Tensor) -> np.ndarray:
    """What the server computes: the mean of the image after 8-bit quantisation (PNG is lossless)."""
    return ((images * 255).round().clamp(0, 255) / 255).mean(dim=(1, 2, 3)).double().numpy()


def run_load(url: str, clients: int, requests_per_client: int, max_images: int = 8, seed: int = 0, token=None) -> dict:
    from flow_grpo.reward_server import RewardClient

    latencies, wrong, lost, images_sent = [], [0], [0], [0]
    lock = threading.Lock()

    def client_thread(index: int):
        rng = random.Random(seed * 1000 + index)
        client = RewardClient(url, token=token, chunk_size=max_images, deadline=120, max_in_flight=1)
        for r in range(requests_per_client):
            n = rng.randint(1, max_images)
            size = rng.choice([16, 32, 48, 64])
            generator = torch.Generator().manual_seed(seed * 10**6 + index * 1000 + r)
            images = torch.rand(n, 3, size, size, generator=generator) * rng.random()
            prompts = [f"client {index} request {r} image {i}" for i in range(n)]
            started = time.perf_counter()
            try:
                scores, _ = client.score("brightness", images, prompts)
            except Exception:  # noqa: BLE001 - counted as lost
                with lock:
                    lost[0] += 1
                continue
            elapsed = time.perf_counter() - started
            ok = scores.shape == (n,) and np.allclose(scores, expected_brightness(images), rtol=0, atol=1e-9)
            with lock:
                latencies.append(elapsed)
                images_sent[0] += n
                wrong[0] += 0 if ok else 1

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": clients * requests_per_client,
        "answered": len(latencies),
        "wrong": wrong[0],
        "lost": lost[0],
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "images_per_s": images_sent[0] / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    from flow_grpo.reward_server import RewardServer

    server = RewardServer(["brightness"], workers=args.workers).start()
    try:
        result = run_load(server.url, args.clients, args.requests, args.max_images)
    finally:
        server.stop()
    result["server_workers"] = args.workers
    print(f"{result['clients']} clients x {args.requests} requests (1-{args.max_images} images of 16-64 px) "
          f"against {args.workers} server worker(s) on loopback")
    print(f"answered {result['answered']}/{result['requests']}, wrong {result['wrong']}, lost {result['lost']}")
    print(f"{result['requests_per_s']:.0f} requests/s, {result['images_per_s']:.0f} images/s, "
          f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
