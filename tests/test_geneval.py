"""GenEval: the scoring rules on hand-made detections, metadata checks, prompt grammar, the transformers
backend on tiny random models, the reward, and a generate -> evaluate -> summary round trip on CPU."""

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, load_script
from flow_grpo.geneval import prompts as P
from flow_grpo.geneval.metadata import MetadataError, read_metadata, validate
from flow_grpo.geneval.scoring import (
    Detection,
    evaluate_official,
    evaluate_strict,
    filter_detections,
    partial_score,
    relative_position,
    score_image,
)

generate = load_script("geneval/generation/generate.py")
evaluate_script = load_script("geneval/evaluation/evaluate.py")
summary_script = load_script("geneval/evaluation/summary.py")


def det(x, y, w=10, h=10, score=0.99, color=None):
    return Detection([x, y, x + w, y + h], score, color=color)


# ---- rules ---------------------------------------------------------------------------------------------------


def test_single_and_two_objects():
    meta = P.two_object("cat", "dog")
    assert evaluate_official({"cat": [det(0, 0)], "dog": [det(50, 50)]}, meta)[0]
    ok, reason = evaluate_official({"cat": [det(0, 0)]}, meta)
    assert not ok and "expected dog>=1, found 0" in reason
    assert evaluate_official({"cat": [det(0, 0)]}, P.single_object("cat"))[0]


def test_counting_official_strict_and_exclude():
    meta = P.counting("cat", 3)  # include 3, exclude 4
    three = {"cat": [det(20 * i, 0) for i in range(3)]}
    four = {"cat": [det(20 * i, 0) for i in range(4)]}
    two = {"cat": [det(20 * i, 0) for i in range(2)]}
    assert evaluate_official(three, meta)[0] and evaluate_strict(three, meta)[0]
    ok, reason = evaluate_official(four, meta)
    assert not ok and "expected cat<4, found 4" in reason  # official: at least 3, but the exclude forbids 4
    assert not evaluate_official(two, meta)[0] and not evaluate_strict(two, meta)[0]
    # without an exclude the official rule only asks for "at least", the strict one for "exactly"
    meta_no_exclude = {k: v for k, v in meta.items() if k != "exclude"}
    assert evaluate_official(four, meta_no_exclude)[0] and not evaluate_strict(four, meta_no_exclude)[0]
    # two_object: a second cat is fine officially, not strictly
    assert evaluate_official({"cat": [det(0, 0), det(30, 0)], "dog": [det(60, 0)]}, P.two_object("cat", "dog"))[0]
    assert not evaluate_strict({"cat": [det(0, 0), det(30, 0)], "dog": [det(60, 0)]}, P.two_object("cat", "dog"))[0]


def test_colour_rules_use_the_first_count_objects():
    meta = P.colors("car", "red")
    assert evaluate_official({"car": [det(0, 0, color="red")]}, meta)[0]
    ok, reason = evaluate_official({"car": [det(0, 0, color="blue")]}, meta)
    assert not ok and "expected red car>=1, found 0 red; and 1 blue" in reason
    # officially only the most confident car is checked; strictly there must be exactly one
    two_cars = {"car": [det(0, 0, color="red"), det(40, 0, color="blue")]}
    assert evaluate_official(two_cars, meta)[0] and not evaluate_strict(two_cars, meta)[0]
    attr = P.color_attr("car", "red", "bus", "green")
    assert evaluate_official({"car": [det(0, 0, color="red")], "bus": [det(40, 0, color="green")]}, attr)[0]
    assert not evaluate_official({"car": [det(0, 0, color="green")], "bus": [det(40, 0, color="red")]}, attr)[0]
    # colours classified on demand by the detector's classifier
    asked = []
    assert evaluate_official({"car": [det(0, 0)]}, meta, lambda objs, cls: asked.append(cls) or ["red"] * len(objs))[0]
    assert asked == ["car"]


@pytest.mark.parametrize(
    "relation,a_xy",
    [("left of", (0, 40)), ("right of", (80, 40)), ("above", (40, 0)), ("below", (40, 80))],
)
def test_all_four_relations(relation, a_xy):
    reference = det(40, 40)
    subject = det(*a_xy)
    assert relation in relative_position(subject, reference)
    meta = P.position("dog", relation, "cat")  # dog <relation> cat; the cat is include 0
    assert evaluate_official({"cat": [reference], "dog": [subject]}, meta)[0]
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[relation]
    ok, reason = evaluate_official({"cat": [reference], "dog": [subject]}, P.position("dog", opposite, "cat"))
    assert not ok and f"expected dog {opposite} target, found {relation} target" in reason


def test_position_threshold():
    reference = det(100, 100, 20, 20)
    # centres 3 px apart with 20 px boxes: within 0.1 x (20 + 20) = 4 px, no relation at all
    assert relative_position(det(97, 100, 20, 20), reference) == set()
    # 7 px: 3 px left after the shrink, 3/7 of the offset: not over half, still no relation; 10 px: 6/10, left
    assert relative_position(det(93, 100, 20, 20), reference) == set()
    assert relative_position(det(90, 100, 20, 20), reference) == {"left of"}
    # diagonal: both components count only if each is over half the (revised) direction
    assert relative_position(det(60, 60, 20, 20), reference) == {"left of", "above"}
    assert relative_position(det(60, 95, 20, 20), reference) == {"left of"}
    meta = P.position("dog", "left of", "cat")
    ok, reason = evaluate_official({"cat": [reference], "dog": [det(97, 100, 20, 20)]}, meta)
    assert not ok and "found no clear relation to target" in reason


def test_position_needs_its_target():
    meta = P.position("dog", "left of", "cat")
    ok, reason = evaluate_official({"dog": [det(0, 0)]}, meta)
    assert not ok and "expected cat>=1, found 0" in reason and "no target for dog to be left of" in reason


def test_partial_score_hand_computed():
    meta = P.counting("cat", 4)
    assert partial_score({"cat": [det(0, 0)] * 3}, meta) == pytest.approx(1 - 1 / 4)
    assert partial_score({"cat": [det(0, 0)] * 6}, meta) == pytest.approx(1 - 2 / 4)
    assert partial_score({}, meta) == 0.0
    attr = P.color_attr("car", "red", "bus", "green")
    # car right (count 1, colour 1), bus wrong colour (count 1, colour 0): mean of [1, 1, 1, 0]
    assert partial_score({"car": [det(0, 0, color="red")], "bus": [det(40, 0, color="red")]}, attr) == pytest.approx(0.75)
    # bus missing: its count credit 0 and its colour check 0
    assert partial_score({"car": [det(0, 0, color="red")]}, attr) == pytest.approx(0.5)
    pos = P.position("dog", "left of", "cat")
    assert partial_score({"cat": [det(40, 0)], "dog": [det(0, 0)]}, pos) == 1.0
    assert partial_score({"cat": [det(0, 0)], "dog": [det(40, 0)]}, pos) == pytest.approx(2 / 3)  # counts ok, position 0


def test_filter_detections_thresholds_and_cap():
    raw = {"cat": [det(0, 0, score=s) for s in (0.95, 0.5, 0.2, 0.92)]}
    assert [o.score for o in filter_detections(raw, P.two_object("cat", "dog"))["cat"]] == [0.95, 0.92, 0.5]
    assert [o.score for o in filter_detections(raw, P.counting("cat", 2))["cat"]] == [0.95, 0.92]
    many = {"cat": [det(i, 0, score=0.99) for i in range(30)]}
    assert len(filter_detections(many, P.single_object("cat"))["cat"]) == 16


def test_score_image_per_tag_columns():
    result = score_image({"cat": [det(0, 0)]}, P.single_object("cat"))
    assert result["correct"] and result["tag_single_object"] == 1.0
    assert math.isnan(result["tag_counting"]) and math.isnan(result["tag_position"])


# ---- metadata and grammar --------------------------------------------------------------------------------------


def test_malformed_metadata_names_line_and_field(tmp_path):
    path = tmp_path / "m.jsonl"
    good = json.dumps(P.single_object("cat"))
    cases = [
        ("{not json", "m.jsonl:2: not valid JSON"),
        (json.dumps({"tag": "single_object", "prompt": "x"}), "m.jsonl:2: missing field 'include'"),
        (json.dumps({"tag": "counting", "include": [{"class": "cat", "count": 0}], "prompt": "x"}), "m.jsonl:2: include[0].count must be a positive integer"),
        (json.dumps({"tag": "t", "include": [{"count": 1}], "prompt": "x"}), "m.jsonl:2: include[0].class must be a string"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1, "position": ["near", 0]}], "prompt": "x"}), "include[0].position must be"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1}], "exclude": [{"class": "a", "count": "2"}], "prompt": "x"}), "exclude[0].count"),
        ("[1, 2]", "m.jsonl:2: expected a JSON object"),
    ]
    for line, message in cases:
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(MetadataError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_metadata(str(path))
    path.write_text(good + "\n")
    assert read_metadata(str(path))[0]["prompt"] == "a photo of a cat"


def test_prompt_grammar():
    assert P.plural("person") == "people" and P.plural("bus") == "buses" and P.plural("sheep") == "sheep"
    assert P.plural("knife") == "knives" and P.plural("wine glass") == "wine glasses" and P.plural("cat") == "cats"
    assert P.counting("apple", 3)["prompt"] == "a photo of three apples"
    assert P.counting("apple", 1)["prompt"] == "a photo of one apple"
    assert P.counting("couch", 12)["prompt"] == "a photo of twelve couches"
    assert P.single_object("orange")["prompt"] == "a photo of an orange"
    assert P.colors("car", "orange")["prompt"] == "a photo of an orange car"
    assert P.position("dog", "above", "elephant")["prompt"] == "a photo of a dog above an elephant"
    for item in (P.counting("cat", 2), P.position("a", "below", "b"), P.color_attr("a", "red", "b", "blue")):
        validate(item)


def test_committed_datasets_are_valid_and_disjoint():
    test = read_metadata(os.path.join(REPO, "dataset", "geneval", "test_metadata.jsonl"))
    train = read_metadata(os.path.join(REPO, "dataset", "geneval", "train_metadata.jsonl"))
    from flow_grpo.geneval.metadata import TAGS

    assert len(test) == 553 and {m["tag"] for m in test} == set(TAGS)
    assert not {m["prompt"] for m in test} & {m["prompt"] for m in train}
    counting = read_metadata(os.path.join(REPO, "dataset", "counting_10", "test_metadata.jsonl"))
    counts = [m["include"][0]["count"] for m in counting]
    assert sorted(set(counts)) == list(range(1, 11)) and len(set(counts.count(c) for c in set(counts))) == 1


# ---- summary -------------------------------------------------------------------------------------------------


def test_summary_numbers(tmp_path):
    rows = []
    for meta, corrects in ((P.single_object("cat"), [1, 1]), (P.counting("dog", 2), [0, 1]), (P.counting("cat", 3), [0, 0])):
        for c in corrects:
            rows.append({"tag": meta["tag"], "metadata": json.dumps(meta), "correct": bool(c), "strict_correct": False})
    summary = summary_script.summarise(rows)
    assert summary["by_tag"] == {"single_object": 1.0, "counting": 0.25}
    assert summary["overall"] == pytest.approx(0.625)
    assert summary["correct_images"] == pytest.approx(3 / 6)
    assert summary["correct_prompts"] == pytest.approx(2 / 3)  # a prompt counts when any image is correct
    assert summary["by_count"] == {2: 0.5, 3: 0.0}


# ---- transformers backend on tiny random models, the reward, and the round trip -------------------------------


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    from flow_grpo.tiny_reward_models import save_tiny_clip, save_tiny_mask2former

    root = tmp_path_factory.mktemp("detector")
    # min_score 0: a random detector spreads its confidence thin over 81 classes
    return {"detector_model": save_tiny_mask2former(str(root / "m2f")), "clip_model": save_tiny_clip(str(root / "clip")),
            "device": "cpu", "min_score": 0.0}


def test_transformers_backend_on_tiny_models(tiny_detector):
    from flow_grpo.geneval.scorer import GenEvalScorer
    from flow_grpo.images import to_pil

    # thresholds at 0: the random detector's low-confidence objects are kept, so every rule runs
    scorer = GenEvalScorer("transformers", confidence=0.0, counting_confidence=0.0, **tiny_detector)
    images = to_pil(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    metas = [P.colors("cat", "red"), P.counting("dog", 2), P.position("cat", "left of", "dog")]
    results = scorer(images, metas)
    again = scorer(images, metas)
    assert [r["score"] for r in results] == [r["score"] for r in again]
    for result in results:
        assert set(result) >= {"correct", "strict_correct", "score", "reason", "details"}
        assert 0.0 <= result["score"] <= 1.0
        for boxes in result["details"].values():
            assert all(0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64 for b in boxes)
    detector = scorer.detector
    found = detector.detect(images[:1])[0]
    some_class, objects = next(iter(found.items()))
    colours = detector.colours(images[0], objects[:2], some_class)
    from flow_grpo.geneval.metadata import COLORS

    assert len(colours) == len(objects[:2]) and set(colours) <= set(COLORS)


def test_geneval_reward(tiny_detector):
    from flow_grpo.rewards import build_reward

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    metas = [P.single_object("cat"), P.counting("dog", 2)]
    fn = build_reward("geneval", backend="transformers", confidence=0.0, counting_confidence=0.0, **tiny_detector)
    scores, info = fn(images, [m["prompt"] for m in metas], metas)
    np.testing.assert_allclose(scores, info["score"])
    binary, _ = fn(images, [m["prompt"] for m in metas], metas, options={"binary": True, "strict": True})
    np.testing.assert_array_equal(binary, info["strict_correct"])
    assert math.isnan(info["tag_counting"][0]) and not math.isnan(info["tag_counting"][1])
    with pytest.raises(MetadataError, match="metadata\\[0\\]: missing field 'include'"):
        fn(images[:1], ["x"], [{"prompt": "x", "tag": "single_object"}])


def test_generate_evaluate_summary_round_trip(tmp_path, tiny_detector, capsys):
    metadata = tmp_path / "meta.jsonl"
    items = [P.single_object("cat"), P.counting("dog", 2), P.colors("car", "red")]
    metadata.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "images"
    argv = ["--metadata", str(metadata), "--outdir", str(out), "--model", "builtin:tiny", "--n_samples", "2",
            "--steps", "4", "--H", "64", "--W", "64", "--max_sequence_length", "32"]
    assert generate.main(argv) == 0
    assert sorted(os.listdir(out)) == ["00000", "00001", "00002"]
    assert sorted(os.listdir(out / "00001" / "samples")) == ["0000.png", "0001.png"]
    assert json.loads((out / "00001" / "metadata.jsonl").read_text()) == items[1]
    first = (out / "00000" / "samples" / "0000.png").read_bytes()
    # resumable: delete one image, rerun, only that prompt is redone, identically
    os.remove(out / "00002" / "samples" / "0001.png")
    capsys.readouterr()
    assert generate.main(argv) == 0
    assert "1 of its 3 prompts to do" in capsys.readouterr().out
    assert (out / "00000" / "samples" / "0000.png").read_bytes() == first
    assert (out / "00002" / "samples" / "0001.png").is_file()

    results = tmp_path / "results.jsonl"
    options = json.dumps(tiny_detector)
    assert evaluate_script.main([str(out), "--outfile", str(results), "--backend", "transformers", "--options", options]) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 6 and {r["tag"] for r in rows} == {"single_object", "counting", "colors"}
    assert summary_script.main([str(results), "--plots", str(tmp_path / "plots"), "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["images"] == 6 and summary["prompts"] == 3
    assert (tmp_path / "plots" / "by_tag.png").is_file() and (tmp_path / "plots" / "by_count.png").is_file()


def test_geneval_reward_through_the_reward_server(tiny_detector):
    from flow_grpo.reward_server import RewardClient, RewardServer
    from flow_grpo.rewards import build_reward

    options = {"backend": "transformers", "confidence": 0.0, "counting_confidence": 0.0, **tiny_detector}
    server = RewardServer(["geneval"], reward_options={"geneval": options}).start()
    try:
        images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        metas = [P.single_object("cat"), P.counting("dog", 2), P.position("cat", "below", "dog")]
        prompts = [m["prompt"] for m in metas]
        remote, info = RewardClient(server.url).score("geneval", images, prompts, metas, {"binary": False})
        local, _ = build_reward("geneval", **options)((images * 255).round() / 255, prompts, metas)
        np.testing.assert_allclose(remote, local)
        assert info["tag_counting"][1] in (0.0, 1.0) and info["tag_counting"][0] is None  # NaN travels as null
    finally:
        server.stop()


def test_evaluation_without_detector_weights_says_which_option_to_set(tmp_path, capsys):
    """The transformers backend with a detector that is neither a local folder nor on the hub: one line naming
    the model and the option that points at a local copy, status 2, no traceback."""
    folder = tmp_path / "images" / "00000"
    (folder / "samples").mkdir(parents=True)
    (folder / "metadata.jsonl").write_text(json.dumps({"tag": "single_object", "include": [{"class": "cat", "count": 1}],
                                                       "prompt": "a photo of a cat"}) + "\n")
    Image.new("RGB", (32, 32)).save(folder / "samples" / "0000.png")
    missing = str(tmp_path / "no_detector")
    assert evaluate_script.main([str(tmp_path / "images"), "--backend", "transformers", "--options",
                                 json.dumps({"detector_model": missing, "clip_model": missing})]) == 2
    err = capsys.readouterr().err
    assert "cannot load the transformers backend's models" in err and "no_detector" in err and '"detector_model": DIR' in err
    assert "Traceback" not in err
