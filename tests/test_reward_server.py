"""The reward server and its client over real HTTP on loopback: load, faults, and bad input."""

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, load_script
from flow_grpo.reward_server import RewardClient, RewardServer, RewardServerError
from flow_grpo.reward_server.protocol import encode_image
from flow_grpo.rewards import build_reward, register

bench = load_script("scripts/bench_reward_server.py")

FLAKY = {"calls": 0}


@register("test_flaky_twice")
def _flaky(**_):
    def score(images, prompts, metadata):
        FLAKY["calls"] += 1
        if FLAKY["calls"] <= 2:
            raise RuntimeError("transient failure")
        return images.mean(dim=(1, 2, 3)).double().numpy(), {}

    return score


@pytest.fixture(scope="module")
def server():
    server = RewardServer(["brightness", "jpeg_compressibility", "test_flaky_twice"], workers=2,
                          limits={"max_images": 32, "max_pixels": 1024 * 1024, "max_body_bytes": 8 * 2**20}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server():
    server = RewardServer(["brightness"], token="s3cret-token").start()
    yield server
    server.stop()


def png_b64(width=8, height=8, colour=(128, 0, 0), fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def raw_request(url, method, path, body=b"", headers=None, parse=True):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest(method, path)
    for key, value in (headers or {}).items():
        connection.putheader(key, value)
    connection.endheaders()
    if body:
        connection.send(body)
    response = connection.getresponse()
    status, payload = response.status, response.read()
    connection.close()
    return status, json.loads(payload) if parse else payload


def raw_status_line(url, request_bytes):
    """Send bytes as they are (no client-side checks) and return the answer's status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request_bytes)
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def post(url, obj=None, body=None, headers=None):
    body = body if body is not None else json.dumps(obj).encode()
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    return raw_request(url, "POST", "/score", body, all_headers)


def good(n=2, **changes):
    request = {"reward": "brightness", "images": [png_b64() for _ in range(n)], "prompts": ["p"] * n}
    request.update(changes)
    return request


def test_scores_match_a_local_computation(server):
    client = RewardClient(server.url, chunk_size=3)
    images = torch.rand(7, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    scores, _ = client.score("brightness", images, ["a"] * 7)
    np.testing.assert_allclose(scores, bench.expected_brightness(images), rtol=0, atol=1e-12)
    scores, info = client.score("jpeg_compressibility", images, ["a"] * 7)
    local, local_info = build_reward("jpeg_compressibility")((images * 255).round() / 255, ["a"] * 7, [{}] * 7)
    np.testing.assert_allclose(scores, local, rtol=0, atol=1e-12)
    np.testing.assert_allclose(info["size_kb"].astype(float), local_info["size_kb"])
    health = client.health()
    assert health["status"] == "ok" and "brightness" in health["rewards"] and health["requests"]["ok"] >= 6


def test_jpeg_transport_is_close_but_lossy(server):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    scores, _ = RewardClient(server.url, image_format="jpeg").score("brightness", images, ["a"] * 4)
    np.testing.assert_allclose(scores, bench.expected_brightness(images), atol=0.02)


@pytest.mark.slow
def test_load_16_clients_every_answer_matches_its_request(server):
    result = bench.run_load(server.url, clients=16, requests_per_client=20, max_images=8, seed=3)
    assert result["answered"] == 320 and result["wrong"] == 0 and result["lost"] == 0


def test_5xx_is_retried_and_4xx_is_not(server):
    FLAKY["calls"] = 0
    client = RewardClient(server.url, backoff=0.05, deadline=30)
    scores, _ = client.score("test_flaky_twice", torch.full((2, 3, 8, 8), 0.5), ["a", "b"])
    assert client.retries == 2 and np.allclose(scores, 128 / 255)
    before = client.health()["requests"]["client_error"]
    with pytest.raises(RewardServerError, match="HTTP 404.*unknown reward 'nope'"):
        client.score("nope", torch.zeros(1, 3, 8, 8), ["a"])
    assert client.retries == 2  # not retried
    assert client.health()["requests"]["client_error"] == before + 1


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_down_server_past_the_deadline_gives_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    client = RewardClient(url, deadline=1.5, backoff=0.1)
    started = time.time()
    with pytest.raises(RewardServerError, match=rf"reward server {url} gave no answer within the 1.5 s deadline.*ConnectionError"):
        client.score("brightness", torch.zeros(1, 3, 8, 8), ["a"])
    assert time.time() - started < 5


SLOW_SERVER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from flow_grpo.rewards import register

    @register("slow_brightness")
    def slow(**_):
        def score(images, prompts, metadata):
            time.sleep(0.05)
            return images.mean(dim=(1, 2, 3)).double().numpy(), {{}}
        return score

    from flow_grpo.reward_server.__main__ import main
    sys.exit(main(["--rewards", "slow_brightness", "--port", "{port}", "--log-level", "WARNING"]))
    """
)


def start_server(script, port):
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(process.stdout.read().decode()[-2000:])


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_loses_no_reward(tmp_path):
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SLOW_SERVER.format(repo=REPO, port=port))
    process = start_server(script, port)
    images = torch.rand(60, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    client = RewardClient(f"http://127.0.0.1:{port}", chunk_size=2, max_in_flight=1, backoff=0.2, deadline=120)
    result = {}
    worker = threading.Thread(target=lambda: result.update(zip(("scores", "info"), client.score("slow_brightness", images, ["p"] * 60))))
    worker.start()
    time.sleep(0.6)  # a few chunks answered, most not
    process.kill()
    process.wait()
    time.sleep(1.0)
    process = start_server(script, port)  # restarted on the same port
    worker.join(timeout=120)
    process.kill()
    process.wait()
    assert not worker.is_alive()
    assert client.retries >= 1
    np.testing.assert_allclose(result["scores"], bench.expected_brightness(images), rtol=0, atol=1e-12)


class GarbageHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"<html>proxy says hi</html>" if self.path == "/score" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_200_with_garbage_is_a_clear_error():
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), GarbageHandler)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    try:
        client = RewardClient(f"http://127.0.0.1:{garbage.server_address[1]}")
        with pytest.raises(RewardServerError, match="not JSON.*proxy says hi"):
            client.score("brightness", torch.zeros(1, 3, 8, 8), ["a"])
    finally:
        garbage.shutdown()


def _huge_png():
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000), (1, 2, 3)).save(buffer, format="PNG")  # 4 M pixels, a few kB
    return base64.b64encode(buffer.getvalue()).decode()


def _truncated_png():
    data = base64.b64decode(png_b64(64, 64, (10, 200, 30)))
    return base64.b64encode(data[: len(data) // 2]).decode()


BAD_REQUESTS = [
    ("not json", dict(body=b"{this is not json"), 400, "not valid JSON"),
    ("empty body", dict(body=b""), 400, "not valid JSON"),
    ("json array", dict(obj=[1, 2]), 400, "must be a JSON object"),
    ("missing reward", dict(obj={"images": [], "prompts": []}), 400, "'reward'"),
    ("reward not a string", dict(obj=good(reward=5)), 400, "'reward' must be a string"),
    ("unknown reward", dict(obj=good(reward="nope")), 404, "unknown reward 'nope'"),
    ("unknown field", dict(obj=good(extra=1)), 400, "unknown fields ['extra']"),
    ("missing images", dict(obj={"reward": "brightness", "prompts": ["a"]}), 400, "'images'"),
    ("images not a list", dict(obj=good(images="abc")), 400, "'images' must be a list"),
    ("images empty", dict(obj=good(images=[], prompts=[])), 400, "'images' is empty"),
    ("image not a string", dict(obj=good(images=[123, png_b64()])), 400, "images[0] must be a base64 string"),
    ("bad base64", dict(obj=good(images=["@@@not base64@@@", png_b64()])), 400, "images[0] is not valid base64"),
    ("not an image", dict(obj=good(images=[png_b64(), base64.b64encode(b"hello world").decode()])), 400, "images[1] is not a readable PNG or JPEG"),
    ("truncated png", dict(obj=good(images=[_truncated_png()] * 2)), 400, "images[0] is not a readable PNG or JPEG"),
    ("gif", dict(obj=good(images=[png_b64(fmt="GIF")] * 2)), 400, "images[0] is GIF, not PNG or JPEG"),
    ("huge dimensions", dict(obj=good(images=[_huge_png()] * 2)), 413, "2000x2000 = 4000000 pixels, over the limit"),
    ("too many images", dict(obj=good(n=33)), 413, "33 images in one request, over the limit of 32"),
    ("mixed sizes", dict(obj=good(images=[png_b64(8, 8), png_b64(16, 16)])), 400, "one size"),
    ("missing prompts", dict(obj={"reward": "brightness", "images": [png_b64()]}), 400, "'prompts' must be a list of strings"),
    ("prompts wrong type", dict(obj=good(prompts=[1, 2])), 400, "'prompts' must be a list of strings"),
    ("length mismatch", dict(obj=good(prompts=["a"])), 400, "2 images but 1 prompts"),
    ("metadata not objects", dict(obj=good(metadata=["a", "b"])), 400, "'metadata' must be a list of objects"),
    ("metadata length", dict(obj=good(metadata=[{}])), 400, "2 images but 1 metadata entries"),
    ("options not an object", dict(obj=good(options=[1])), 400, "'options' must be an object"),
    ("options to a reward without options", dict(obj=good(options={"strict": True})), 400, "takes no options"),
    ("wrong content type", dict(obj=good(), headers={"Content-Type": "text/plain"}), 415, "Content-Type must be application/json"),
    # headers only: the server refuses before reading, and bytes it never reads would make its close a reset
    ("body over the limit", dict(body=b"", headers={"Content-Length": str(9 * 2**20)}), 413, "over the limit"),
]


@pytest.mark.parametrize("name,request_kwargs,status,message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_naming_the_problem(server, name, request_kwargs, status, message):
    got_status, payload = post(server.url, **request_kwargs)
    assert got_status == status, payload
    assert message in payload["error"], payload
    health_status, health = raw_request(server.url, "GET", "/health")
    assert health_status == 200 and health["status"] == "ok"


def test_protocol_level_errors(server):
    status, payload = raw_request(server.url, "POST", "/score", headers={"Content-Type": "application/json"})
    assert status == 411 and "Content-Length" in payload["error"]
    status, payload = raw_request(server.url, "GET", "/score")
    assert status == 405 and "POST" in payload["error"]
    status, payload = raw_request(server.url, "GET", "/admin")
    assert status == 404 and "/health" in payload["error"]
    # a malformed Content-Length never reaches the application: uvicorn's HTTP parser (h11) answers 400 itself
    # and closes. No body is sent: bytes left unread on the server's socket turn its close into a TCP reset,
    # which can overtake the answer (CI saw it once as ConnectionResetError).
    status_line = raw_status_line(server.url, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n")
    assert status_line.split()[1] == b"400", status_line
    assert raw_request(server.url, "GET", "/health")[0] == 200
    status, page = raw_request(server.url, "GET", "/docs", parse=False)  # FastAPI's interactive API page
    assert status == 200 and b"swagger" in page.lower()
    status, schema = raw_request(server.url, "GET", "/openapi.json")
    assert status == 200 and {"reward", "images", "prompts"} <= set(schema["components"]["schemas"]["ScoreRequest"]["required"])


def test_bearer_token(token_server):
    status, payload = post(token_server.url, good())
    assert status == 401 and "missing Authorization" in payload["error"]
    status, payload = post(token_server.url, good(), headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "wrong bearer token" in payload["error"]
    status, payload = post(token_server.url, good(), headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200 and len(payload["scores"]) == 2
    client = RewardClient(token_server.url, token="s3cret-token")
    assert client.score("brightness", torch.zeros(1, 3, 8, 8), ["a"])[0].tolist() == [0.0]
    with pytest.raises(RewardServerError, match="HTTP 401"):
        RewardClient(token_server.url).score("brightness", torch.zeros(1, 3, 8, 8), ["a"])


def test_remote_reward_through_multi_score(server):
    from flow_grpo.rewards import multi_score

    reward = multi_score({"brightness": 1.0}, {"brightness": {"server_url": server.url, "chunk_size": 2}})
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    columns, _ = reward(images, ["a"] * 5, [{}] * 5)
    np.testing.assert_allclose(columns["brightness"], bench.expected_brightness(images), atol=1e-12)


def test_cli_refuses_public_bind_without_token_and_unknown_rewards(capsys):
    from flow_grpo.reward_server.__main__ import main

    assert main(["--rewards", "brightness", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve 0.0.0.0 without a bearer token" in capsys.readouterr().err
    assert main(["--rewards", "brightnes"]) == 2
    assert "unknown reward(s) ['brightnes']" in capsys.readouterr().err
