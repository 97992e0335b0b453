"""The shapes demo end to end on the shipped base: two training processes, a full fine-tune, before/after."""

import json
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import shapes_demo  # noqa: E402

pytestmark = pytest.mark.slow  # training runs and subprocesses: make test runs this file, make test-fast does not

SMALL = [
    "--eval-images", "1", "--config.sample.eval_num_steps=2", "--config.sample.num_steps=3",
    "--config.sample.train_batch_size=16", "--config.sample.num_image_per_prompt=4", "--config.sample.num_batches_per_epoch=1",
    "--config.train.batch_size=16", "--config.num_epochs=1", "--config.eval_freq=1", "--config.progress=false",
]


def test_demo_with_two_processes_and_full_fine_tuning(tmp_path, capsys):
    from safetensors.torch import load_file

    code = shapes_demo.main(["--logdir", str(tmp_path), "--processes", "2", "--config.use_lora=false", *SMALL])
    assert code == 0
    run_dir = tmp_path / "shapes_nft"
    summary = json.loads((run_dir / "demo_summary.json").read_text())
    assert summary["train_processes"] == 2
    tags = {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert set(summary["before"]["by_tag"]) == tags and set(summary["after"]["by_tag"]) == tags
    assert summary["before"]["images"] == summary["after"]["images"] == 60
    assert (run_dir / "plots" / "before_after.png").exists()
    # the evaluated model is the fine-tuned transformer, not the base
    trained = load_file(os.path.join(summary["checkpoint"], "transformer", "diffusion_pytorch_model.safetensors"))
    base = load_file(os.path.join(REPO, "models", "shapes-sd3", "transformer", "diffusion_pytorch_model.safetensors"))
    assert trained.keys() == base.keys()
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    # the per-epoch totals were split over the processes: 16 images (4 groups of 4) per epoch, 8 on each
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "trained_samples" in r]
    assert [(r["num_groups"], r["trained_samples"]) for r in trained] == [(4.0, 8.0)]
    # the epoch's reward info is gathered from both processes: its mean partial score is the logged reward,
    # its accuracy a count out of 16 images, and the per-tag accuracies name GenEval tags
    row = trained[0]
    assert row["batch_geneval_score"] == pytest.approx(row["reward_geneval_mean"], abs=1e-12)
    assert 16 * row["batch_geneval_correct"] == pytest.approx(round(16 * row["batch_geneval_correct"]), abs=1e-9)
    per_tag = {k[len("batch_geneval_tag_"):]: v for k, v in row.items() if k.startswith("batch_geneval_tag_")}
    assert per_tag and set(per_tag) <= tags and all(0 <= v <= 1 for v in per_tag.values())
    out = capsys.readouterr().out
    assert "| **overall** |" in out and "| colour drift, no colour named (TV) |" in out
    # the verdict on the hacking checks, printed and kept: a list of the checks that moved (here none or some)
    assert isinstance(summary["hacking_flags"], list) and "reward-hacking checks against the base: " in out


def test_batches_that_do_not_split_over_the_processes_are_refused(tmp_path, capsys):
    code = shapes_demo.main(["--logdir", str(tmp_path), "--processes", "3", *SMALL])
    assert code == 2
    assert "does not split over 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "shapes_nft").exists()
