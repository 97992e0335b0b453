"""FlowRL's trajectory balance and GRPO-Guard against hand computations; both in the toy and SD3 trainers."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, load_script
from flow_grpo.checkpoint import resolve_resume
from flow_grpo.objectives import flowrl, grpo_guard
from flow_grpo.sde import sde_step_with_logprob


def test_trajectory_balance_loss_and_gradient_by_hand():
    log_z = torch.tensor([0.5, -1.0], requires_grad=True)
    mean_log_prob = torch.tensor([-2.0, -3.0], requires_grad=True)
    advantages = torch.tensor([1.0, -0.5])
    mean_ref = torch.tensor([-2.5, -2.0])
    weight = torch.tensor([1.0, 2.0])
    loss = flowrl.trajectory_balance_loss(log_z, mean_log_prob, advantages, mean_ref, tb_coef=2.0, weight=weight)
    # delta = log Z + mean log p - 2 A - mean log p_ref: [0.5 - 2 - 2 + 2.5, -1 - 3 + 1 + 2] = [-1.0, -1.0]
    delta = np.array([-1.0, -1.0])
    assert float(loss.detach()) == pytest.approx(np.mean(np.array([1.0, 2.0]) * delta**2))
    loss.backward()
    # d/d log Z_i = 2 w_i delta_i / N, the same for the mean log-prob
    np.testing.assert_allclose(log_z.grad.numpy(), 2 * np.array([1.0, 2.0]) * delta / 2)
    np.testing.assert_allclose(mean_log_prob.grad.numpy(), 2 * np.array([1.0, 2.0]) * delta / 2)


def test_per_timestep_surrogates_sum_to_the_trajectory_gradient():
    torch.manual_seed(0)
    theta = torch.randn(3, requires_grad=True)
    features = torch.randn(4, 5, 3)  # 4 trajectories, 5 timesteps: log p_t = features . theta
    advantages, mean_ref, log_z = torch.randn(4), torch.randn(4), torch.randn(4)
    log_probs = features @ theta
    weight = torch.rand(4) + 0.5
    exact = flowrl.trajectory_balance_loss(log_z, log_probs.mean(1), advantages, mean_ref, 15.0, weight)
    (expected,) = torch.autograd.grad(exact, theta)
    with torch.no_grad():
        delta = flowrl.trajectory_balance_delta(log_z, (features @ theta).mean(1), advantages, mean_ref, 15.0)
    total = torch.zeros(3)
    for t in range(5):
        surrogate = flowrl.trajectory_balance_surrogate(features[:, t] @ theta, delta, weight, num_timesteps=5)
        total += torch.autograd.grad(surrogate, theta)[0]
    torch.testing.assert_close(total, expected)


def test_importance_weight_is_clamped_and_detached():
    log_prob_sum = torch.tensor([0.0, 1.0, 5.0], requires_grad=True)
    weight = flowrl.importance_weight(log_prob_sum, torch.zeros(3))
    torch.testing.assert_close(weight, torch.tensor([1.0, float(np.e), 10.0]))
    assert not weight.requires_grad


def test_log_z_head():
    head = flowrl.LogZHead(8, hidden_dim=16, proj_layer=3, proj_dropout=0.1)
    assert [type(m).__name__ for m in head.net] == ["Linear", "GELU", "LayerNorm", "Dropout", "Linear", "GELU", "LayerNorm", "Dropout", "Linear"]
    assert torch.all(head(torch.randn(5, 8)) == 0)  # starts at log Z = 0
    constant = flowrl.LogZHead(0)
    assert constant(torch.zeros(3, 0)).shape == (3,)


def step(x, v, generator=None, prev=None):
    return sde_step_with_logprob(v, 0.6, 0.5, x, 0.7, prev_sample=prev, generator=generator)


def test_grpo_guard_ratio_is_one_on_policy_and_recentres_off_policy():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(512, 4, 8, 8, generator=g), torch.randn(512, 4, 8, 8, generator=g)
    prev, old_log_prob, old_mean, std = step(x, v, generator=g)
    _, log_prob, mean, _ = step(x, v, prev=prev)
    ratio = grpo_guard.grpo_guard_ratio(log_prob, old_log_prob, mean, old_mean, std)
    assert torch.equal(ratio, torch.ones_like(ratio))
    # a shifted policy: the plain log-ratio is biased below 0 by bias = mean(dmu^2) / (2 std^2) ...
    _, shifted_log_prob, shifted_mean, _ = step(x, v + 0.5, prev=prev)
    plain = shifted_log_prob - old_log_prob
    bias = ((shifted_mean - old_mean) ** 2).mean(dim=(1, 2, 3)) / (2 * std.reshape(-1) ** 2)
    assert float(plain.mean()) == pytest.approx(-float(bias.mean()), rel=0.1)
    # ... and GRPO-Guard's ratio is centred on 1 again
    guard = grpo_guard.grpo_guard_ratio(shifted_log_prob, old_log_prob, shifted_mean, old_mean, std)
    centred = torch.log(guard) / std.reshape(-1)  # = plain log-ratio + bias
    assert abs(float(centred.mean())) < 0.1 * float(bias.mean())


def test_grpo_guard_loss_divides_by_minus_dt():
    ratio, advantages = torch.tensor([1.0, 1.0]), torch.tensor([1.0, -2.0])
    loss = grpo_guard.grpo_guard_loss(ratio, advantages, 0.1, torch.tensor([-0.1, -0.2]))
    assert float(loss) == pytest.approx(np.mean([-1.0 / 0.1, 2.0 / 0.2]))


# ---- in the trainers -------------------------------------------------------------------------------------


train_toy = load_script("scripts/train_toy.py")


def run_toy(tmp_path, name, *overrides):
    argv = ["--config", os.path.join(REPO, "config", "toy.py") + f":{name}", f"--config.logdir={tmp_path}",
            "--config.progress=false", "--config.pretrain.num_steps=800", "--config.model.hidden_dim=128",
            "--config.sample.eval_samples_per_prompt=1024", "--config.eval_freq=5", *overrides]
    assert train_toy.main(argv) == 0
    rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
    return json.load(open(tmp_path / name / "summary.json")), [r for r in rows if "reward_mean" in r]


@pytest.mark.slow
def test_toy_trainer_grpo_guard_learns(tmp_path):
    summary, rows = run_toy(tmp_path, "moons_unlearn", "--config.train.objective=grpo_guard", "--config.num_epochs=15")
    assert summary["lower_moon_share_after"] < summary["lower_moon_share_before"] - 0.15
    assert abs(rows[0]["ratio_mean"] - 1) < 0.01


@pytest.mark.slow
def test_toy_trainer_flowrl_moves_policy_and_log_z(tmp_path):
    # (FlowRL learns this world more slowly than GRPO: see docs/objectives_comparison.md)
    summary, rows = run_toy(tmp_path, "four_modes_grpo", "--config.train.objective=flowrl", "--config.train.flowrl.tb_coef=1",
                            "--config.num_epochs=6", "--config.pretrain.num_steps=300")
    assert all(np.isfinite(r["policy_loss"]) for r in rows)
    assert rows[0]["log_z"] != rows[-1]["log_z"]  # the log-partition head is trained
    assert rows[-1]["approx_kl"] > 0  # the policy moved between sampling and the later micro-steps


train = load_script("scripts/train.py")
TINY = os.path.join(REPO, "config", "tiny.py")


def run_sd3(tmp_path, *overrides):
    return train.main(["--config", f"{TINY}:tiny", f"--config.logdir={tmp_path}", "--config.progress=false",
                           "--config.eval_freq=100", *overrides])


@pytest.mark.slow
def test_train_sd3_grpo_guard(tmp_path):
    assert run_sd3(tmp_path, "--config.train.objective=grpo_guard", "--config.num_epochs=2") == 0
    rows = [json.loads(l) for l in open(tmp_path / "tiny" / "metrics.jsonl") if "reward_mean" in l]
    assert len(rows) == 2
    assert rows[0]["first_microstep_clipfrac"] == 0.0 and abs(rows[0]["ratio_mean"] - 1) < 1e-3


@pytest.mark.slow
def test_train_sd3_flowrl_trains_log_z_and_resumes_it_exactly(tmp_path):
    common = ["--config.train.objective=flowrl", "--config.save_freq=100"]
    assert run_sd3(tmp_path / "straight", "--config.num_epochs=2", *common) == 0
    assert run_sd3(tmp_path / "split", "--config.num_epochs=1", *common) == 0
    assert run_sd3(tmp_path / "split", "--config.num_epochs=2", "--config.resume_from=latest", *common) == 0
    straight = load_file(os.path.join(resolve_resume("latest", str(tmp_path / "straight" / "tiny" / "checkpoints")), "state", "trainable.safetensors"))
    resumed = load_file(os.path.join(resolve_resume("latest", str(tmp_path / "split" / "tiny" / "checkpoints")), "state", "trainable.safetensors"))
    log_z_keys = [k for k in straight if k.startswith("log_z.")]
    assert log_z_keys and straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert any(float(straight[k].abs().sum()) > 0 for k in log_z_keys if k.endswith("weight"))  # log Z moved
    rows = [json.loads(l) for l in open(tmp_path / "straight" / "tiny" / "metrics.jsonl") if "reward_mean" in l]
    assert all(np.isfinite(r["tb_loss"]) and "log_z" in r for r in rows)


# each objective's snapshot events moved inside the two epochs of the resume test (its own config waits longer), as
# the 4-epoch version had them after its resume point: DPO's reference and SFT's sampler refresh at epoch 2's
# rollouts (global step 2, the resumed run's first), DGPO's old policy samples from then on (global step > 1, the
# snapshot blended after epoch 1 and restored), and GARDO resets its reference after epoch 2 (its epoch counter,
# 1 at the checkpoint, restored)
EVENTS_IN_TWO_EPOCHS = {"tiny_dpo": ["--config.train.dpo.ref_update_step=2"], "tiny_sft": ["--config.train.sft.ref_update_step=2"],
                        "tiny_dgpo": ["--config.train.dgpo.old_samples_after=1"], "tiny_nft_gardo": ["--config.train.gardo.reset_every=2"],
                        "tiny_grpo_gardo": ["--config.train.gardo.reset_every=2"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny_nft", "tiny_awm", "tiny_dpo", "tiny_sft", "tiny_dgpo", "tiny_nft_gardo", "tiny_grpo_gardo"])
def test_forward_process_objectives_run_and_resume_exactly(tmp_path, name):
    """ODE rollouts (GARDO's GRPO: SDE), each objective's snapshots (old policy, KL-EMA, reference, GARDO's
    moving reference and counters) saved in the checkpoint and restored: 2 epochs straight and 1 + 1 resumed
    end bit-identical, with each snapshot's event inside the resumed epoch (EVENTS_IN_TWO_EPOCHS)."""
    def run(folder, *overrides):
        argv = ["--config", f"{TINY}:{name}", f"--config.logdir={folder}", "--config.progress=false", "--config.eval_freq=100",
                "--config.save_freq=100", *EVENTS_IN_TWO_EPOCHS.get(name, []), *overrides]
        assert train.main(argv) == 0

    run(tmp_path / "straight", "--config.num_epochs=2")
    run(tmp_path / "split", "--config.num_epochs=1")
    run(tmp_path / "split", "--config.num_epochs=2", "--config.resume_from=latest")
    finals = [resolve_resume("latest", str(tmp_path / part / name / "checkpoints")) for part in ("straight", "split")]
    files = ["state/trainable.safetensors", "state/ema.safetensors", "state/optimizer.safetensors", "state/objective.safetensors"]
    for file in files:
        a, b = (load_file(os.path.join(final, file)) for final in finals)
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), (file, key)
    objective_state = load_file(os.path.join(finals[0], "state", "objective.safetensors"))
    trained = load_file(os.path.join(finals[0], "state", "trainable.safetensors"))
    snapshot = next(k for k in objective_state if k.endswith(".shadow." + next(iter(trained))))
    assert not torch.equal(objective_state[snapshot], torch.zeros_like(objective_state[snapshot]))
    rows = [json.loads(l) for l in open(tmp_path / "straight" / name / "metrics.jsonl") if "reward_mean" in l]
    assert len(rows) == 2 and all(np.isfinite(r["policy_loss"]) for r in rows) and rows[-1]["global_step"] > 0


@pytest.mark.slow
def test_mixgrpo_window_slides_from_high_to_low_noise(tmp_path):
    """tiny_mixgrpo: a window of 2 over the first 4 of 6 steps, one step further every epoch, rolling back after
    the third position; DPM-Solver++ after it. The stored steps' highest flow time follows the window."""
    assert train.main(["--config", f"{TINY}:tiny_mixgrpo", f"--config.logdir={tmp_path}", "--config.progress=false",
                           "--config.eval_freq=100", "--config.num_epochs=4"]) == 0
    rows = [json.loads(l) for l in open(tmp_path / "tiny_mixgrpo" / "metrics.jsonl") if "reward_mean" in l]
    sigma_max = [r["stored_sigma_max"] for r in rows]
    assert all(r["stored_steps"] == 2 for r in rows)
    assert sigma_max[0] == 1.0 and sigma_max[0] > sigma_max[1] > sigma_max[2] and sigma_max[3] == 1.0
    assert all(np.isfinite(r["policy_loss"]) for r in rows) and rows[0]["first_microstep_clipfrac"] == 0.0
