"""scripts/compare_bases.py on the shipped base: the same model twice scores the same, a changed VAE gets its own
ceiling, bad --model entries are refused by name."""

import json
import os
import shutil
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import compare_bases  # noqa: E402

BASE = os.path.join(REPO, "models", "shapes-sd3")


def test_first_per_tag_keeps_the_first_prompts_of_each_tag():
    from flow_grpo.shapes.evaluation import first_per_tag

    metadata = [{"tag": t, "prompt": f"{t}{i}"} for i in range(3) for t in ("a", "b")]
    assert [metadata[i]["prompt"] for i in first_per_tag(metadata, 2)] == ["a0", "b0", "a1", "b1"]
    assert [metadata[i] for i in first_per_tag(metadata, 0)] == metadata


def test_bad_model_entries_are_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match="expected LABEL=PATH"):
        compare_bases.parse_models(["models/shapes-sd3"])
    with pytest.raises(SystemExit, match="not a pipeline folder"):
        compare_bases.parse_models([f"v9={tmp_path}"])
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    with pytest.raises(SystemExit, match="no VAE weights"):
        compare_bases.parse_models([f"v9={tmp_path}"])
    with pytest.raises(SystemExit, match="share a label"):
        compare_bases.parse_models([f"v1={BASE}", f"v1={BASE}"])


@pytest.mark.slow
def test_two_bases_side_by_side(tmp_path):
    import torch
    from diffusers import AutoencoderKL

    other = tmp_path / "other"  # the shipped base with a perturbed VAE decoder: a second ceiling
    shutil.copytree(BASE, other)
    vae = AutoencoderKL.from_pretrained(other / "vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(0.3)
    vae.save_pretrained(other / "vae")

    out = tmp_path / "out"
    code = compare_bases.main(["--model", f"a={BASE}", "--model", f"b={BASE}", "--model", f"c={other}", "--guidance", "4.5", "1",
                               "--images", "2", "--prompts-per-tag", "1", "--steps", "2", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "bases.json").read_text())
    reports = result["reports"]
    assert set(reports) == {f"{m}, CFG {g}" for m in "abc" for g in ("4.5", "1")}
    assert all(r["images"] == 12 for r in reports.values())  # 6 prompts (one per tag) x 2 images
    for g in ("4.5", "1"):  # the same model on the same noise: the same report
        assert reports[f"a, CFG {g}"] == reports[f"b, CFG {g}"]
    assert reports["a, CFG 4.5"]["velocity_norm"] != reports["a, CFG 1"]["velocity_norm"]  # guidance applied
    assert len(result["ceilings"]) == 2 and reports["a, CFG 1"]["vae"] != reports["c, CFG 1"]["vae"]
    first, second = result["ceilings"].values()
    assert first["first_model"] == "a" and second["first_model"] == "c"
    assert first["off_palette_share"] != second["off_palette_share"]  # c's scenes went through c's decoder
    assert reports["c, CFG 1"]["off_palette_share"] != reports["a, CFG 1"]["off_palette_share"]
    text = (out / "bases.md").read_text()
    assert "x 2 ODE images (2 steps, seed 42" in text
    header = text.split("| tag |")[1].splitlines()[0]
    assert header.count("ceiling") == 2 and "a, CFG 4.5" in header and "c, CFG 1" in header
    for g in ("4.5", "1"):  # 6 prompts as rows, 3 models x 2 images as columns, 64 px cells under the labels
        with Image.open(out / f"bases_cfg{g}.png") as grid:
            assert grid.size == (150 + 6 * 64, 16 + 6 * 64)
