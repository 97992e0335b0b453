"""The toy worlds end to end (short runs), and the pieces they are made of."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import REPO, load_script
from flow_grpo.toy.line_shapes import LineShapesWorld, all_prompts
from flow_grpo.toy.model import ToyVelocityNet
from flow_grpo.toy.moons import MoonsWorld, arc_distances
from flow_grpo.toy.sampling import sample_trajectory, sigma_schedule, transition

TOY = os.path.join(REPO, "config", "toy.py")
train_toy = load_script("scripts/train_toy.py")

QUICK = ["--config.progress=false", "--config.eval_freq=5", "--config.num_epochs=15"]


def run(tmp_path, name, *overrides):
    code = train_toy.main(["--config", f"{TOY}:{name}", f"--config.logdir={tmp_path}", *QUICK, *overrides])
    assert code == 0
    run_dir = os.path.join(tmp_path, name)
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        rows = [json.loads(line) for line in handle]
    return run_dir, summary, rows


def test_line_shapes_raises_held_out_reward(tmp_path):
    run_dir, summary, rows = run(
        tmp_path, "line_shapes", "--config.pretrain.num_steps=600", "--config.sample.eval_samples_per_prompt=128"
    )
    assert summary["eval_reward_after"] > summary["eval_reward_before"] + 0.05
    assert summary["right_shape_share_after"] > summary["right_shape_share_before"]
    # run folder contract
    for name in ("config.json", "plots/curves.png", "plots/advantages.png", "plots/samples_before_after.png",
                 "samples/eval_samples.npz", "checkpoints/model.safetensors"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    epoch_rows = [r for r in rows if r["epoch"] > 0]
    assert len(epoch_rows) == 15
    for key in ("epoch", "global_step", "reward_mean", "approx_kl", "clipfrac", "policy_loss", "kl_loss", "epoch_time_s"):
        assert all(key in r for r in epoch_rows), key
    assert [r["epoch"] for r in rows if "eval_reward_mean" in r] == [0, 5, 10, 15]
    assert epoch_rows[-1]["global_step"] == 15 * 4  # 256 samples / 64 per minibatch, one optimizer step each
    saved = np.load(os.path.join(run_dir, "samples", "eval_samples.npz"), allow_pickle=False)
    assert saved["before"].shape == saved["after"].shape == (6 * 128, 1)


def test_moons_unlearn_drops_lower_moon(tmp_path):
    _, summary, rows = run(
        tmp_path, "moons_unlearn", "--config.pretrain.num_steps=800", "--config.model.hidden_dim=128",
        "--config.sample.eval_samples_per_prompt=1024",
    )
    assert summary["lower_moon_share_before"] > 0.4
    assert summary["lower_moon_share_after"] < summary["lower_moon_share_before"] - 0.15
    assert summary["classifier_accuracy"] > 0.98
    # beta > 0: the KL term is computed and is 0 before the first update (policy == reference)
    assert all(r["kl_loss"] >= 0 for r in rows if r["epoch"] > 0)


def test_moons_fidelity_ddpo_variant_runs_and_sharpens(tmp_path):
    _, summary, _ = run(
        tmp_path, "moons_fidelity_ddpo", "--config.pretrain.num_steps=800", "--config.model.hidden_dim=128",
        "--config.sample.eval_samples_per_prompt=1024",
    )
    assert summary["mean_arc_distance_after"] < summary["mean_arc_distance_before"]
    assert summary["eval_reward_after"] > summary["eval_reward_before"]


def test_bad_config_name_exits_with_a_message(tmp_path, capsys):
    assert train_toy.main(["--config", f"{TOY}:moons", f"--config.logdir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'moons'" in err and "moons_unlearn" in err and "line_shapes" in err
    assert train_toy.main(["--config", f"{TOY}:line_shapes", "--config.world.name=planets"]) == 2
    assert "planets" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing written for a run that never started


def test_rescoring_a_toy_trajectory_reproduces_its_log_probs():
    torch.manual_seed(0)
    world = LineShapesWorld(all_prompts()[:4], all_prompts()[4:6])
    model = ToyVelocityNet(1, world.cond_dim, 32, 2)
    prompts = world.train_prompts * 3
    cond = world.encode(prompts)
    sigmas = sigma_schedule(10)
    _, latents, log_probs = sample_trajectory(
        model, cond, torch.randn(len(prompts), 1), sigmas, 0.7, generator=torch.Generator().manual_seed(1)
    )
    for j in range(10):
        _, log_prob, _, _ = transition(model, latents[:, j], sigmas[j], sigmas[j + 1], cond, 0.7, "sde", prev_sample=latents[:, j + 1])
        assert torch.equal(log_prob, log_probs[:, j])


def test_sigma_schedule_shift():
    plain = sigma_schedule(4)
    torch.testing.assert_close(plain, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = sigma_schedule(4, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0
    torch.testing.assert_close(shifted[2], torch.tensor(3 * 0.5 / (1 + 2 * 0.5)))


def test_moons_geometry():
    on_upper = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-0.6, 0.8]])
    d_upper, d_lower = arc_distances(on_upper)
    np.testing.assert_allclose(d_upper, 0, atol=1e-6)
    on_lower = torch.tensor([[1.0, -0.5], [2.0, 0.5], [0.0, 0.5]])
    np.testing.assert_allclose(arc_distances(on_lower)[1], 0, atol=1e-6)
    # below the upper circle's centre the distance is to the arc's nearer end, not to the full circle
    np.testing.assert_allclose(arc_distances(torch.tensor([[0.0, -1.0]]))[0], [np.sqrt(2)])
    world = MoonsWorld("fidelity")
    metrics = world.metrics(torch.tensor([[0.0, 1.0], [1.0, -0.5], [-5.0, 5.0]]), None)
    assert metrics["lower_moon_share"] == pytest.approx(1 / 3)
    assert metrics["off_moon_share"] == pytest.approx(1 / 3)
