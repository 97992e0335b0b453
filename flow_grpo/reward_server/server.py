"""An HTTP server that hosts registered rewards (JSON protocol, see protocol.py).

Each of ``workers`` workers owns its own copy of every hosted reward, built on its device (devices are dealt
round-robin). A request is parsed and checked in its connection thread, then runs on the next free worker.
Bad requests get a 4xx JSON error naming the problem; a reward that fails gets a 500; the server keeps
serving either way. ``GET /health`` lists the rewards and the request counts and latencies.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flow_grpo.reward_server.protocol import ProtocolError, jsonable_scores, parse_request
from flow_grpo.rewards.registry import build_reward

LOG = logging.getLogger("flow_grpo.reward_server")

DEFAULT_LIMITS = {
    "max_body_bytes": 256 * 1024 * 1024,
    "max_images": 256,
    "max_pixels": 4096 * 4096,
}


class Worker:
    """One copy of every hosted reward, on one device."""

    def __init__(self, index: int, device: str, reward_names, reward_options: dict):
        self.index = index
        self.device = device
        self.functions = {}
        for name in reward_names:
            options = dict(reward_options.get(name, {}))
            options.setdefault("device", device)
            self.functions[name] = build_reward(name, **options)
        self.takes_options = {
            name: "options" in inspect.signature(fn).parameters for name, fn in self.functions.items()
        }

    def score(self, name, images, prompts, metadata, options):
        fn = self.functions[name]
        if options and not self.takes_options[name]:
            raise ProtocolError(f"reward {name!r} takes no options, got {sorted(options)}")
        if self.takes_options[name]:
            return fn(images, prompts, metadata, options=options)
        return fn(images, prompts, metadata)


class RewardServer:
    def __init__(self, reward_names, host="127.0.0.1", port=0, workers=1, devices=("cpu",), token=None,
                 reward_options=None, limits=None):
        self.reward_names = list(reward_names)
        if not self.reward_names:
            raise ValueError("no rewards to host")
        self.token = token or None
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        reward_options = reward_options or {}
        devices = list(devices) or ["cpu"]
        self.workers = [Worker(i, devices[i % len(devices)], self.reward_names, reward_options) for i in range(workers)]
        self.idle: queue.Queue[Worker] = queue.Queue()
        for worker in self.workers:
            self.idle.put(worker)
        self.counts: Counter = Counter()
        self.latencies_ms: deque = deque(maxlen=2000)
        self.stats_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self._thread = None

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    # ---- lifecycle ----
    def serve_forever(self):
        LOG.info("serving %s on %s with %d worker(s)", ", ".join(self.reward_names), self.url, len(self.workers))
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self):
        """Serve in a background thread (tests, benchmarks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="reward-server", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- bookkeeping ----
    def record(self, status: int, started: float):
        with self.stats_lock:
            self.counts["total"] += 1
            self.counts["ok" if status < 400 else "client_error" if status < 500 else "server_error"] += 1
            self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def health(self) -> dict:
        with self.stats_lock:
            latencies = sorted(self.latencies_ms)
            counts = dict(self.counts)

        def pct(p):
            return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else None

        return {
            "status": "ok",
            "rewards": self.reward_names,
            "workers": len(self.workers),
            "devices": [w.device for w in self.workers],
            "requests": {k: counts.get(k, 0) for k in ("total", "ok", "client_error", "server_error")},
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
            "auth": self.token is not None,
        }

    def authorised(self, header: str | None) -> tuple[bool, str]:
        if self.token is None:
            return True, ""
        if not header:
            return False, "missing Authorization: Bearer <token> header"
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return False, "wrong bearer token"
        return True, ""

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # seconds to wait on a slow or stalled client

            def log_message(self, fmt, *args):  # route http.server's own messages to logging
                LOG.debug("%s " + fmt, self.address_string(), *args)

            def _send(self, status: int, payload: dict, started: float, detail: str = ""):
                body = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                server.record(status, started)
                LOG.info("%s %s %d %.1fms %s", self.command, self.path, status, (time.perf_counter() - started) * 1000, detail)

            def _error(self, status: int, message: str, started: float):
                # the body may be unread: close rather than parse its rest as the next request
                self.close_connection = True
                self._send(status, {"error": message}, started, message)

            def do_GET(self):
                started = time.perf_counter()
                if self.path.split("?")[0] == "/health":
                    self._send(200, server.health(), started)
                elif self.path.split("?")[0] == "/score":
                    self._error(405, "use POST for /score", started)
                else:
                    self._error(404, f"no such endpoint {self.path!r}; endpoints: GET /health, POST /score", started)

            def do_POST(self):
                started = time.perf_counter()
                if self.path.split("?")[0] != "/score":
                    self._error(404, f"no such endpoint {self.path!r}; endpoints: GET /health, POST /score", started)
                    return
                ok, why = server.authorised(self.headers.get("Authorization"))
                if not ok:
                    self._discard_body()
                    self._error(401, why, started)
                    return
                length = self.headers.get("Content-Length")
                if length is None:
                    self._error(411, "Content-Length header required", started)
                    return
                try:
                    length = int(length)
                    if length < 0:
                        raise ValueError
                except ValueError:
                    self._error(400, f"bad Content-Length {self.headers.get('Content-Length')!r}", started)
                    return
                if length > server.limits["max_body_bytes"]:
                    self._error(413, f"body of {length} bytes, over the limit of {server.limits['max_body_bytes']}", started)
                    return
                content_type = self.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
                body = self.rfile.read(length)
                if len(body) < length:
                    self._error(400, f"body ended after {len(body)} of {length} bytes", started)
                    return
                if content_type != "application/json":
                    self._error(415, f"Content-Type must be application/json, got {content_type!r}", started)
                    return
                try:
                    request = parse_request(body, server.workers[0].functions, server.limits)
                except ProtocolError as error:
                    self._error(error.status, str(error), started)
                    return
                worker = server.idle.get()
                try:
                    scores, info = worker.score(
                        request["reward"], request["images"], request["prompts"], request["metadata"], request["options"]
                    )
                    payload = jsonable_scores(request["reward"], scores, info, len(request["prompts"]))
                except ProtocolError as error:
                    self._error(error.status, str(error), started)
                    return
                except Exception as error:  # noqa: BLE001 - any reward failure is the server's 500, and it carries on
                    LOG.exception("reward %s failed", request["reward"])
                    self._error(500, f"reward {request['reward']!r} failed: {type(error).__name__}: {error}", started)
                    return
                finally:
                    server.idle.put(worker)
                self._send(200, payload, started, f"reward={request['reward']} images={len(request['prompts'])} worker={worker.index}")

            def _discard_body(self):
                try:
                    length = int(self.headers.get("Content-Length", 0))
                except ValueError:
                    return
                if 0 < length <= server.limits["max_body_bytes"]:
                    self.rfile.read(length)
                else:
                    self.close_connection = True

        return Handler
