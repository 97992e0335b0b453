"""An HTTP server that hosts registered rewards, on FastAPI and uvicorn (the JSON protocol of protocol.py).

Each of ``workers`` workers owns its own copy of every hosted reward, built on its device (devices are dealt
round-robin); a request runs on the next free worker, in FastAPI's thread pool. The request body is a
pydantic model (:class:`ScoreRequest`); what a type cannot say (an unknown reward, lengths that disagree,
images that are not PNG or JPEG, the limits) is checked in ``protocol.py``. Bad requests get a 4xx JSON error
``{"error": ...}`` naming the problem; a reward that fails gets a 500; the server keeps serving either way.
``GET /health`` lists the rewards and the request counts and latencies; ``GET /docs`` is FastAPI's interactive
page of the API. Headers are checked before the body is read (token 401, Content-Length 411 / 413,
Content-Type 415), so an oversized or unauthorised body is never taken in.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import queue
import socket
import threading
import time
from collections import Counter, deque

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.exceptions import HTTPException

from flow_grpo.reward_server.protocol import ProtocolError, check_request, jsonable_scores
from flow_grpo.rewards.registry import build_reward

LOG = logging.getLogger("flow_grpo.reward_server")

DEFAULT_LIMITS = {
    "max_body_bytes": 256 * 1024 * 1024,
    "max_images": 256,
    "max_pixels": 4096 * 4096,
}
ENDPOINTS = "endpoints: GET /health, POST /score"


class ScoreRequest(BaseModel):
    """``POST /score``: images as base64 PNG or JPEG, one prompt (and optionally one metadata object) each."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reward: StrictStr
    images: list[StrictStr]
    prompts: list[StrictStr]
    metadata: list[dict] | None = None
    options: dict | None = None


class ScoreResponse(BaseModel):
    scores: list[float | None]  # null for a NaN or infinite score
    info: dict


# what each field must be, for the error message of a body whose types are wrong (pydantic's loc -> message)
FIELD_RULES = {
    "reward": "'reward' must be a string",
    "images": "'images' must be a list",
    "prompts": "'prompts' must be a list of strings, one per image",
    "metadata": "field 'metadata' must be a list of objects, one per image",
    "options": "'options' must be an object",
}


def validation_message(errors) -> str:
    """The protocol's message for the first of pydantic's errors on a ``ScoreRequest`` body."""
    error = errors[0]
    kind, loc = error.get("type", ""), [part for part in error.get("loc", ()) if part != "body"]
    if kind == "json_invalid" or (kind == "missing" and not loc):
        return f"body is not valid JSON ({error.get('msg', '')})"
    if not loc:
        return f"body must be a JSON object, got {type(error.get('input')).__name__}"
    field = str(loc[0])
    if kind == "extra_forbidden":
        unknown = sorted(str(e["loc"][-1]) for e in errors if e.get("type") == "extra_forbidden")
        return f"unknown fields {unknown}; valid: reward, images, prompts, metadata, options"
    if kind == "missing":
        what = {"reward": "a string", "images": "a list of base64 images"}.get(field, "")
        return f"field {field!r} ({what}) is missing" if what else f"{FIELD_RULES.get(field, field)} (missing)"
    if field == "images" and len(loc) > 1:
        return f"images[{loc[1]}] must be a base64 string, got {type(error.get('input')).__name__}"
    rule = FIELD_RULES.get(field, f"field {field!r} is malformed")
    return f"{rule}, got {type(error.get('input')).__name__}" if len(loc) == 1 else rule


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
        self.takes_options = {name: "options" in inspect.signature(fn).parameters for name, fn in self.functions.items()}

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
        self.app = self._make_app()
        # bound now, so that port 0 has its number before serving (and a restarted server may take the port again)
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.uvicorn = None
        self._thread = None

    @property
    def address(self) -> tuple[str, int]:
        return self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    # ---- lifecycle ----
    def _make_uvicorn(self):
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_keep_alive=60)
        self.uvicorn = uvicorn.Server(config)
        return self.uvicorn

    def serve_forever(self):
        """Serve until SIGINT or SIGTERM (uvicorn's handlers) or :meth:`stop`."""
        LOG.info("serving %s on %s with %d worker(s)", ", ".join(self.reward_names), self.url, len(self.workers))
        self._make_uvicorn().run(sockets=[self.socket])

    def start(self):
        """Serve in a background thread (tests, benchmarks); returns self once the server answers."""
        server = self._make_uvicorn()
        server.install_signal_handlers = lambda: None  # not the main thread
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self.socket]}, name="reward-server", daemon=True)
        self._thread.start()
        deadline = time.time() + 30
        while not server.started and time.time() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError(f"the reward server on {self.url} did not start")
        return self

    def stop(self):
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

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

    def header_problem(self, request: Request) -> tuple[int, str] | None:
        """What is wrong with a ``POST /score``'s headers, before its body is read: ``(status, message)``."""
        ok, why = self.authorised(request.headers.get("authorization"))
        if not ok:
            return 401, why
        length = request.headers.get("content-length")
        if length is None:
            return 411, "Content-Length header required"
        if not length.isdigit():
            return 400, f"bad Content-Length {length!r}"
        if int(length) > self.limits["max_body_bytes"]:
            return 413, f"body of {length} bytes, over the limit of {self.limits['max_body_bytes']}"
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            return 415, f"Content-Type must be application/json, got {content_type!r}"
        return None

    def _make_app(self) -> FastAPI:
        server = self
        app = FastAPI(title="flow_grpo reward server", description="Rewards by name over JSON (flow_grpo/reward_server/protocol.py).")

        def error(status: int, message: str) -> JSONResponse:
            # a body the server did not read cannot start the connection's next request: close it
            return JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"} if status in (401, 411, 413, 415) else None)

        @app.middleware("http")
        async def check_and_count(request: Request, call_next):
            started = time.perf_counter()
            if request.method == "POST" and request.url.path == "/score":
                problem = server.header_problem(request)
                if problem is not None:
                    response = error(*problem)
                    server.record(response.status_code, started)
                    LOG.info("POST /score %d %s", response.status_code, problem[1])
                    return response
            response = await call_next(request)
            server.record(response.status_code, started)
            LOG.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code, (time.perf_counter() - started) * 1000)
            return response

        @app.exception_handler(HTTPException)
        async def http_error(request: Request, exc: HTTPException):
            if exc.status_code == 405 and request.url.path == "/score":
                return error(405, "use POST for /score")
            if exc.status_code == 404:
                return error(404, f"no such endpoint {request.url.path!r}; {ENDPOINTS}")
            return error(exc.status_code, str(exc.detail))

        @app.exception_handler(RequestValidationError)
        async def bad_body(request: Request, exc: RequestValidationError):
            return error(400, validation_message(exc.errors()))

        @app.get("/health")
        def health() -> dict:
            return server.health()

        # the answer is built by protocol.jsonable_scores; ScoreResponse documents it (/docs) without re-validating it
        @app.post("/score", responses={200: {"model": ScoreResponse}})
        def score(body: ScoreRequest):
            try:
                request = check_request(body.model_dump(), server.workers[0].functions, server.limits)
            except ProtocolError as problem:
                return error(problem.status, str(problem))
            worker = server.idle.get()
            try:
                scores, info = worker.score(request["reward"], request["images"], request["prompts"], request["metadata"],
                                            request["options"])
                return JSONResponse(jsonable_scores(request["reward"], scores, info, len(request["prompts"])))
            except ProtocolError as problem:
                return error(problem.status, str(problem))
            except Exception as failure:  # noqa: BLE001 - any reward failure is the server's 500, and it carries on
                LOG.exception("reward %s failed", request["reward"])
                return error(500, f"reward {request['reward']!r} failed: {type(failure).__name__}: {failure}")
            finally:
                server.idle.put(worker)

        return app
