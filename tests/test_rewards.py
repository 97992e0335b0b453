"""Each local scorer for real: OCR on rendered text, JPEG sizes, CLIP-based rewards on tiny random CLIPs,
VLM rewards against an OpenAI-compatible endpoint on loopback, and multi_score's weighting."""

import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from flow_grpo.images import to_tensor
from flow_grpo.rewards import RewardError, build_reward, multi_score
from flow_grpo.rewards.ocr import levenshtein, normalise, ocr_reward, target_text
from flow_grpo.tiny_reward_models import save_tiny_clip


def render(text: str, size: int = 512, font_size: int = 48) -> torch.Tensor:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((24, size // 2 - font_size), text, fill="black", font=ImageFont.load_default(size=font_size))
    return to_tensor([image])


# ---- OCR ------------------------------------------------------------------------------------------------


def reference_levenshtein(a, b):
    @functools.lru_cache(maxsize=None)
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@pytest.mark.parametrize("a,b", [("kitten", "sitting"), ("", "abc"), ("flaw", "lawn"), ("same", "same"), ("abcdef", "azced"), ("gumbo", "gambol")])
def test_levenshtein_against_the_recursive_definition(a, b):
    assert levenshtein(a, b) == reference_levenshtein(a, b) == levenshtein(b, a)


def test_ocr_rule():
    assert target_text('a poster that says "Spring Sale" in red') == "Spring Sale"
    assert target_text("a sign “Open 24h” and \"second\"") == "Open 24h"
    with pytest.raises(ValueError, match="no text between double quotes"):
        target_text("a photo of a cat")
    assert normalise(" Spring  Sale ") == "springsale"
    assert ocr_reward(["Big", "SPRING sale", "today"], "Spring Sale") == 1.0  # substring after normalising
    assert ocr_reward(["sprng sale"], "Spring Sale") == pytest.approx(1 - 1 / 10)
    assert ocr_reward(["completely different words"], "abc") == 0.0  # distance capped at the target length
    assert ocr_reward([], "Hello") == 0.0


@pytest.fixture(scope="module")
def ocr_fn():
    pytest.importorskip("rapidocr")
    return build_reward("ocr")


def test_ocr_reads_rendered_text(ocr_fn):
    prompts = ['a sign that says "Spring Sale 2026"'] * 3
    images = torch.cat([render("Spring Sale 2026"), render("Sprinq Sale"), render("Hello World")])
    scores, info = ocr_fn(images, prompts, [{}] * 3)
    assert scores[0] == 1.0, info["recognised"][0]
    assert 0 < scores[1] < 1.0 and scores[2] < scores[1], (scores, info["recognised"])
    blank = torch.ones(1, 3, 256, 256)
    assert ocr_fn(blank, prompts[:1], [{}])[0][0] == 0.0


# ---- JPEG --------------------------------------------------------------------------------------------------


def test_jpeg_flat_vs_noisy():
    flat = torch.full((1, 3, 64, 64), 0.5)
    noisy = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    images = torch.cat([flat, noisy])
    compressibility, info = build_reward("jpeg_compressibility")(images, ["a", "b"], [{}, {}])
    incompressibility, _ = build_reward("jpeg_incompressibility")(images, ["a", "b"], [{}, {}])
    assert compressibility[0] > compressibility[1]
    assert incompressibility[1] > 5 * incompressibility[0]
    np.testing.assert_allclose(compressibility, -incompressibility / 500)
    np.testing.assert_allclose(info["size_kb"], incompressibility)


# ---- CLIP-based --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(str(tmp_path_factory.mktemp("clip")), seed=0)


def images(n=4, seed=0, size=40):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_clipscore_and_pickscore_on_a_tiny_clip(tiny_clip):
    from flow_grpo.rewards.clip_common import ClipEmbedder

    prompts = ["a red circle", "a cat", "two dogs", "a blue square"]
    clip = build_reward("clipscore", model=tiny_clip, device="cpu")
    scores, _ = clip(images(), prompts, [{}] * 4)
    assert scores.shape == (4,) and np.all(np.abs(scores) <= 1.0 + 1e-6)
    again, _ = clip(images(), prompts, [{}] * 4)
    assert np.array_equal(scores, again)  # deterministic
    assert not np.allclose(scores, scores[0])  # depends on the input

    embedder = ClipEmbedder(tiny_clip, device="cpu")
    manual = (embedder.images(images()) * embedder.texts(prompts)).sum(-1).double().numpy()
    np.testing.assert_allclose(scores, manual, rtol=1e-6)
    pick, info = build_reward("pickscore", model=tiny_clip, processor=tiny_clip, device="cpu")(images(), prompts, [{}] * 4)
    np.testing.assert_allclose(pick, embedder.logit_scale * manual / 26, rtol=1e-5)
    np.testing.assert_allclose(info["raw"], embedder.logit_scale * manual, rtol=1e-5)


def test_image_similarity(tiny_clip, tmp_path):
    reference = images(1, seed=7)
    Image.fromarray((reference[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "ref.png")
    fn = build_reward("image_similarity", model=tiny_clip, device="cpu", reference_root=str(tmp_path))
    batch = torch.cat([(reference * 255).round() / 255, images(1, seed=8)])
    scores, _ = fn(batch, ["a", "b"], [{"reference_image": "ref.png"}] * 2)
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] < scores[0]
    with pytest.raises(ValueError, match="no 'reference_image' field"):
        fn(batch, ["a", "b"], [{}, {}])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_aesthetic_head(tiny_clip, tmp_path, suffix):
    from safetensors.torch import save_file

    from flow_grpo.rewards.aesthetic import AestheticHead
    from flow_grpo.rewards.clip_common import ClipEmbedder

    torch.manual_seed(1)
    head = AestheticHead(16).eval()
    path = str(tmp_path / f"head{suffix}")
    save_file(head.state_dict(), path) if suffix == ".safetensors" else torch.save(head.state_dict(), path)
    scores, _ = build_reward("aesthetic", head=path, model=tiny_clip, device="cpu")(images(), ["a"] * 4, [{}] * 4)
    with torch.no_grad():
        expected = head(ClipEmbedder(tiny_clip, device="cpu").images(images())).double().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    with pytest.raises(RewardError, match="needs reward_options.aesthetic.head"):
        build_reward("aesthetic", model=tiny_clip)


def test_multi_score_weights_and_columns(tiny_clip):
    reward = multi_score({"clipscore": 0.3, "brightness": 0.7}, {"clipscore": {"model": tiny_clip, "device": "cpu"}})
    batch = images()
    columns, _ = reward(batch, ["a cat"] * 4, [{}] * 4)
    assert list(columns) == ["avg", "clipscore", "brightness"]
    np.testing.assert_allclose(columns["brightness"], batch.mean(dim=(1, 2, 3)).double().numpy())
    np.testing.assert_allclose(columns["avg"], 0.3 * columns["clipscore"] + 0.7 * columns["brightness"])


def test_missing_optional_package_and_models_are_named():
    try:
        import ImageReward  # noqa: F401
    except ImportError:
        with pytest.raises(RewardError, match="pip install image-reward"):
            build_reward("imagereward")
    with pytest.raises(RewardError, match="cannot build reward 'clipscore'.*no_such_clip"):
        build_reward("clipscore", model="/nonexistent/no_such_clip")
    with pytest.raises(RewardError, match="deqa .* runs behind a reward server"):
        build_reward("deqa")


# ---- VLM rewards over an OpenAI-compatible endpoint --------------------------------------------------------


class FakeVLM(BaseHTTPRequestHandler):
    """Answers like a served VLM would: the score depends on the image (bright or dark) and the prompt."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][0]["content"]
        question = content[1]["text"]
        import base64
        import io

        image = Image.open(io.BytesIO(base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1])))
        bright = np.asarray(image).mean() > 127
        if "garbage" in question:
            text = "I cannot rate this."
        elif "Final Score" in question:
            text = f"The image is fine.\nFinal Score: {4 if bright else 2}"
        else:
            text = f"Reasoning...\nScore: {8 if bright else 3}"
        answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture(scope="module")
def vlm_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_vlm_rewards_parse_scores(vlm_url):
    batch = torch.cat([torch.ones(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)])
    scores, _ = build_reward("unifiedreward", base_url=vlm_url, model="UnifiedReward")(batch, ["a", "b"], [{}, {}])
    np.testing.assert_allclose(scores, [4 / 5, 2 / 5])
    scores, _ = build_reward("qwenvl", base_url=vlm_url, model="Qwen2.5-VL")(batch, ["a", "b"], [{}, {}])
    np.testing.assert_allclose(scores, [0.8, 0.3])


def test_vlm_rewards_name_unparseable_answers_and_dead_endpoints(vlm_url):
    with pytest.raises(RewardError, match=r"no score in the answer .* for prompt 'garbage please': 'I cannot rate this.'"):
        build_reward("qwenvl", base_url=vlm_url)(torch.ones(1, 3, 8, 8), ["garbage please"], [{}])
    with pytest.raises(RewardError, match="unreachable"):
        build_reward("qwenvl", base_url="http://127.0.0.1:9/v1", timeout=2)(torch.ones(1, 3, 8, 8), ["a"], [{}])
    with pytest.raises(RewardError, match="needs reward_options.unifiedreward.base_url"):
        build_reward("unifiedreward")
