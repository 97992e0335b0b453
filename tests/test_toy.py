"""The toy worlds end to end (short runs), and the pieces they are made of."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO, load_script
from flow_grpo.toy.line_shapes import LineShapesWorld, all_prompts
from flow_grpo.toy.model import ToyVelocityNet
from flow_grpo.toy.moons import MoonsWorld, arc_distances
from flow_grpo.data import DistributedKRepeatSampler
from flow_grpo.sde import SDEParams
from flow_grpo.toy.policy import ToyPolicy
from flow_grpo.toy.collector import collect_toy_rollout
from flow_grpo.toy.schedule import sigma_schedule

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


@pytest.mark.slow
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
    assert all(r["trained_samples"] == 256 for r in epoch_rows)  # continuous rewards: no zero advantage
    saved = np.load(os.path.join(run_dir, "samples", "eval_samples.npz"), allow_pickle=False)
    assert saved["before"].shape == saved["after"].shape == (6 * 128, 1)


@pytest.mark.slow
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


@pytest.mark.slow
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


# config.sample's step keys (config/base.py: rollout_steps_config): every step stochastic, Euler
EVERY_STEP = dict(sde_window_size=0, sde_window_range=(0, 10), sde_window_schedule="random", ode_solver="euler")


def test_toy_rollout_and_its_rescoring_by_the_policy():
    """collect_toy_rollout: groups of k per prompt, rewards of the final samples, and log-probs the policy
    reproduces exactly from the stored transitions."""
    torch.manual_seed(0)
    world = LineShapesWorld(all_prompts()[:4], all_prompts()[4:6])
    model = ToyVelocityNet(1, world.cond_dim, 32, 2)
    sample = SimpleNamespace(num_steps=10, noise_level=0.7, sde_type="sde", num_image_per_prompt=3,
                             num_batches_per_epoch=2, same_latent=False, groups_of_k=False, **EVERY_STEP)
    sampler = DistributedKRepeatSampler(len(world.train_prompts), 6, 3, seed=0)
    rollout = collect_toy_rollout(model, world, sampler, sample, torch.Generator().manual_seed(1))
    assert len(rollout) == 12 and rollout.latents.shape == (12, 11, 1) and rollout.log_probs.shape == (12, 10)
    assert torch.equal(rollout.latents[:, -1], rollout.final_latents)
    np.testing.assert_allclose(rollout.rewards["avg"], world.reward(rollout.final_latents, rollout.prompts))
    for group in rollout.group_ids.unique():  # a group is one prompt's samples
        members = [p for p, g in zip(rollout.prompts, rollout.group_ids.tolist()) if g == group]
        assert len(set(members)) == 1 and len(members) % 3 == 0
    policy = ToyPolicy(model, None, SDEParams(0.7, "sde"))
    with torch.no_grad():
        for rows in torch.arange(12).split(6):  # as sampled, one batch at a time: bit for bit
            for j in range(10):
                batch = rollout.transitions(rows, torch.full((6,), j), "cpu")
                assert torch.equal(policy.score(batch).log_prob, rollout.log_probs[rows, j])


def test_same_latent_groups_share_their_initial_noise():
    world = MoonsWorld("fidelity")
    model = ToyVelocityNet(2, 0, 32, 2)
    sample = SimpleNamespace(num_steps=4, noise_level=0.7, sde_type="sde", num_image_per_prompt=4,
                             num_batches_per_epoch=2, same_latent=True, groups_of_k=False, **EVERY_STEP)
    sampler = DistributedKRepeatSampler(1, 8, 8, seed=0)
    rollout = collect_toy_rollout(model, world, sampler, sample, torch.Generator().manual_seed(0))
    assert rollout.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    start = rollout.latents[:, 0]
    for group in range(4):
        members = start[4 * group : 4 * group + 4]
        assert torch.equal(members, members[:1].expand(4, -1))
    assert not torch.equal(start[0], start[4])
    assert not torch.equal(rollout.final_latents[0], rollout.final_latents[1])  # independent SDE noise


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
