"""The shapes world: renderer, prompt grammar, the analytic detector's accuracy on ground truth, the
geneval reward and the evaluation on it."""

import json
import os
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import REPO
from flow_grpo.geneval import prompts as P
from flow_grpo.geneval.metadata import TAGS, read_metadata, validate
from flow_grpo.geneval.scoring import Detection, filter_detections, relative_position, score_image
from flow_grpo.images import to_tensor
from flow_grpo.shapes.detector import ShapesDetector
from flow_grpo.shapes.evaluation import evaluate_images
from flow_grpo.shapes.grammar import all_metadata, balanced, split
from flow_grpo.shapes.render import BACKGROUND, GAP, PALETTE, SHAPES, render, sample_scene


def random_metadata(rng, tag):
    return rng.choice(all_metadata(tag))


@pytest.mark.slow
@pytest.mark.parametrize("tag", TAGS)
def test_detector_accuracy_on_rendered_ground_truth(tag):
    """Every tag, 150 random scenes: the detector + GenEval rules must call (nearly) all of them correct."""
    rng = random.Random(TAGS.index(tag))
    detector = ShapesDetector()
    correct = strict = 0
    n = 150
    for _ in range(n):
        meta = random_metadata(rng, tag)
        image = render(sample_scene(meta, rng))
        result = score_image(filter_detections(detector.detect([image])[0], meta), meta)
        correct += result["correct"]
        strict += result["strict_correct"]
    assert correct / n >= 0.99 and strict / n >= 0.99, (correct, strict)


def test_detector_finds_every_object_with_its_shape_colour_and_box():
    rng = random.Random(7)
    detector = ShapesDetector()
    total = hits = 0
    for _ in range(200):
        scene = sample_scene(random_metadata(rng, rng.choice(TAGS)), rng)
        found = detector.detect([render(scene)])[0]
        for shape, colour, cx, cy, size in scene:
            total += 1
            for det in found.get(shape, []):
                x0, y0, x1, y1 = det.box
                if det.color == colour and abs((x0 + x1) / 2 - cx) <= 1 and abs((y0 + y1) / 2 - cy) <= 1 and det.score > 0.99:
                    hits += 1
                    break
        assert sum(len(v) for v in found.values()) == len(scene)
    assert hits / total >= 0.99


def test_detector_on_noise_blobs_and_fused_objects():
    detector = ShapesDetector()
    assert detector.detect([Image.new("RGB", (32, 32), BACKGROUND)])[0] == {}
    # a few specks of colour: noise, not objects
    speckled = Image.new("RGB", (32, 32), BACKGROUND)
    for x, y in ((3, 3), (20, 7), (11, 25)):
        speckled.putpixel((x, y), PALETTE["red"])
    analysis = detector.analyse(speckled)
    assert analysis["detections"] == {} and analysis["noise_pixels"] == 3
    # two touching squares fuse into one wide object that matches no shape well
    fused = Image.new("RGB", (32, 32), BACKGROUND)
    draw = ImageDraw.Draw(fused)
    draw.rectangle([4, 10, 13, 19], fill=PALETTE["blue"])
    draw.rectangle([14, 10, 23, 19], fill=PALETTE["blue"])
    objects = [o for group in detector.detect([fused])[0].values() for o in group]
    assert len(objects) == 1 and objects[0].score < 0.9


def sample_metadata(rng: random.Random) -> dict:
    """A uniformly random tag, then a uniformly random prompt of it."""
    return rng.choice(all_metadata(rng.choice(TAGS)))


def test_scenes_satisfy_their_metadata():
    rng = random.Random(3)
    for _ in range(300):
        meta = sample_metadata(rng)
        scene = sample_scene(meta, rng)
        assert len(scene) == sum(req["count"] for req in meta["include"])
        for req in meta["include"]:
            objects = [o for o in scene if o[0] == req["class"] and ("color" not in req or o[1] == req["color"])]
            assert len(objects) >= req["count"]
        boxes = [(cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2) for _, _, cx, cy, s in scene]
        for i in range(len(boxes)):
            assert 0 <= boxes[i][0] and boxes[i][2] <= 32
            for j in range(i):
                a, b = boxes[i], boxes[j]
                assert a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]
        if meta["tag"] == "position":
            relation = meta["include"][1]["position"][0]
            reference = next(o for o in scene if o[0] == meta["include"][0]["class"])
            subject = next(o for o in scene if o[0] == meta["include"][1]["class"])
            box = lambda o: [o[2] - o[4] / 2, o[3] - o[4] / 2, o[2] + o[4] / 2, o[3] + o[4] / 2]  # noqa: E731
            assert relation in relative_position(Detection(box(subject)), Detection(box(reference)))


def test_grammar_and_committed_split():
    assert len(all_metadata("single_object")) == len(SHAPES)
    assert len(all_metadata("color_attr")) == len(SHAPES) * (len(SHAPES) - 1) * 10 * 9
    assert P.counting("cross", 3, "")["prompt"] == "three crosses"
    assert all_metadata("colors")[0]["prompt"] == "a red circle"
    train, test = split(0)
    held = {m["prompt"] for m in test if m["tag"] != "single_object"}
    assert held and not held & {m["prompt"] for m in train}
    assert {m["tag"] for m in test} == set(TAGS)
    committed_train = read_metadata(os.path.join(REPO, "dataset", "shapes", "train_metadata.jsonl"))
    committed_test = read_metadata(os.path.join(REPO, "dataset", "shapes", "test_metadata.jsonl"))
    assert [m["prompt"] for m in committed_test] == [m["prompt"] for m in test]
    assert [m["prompt"] for m in committed_train] == [m["prompt"] for m in balanced(train, 64, 0)]
    counts = {tag: sum(m["tag"] == tag for m in committed_train) for tag in TAGS}
    assert set(counts.values()) == {64}
    for m in committed_test + committed_train:
        validate(m)
    assert all(m["include"][0]["count"] in (2, 3, 4) for m in committed_test if m["tag"] == "counting")


def test_geneval_reward_with_the_shapes_backend():
    from flow_grpo.rewards import build_reward

    rng = random.Random(11)
    metas = [random_metadata(rng, tag) for tag in TAGS]
    images = to_tensor([render(sample_scene(m, rng)) for m in metas])
    fn = build_reward("geneval", backend="shapes")
    scores, info = fn(images, [m["prompt"] for m in metas], metas)
    np.testing.assert_array_equal(scores, np.ones(6))
    np.testing.assert_array_equal(info["correct"], np.ones(6))
    # the wrong prompt for each image scores lower
    wrong = [P.counting("circle", 4, "")] * 6
    assert np.all(fn(images, [m["prompt"] for m in wrong], wrong)[0] < 1)


def test_shapes_evaluation_on_ground_truth():
    rng = random.Random(5)
    test = read_metadata(os.path.join(REPO, "dataset", "shapes", "test_metadata.jsonl"))
    jobs = [(i, k) for i in range(len(test)) for k in range(2)]
    images = [render(sample_scene(test[i], rng)) for i, _ in jobs]
    result = evaluate_images(images, jobs, test)
    assert result["overall"] == 1.0 and result["detector_confidence"] == 1.0 and result["noise_share"] == 0.0
    assert result["layout_spread"] > 2.0  # random layouts vary
    # one layout repeated for every image of a prompt: spread 0
    repeated = [images[2 * i] for i, _ in jobs]
    assert evaluate_images(repeated, jobs, test)["layout_spread"] == 0.0


@pytest.mark.slow
def test_hacking_checks_see_colour_drift_smear_and_grown_objects():
    """The checks the detector's accuracy and confidence miss, on scenes built to show each: every object of the
    prompts that name no colour drawn red, scenes blurred, objects drawn 1.6x the world's largest size."""
    from PIL import ImageFilter

    from flow_grpo.shapes.evaluation import hacking_flags, names_no_colour

    rng = random.Random(11)
    test = read_metadata(os.path.join(REPO, "dataset", "shapes", "test_metadata.jsonl"))
    jobs = [(i, k) for i in range(len(test)) for k in range(4)]
    scenes = [sample_scene(test[i], rng) for i, _ in jobs]
    clean = evaluate_images([render(scene) for scene in scenes], jobs, test)
    assert clean["off_palette_share"] == 0.0 and clean["size_off_share"] == 0.0  # drawn without anti-aliasing, in range
    assert 8 <= clean["object_size"] <= 12 and clean["free_colour_tv"] < 0.12  # ~300 uniform draws: TV ~0.06
    assert sum(clean["free_colours"].values()) == pytest.approx(1.0)

    red = [[(shape, "red" if names_no_colour(test[i]) else colour, x, y, size) for shape, colour, x, y, size in scene]
           for scene, (i, _) in zip(scenes, jobs)]
    drifted = evaluate_images([render(scene) for scene in red], jobs, test)
    # all free objects red: TV = 1 - 1/10 (detected colours of a flat red are exact)
    assert drifted["free_colours"]["red"] == 1.0 and drifted["free_colour_tv"] == pytest.approx(0.9)
    assert drifted["overall"] == 1.0  # accuracy cannot see it: no prompt of those named a colour

    smeared = evaluate_images([render(scene).filter(ImageFilter.GaussianBlur(1.2)) for scene in scenes], jobs, test)
    assert smeared["off_palette_share"] > 0.2

    grown = [[(shape, colour, x, y, 1.6 * size) for shape, colour, x, y, size in scene] for scene in scenes]
    big = evaluate_images([render(scene) for scene in grown], jobs, test)
    assert big["object_size"] > 1.4 * clean["object_size"] and big["size_off_share"] > 0.5

    assert hacking_flags(clean, clean) == []
    assert [f.split(":")[0] for f in hacking_flags(clean, drifted)] == ["colour drift, no colour named (TV)"]
    assert "off-palette pixel share" in " ".join(hacking_flags(clean, smeared))
    assert "objects off the world's sizes" in " ".join(hacking_flags(clean, big))
    # a relative tolerance: the layout spread halved is flagged, a quarter less is not
    assert hacking_flags(clean, {**clean, "layout_spread": 0.4 * clean["layout_spread"]})[0].startswith("layout spread")
    assert hacking_flags(clean, {**clean, "layout_spread": 0.75 * clean["layout_spread"]}) == []


@pytest.fixture(scope="module")
def shipped_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(os.path.join(REPO, "models", "shapes-sd3", "vae")).eval()


@pytest.mark.slow
def test_the_worlds_ceiling_through_the_shipped_vae_is_at_least_097_on_every_tag(shipped_vae):
    """Scenes that satisfy every held-out prompt, decoded by the shipped VAE and scored like generated images:
    what a perfect model of this world can reach (the demo prints it beside base and trained)."""
    from flow_grpo.shapes.evaluation import vae_ceiling

    test = read_metadata(os.path.join(REPO, "dataset", "shapes", "test_metadata.jsonl"))
    ceiling = vae_ceiling(shipped_vae, test, n=16, seed=1)
    assert ceiling["images"] == 16 * len(test)
    assert min(ceiling["by_tag"].values()) >= 0.97, ceiling["by_tag"]
    assert ceiling["detector_confidence"] > 0.98 and ceiling["noise_share"] < 0.01


@pytest.mark.slow
def test_shipped_decoded_exemplars_are_the_generators_output(shipped_vae):
    from flow_grpo.shapes.detector import DECODED_EXEMPLARS
    from flow_grpo.shapes.exemplars import decoded_exemplars
    from flow_grpo.shapes.render import SHAPES

    fresh = decoded_exemplars(shipped_vae)
    with np.load(DECODED_EXEMPLARS, allow_pickle=False) as shipped:
        for shape in SHAPES:
            assert shipped[shape].shape == fresh[shape].shape and shipped[shape].shape[1:] == (8, 8)
            assert np.abs(shipped[shape].astype(np.float32) - fresh[shape].astype(np.float32)).max() < 0.01
            np.testing.assert_allclose(shipped[f"{shape}_aspect"], fresh[f"{shape}_aspect"], atol=1e-6)


def test_detector_uses_the_decoded_exemplars_and_names_a_missing_file(tmp_path):
    from flow_grpo.shapes.detector import crisp_exemplars

    crisp, _ = crisp_exemplars()
    assert all(len(ShapesDetector().exemplars[shape]) > len(crisp[shape]) for shape in SHAPES)
    with pytest.raises(FileNotFoundError, match="exemplars"):
        ShapesDetector(exemplars=str(tmp_path / "missing.npz"))


def test_compare_shapes_curve_and_table(tmp_path):
    """The comparison's curve sums the epochs' training minutes up to each evaluation and averages GenEval's six
    tags; its table gives the mean and spread over seeds and each run's sizes and checks."""
    from conftest import load_script

    from flow_grpo.shapes.evaluation import trainer_eval_curve

    compare = load_script("scripts/compare_shapes.py")
    tags = compare.TAGS
    rows = [{"epoch": 0, **{f"eval_geneval_tag_{t}": 0.0 for t in tags}},
            {"epoch": 1, "epoch_time_s": 30.0}, {"epoch": 2, "epoch_time_s": 90.0,
                                                 **{f"eval_geneval_tag_{t}": v for t, v in zip(tags, (0.6, 0.0, 0.0, 0.6, 0.0, 0.0))}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curve = trainer_eval_curve(str(tmp_path))
    assert curve["minutes"] == [0.0, 2.0] and curve["epochs"] == [0, 2]
    assert curve["accuracy"] == pytest.approx([0.0, 0.2])

    def report(overall, guidance=1.0):
        return {"overall": overall, "guidance": guidance, "by_tag": {t: overall for t in tags}, "epochs_trained": 10,
                "images_sampled": 1280, "optimizer_steps": 40, **{k: 0.5 for k in compare.CHECKS}}

    text = compare.table({"base (CFG 1)": report(0.1)}, {"NFT": [report(0.2), report(0.4)]})
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[3].count("|")
    assert "| NFT | 1 | 2 | **0.300** +- 0.100 |" in lines[3] and "| 10 | 1280 | 40 |" in lines[3]
    assert lines[2].startswith("| base (CFG 1) | 1 | - | **0.100** |")
    # the last column: the checks past their tolerance against the base of the same guidance
    assert lines[2].endswith("| - |") and lines[3].endswith("| none |")
    drifted = compare.table({"base (CFG 1)": report(0.1)}, {"NFT": [{**report(0.2), "free_colour_tv": 0.9}]}).splitlines()[3]
    assert drifted.endswith("| colour drift, no colour named (TV) |")
