"""GRPO math against hand computations and torch.distributions: advantages, the clipped loss, the KL, the
on-policy diagnostics and the choice of trained timesteps."""

import numpy as np
import pytest
import torch

from flow_grpo import advantages as adv_math
from flow_grpo.objectives import grpo
from flow_grpo.training.update import select_train_timesteps


def test_group_advantages_global_and_per_group_std():
    keys = ["a", "a", "a", "b", "b", "c"]
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 14.0, 7.0])
    global_std = rewards.std()
    expected = np.array([-1.0, 0.0, 1.0, -2.0, 2.0, 0.0]) / (global_std + 1e-4)
    np.testing.assert_allclose(adv_math.group_advantages(keys, rewards, global_std=True), expected)
    per_group = np.array(
        [-1 / (np.std([1, 2, 3]) + 1e-4), 0.0, 1 / (np.std([1, 2, 3]) + 1e-4), -2 / (2 + 1e-4), 2 / (2 + 1e-4), 0.0]
    )
    np.testing.assert_allclose(adv_math.group_advantages(keys, rewards, global_std=False), per_group)


def test_group_advantages_zero_within_constant_group():
    adv = adv_math.group_advantages(["p"] * 4 + ["q"] * 4, np.array([1.0] * 4 + [0.0, 1.0, 0.0, 1.0]))
    assert np.all(adv[:4] == 0)
    assert np.all(np.abs(adv[4:]) > 0)


def test_group_advantages_checks_lengths():
    with pytest.raises(ValueError, match="one reward per key"):
        adv_math.group_advantages(["a", "b"], np.zeros(3))


def test_group_ids_may_be_integers():
    """The trainers group by integer ids (gathered over processes); the result is the same as by prompt text."""
    rewards = np.array([0.0, 1.0, 1.0, 1.0, 3.0])
    by_text = adv_math.group_advantages(["x", "x", "y", "y", "x"], rewards, global_std=False)
    by_id = adv_math.group_advantages(np.array([7, 7, 2, 2, 7]), rewards, global_std=False)
    np.testing.assert_array_equal(by_text, by_id)


def test_batch_advantages_are_standardised():
    adv = adv_math.batch_advantages(np.array([1.0, 2.0, 3.0, 6.0]))
    assert adv.mean() == pytest.approx(0.0, abs=1e-12)
    assert adv.std() == pytest.approx(1.0, abs=1e-6)


def test_clip_advantages_numpy_and_torch():
    np.testing.assert_array_equal(adv_math.clip_advantages(np.array([-9.0, 0.5, 7.0]), 5.0), [-5.0, 0.5, 5.0])
    assert torch.equal(adv_math.clip_advantages(torch.tensor([-9.0, 0.5, 7.0]), 5.0), torch.tensor([-5.0, 0.5, 5.0]))


def test_clipped_policy_loss_hand_computed():
    eps = 0.1
    ratios = torch.tensor([1.0, 1.3, 0.7, 1.3, 0.7])
    advantages = torch.tensor([2.0, 1.0, 1.0, -1.0, -1.0])
    log_prob = torch.log(ratios).requires_grad_(True)
    loss, ratio = grpo.clipped_policy_loss(log_prob, torch.zeros(5), advantages, eps)
    # per sample max(-A r, -A clip(r)):
    #  A=2, r=1: -2;  A=1, r=1.3: max(-1.3, -1.1) = -1.1 (clipped, no grad);  A=1, r=0.7: max(-0.7, -0.9) = -0.7
    #  A=-1, r=1.3: max(1.3, 1.1) = 1.3;  A=-1, r=0.7: max(0.7, 0.9) = 0.9 (clipped, no grad)
    expected = torch.tensor([-2.0, -1.1, -0.7, 1.3, 0.9]).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(ratio, ratios)
    loss.backward()
    # d/dlogp of -A r / 5 = -A r / 5 where unclipped, 0 where the clipped branch is active
    torch.testing.assert_close(log_prob.grad, torch.tensor([-2.0 / 5, 0.0, -0.7 / 5, 1.3 / 5, 0.0]))


def test_gaussian_kl_is_exact():
    g = torch.Generator().manual_seed(0)
    mean, mean_ref = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    std = torch.tensor([0.3, 0.5, 1.2]).reshape(3, 1, 1, 1)
    kl = grpo.gaussian_kl(mean, mean_ref, std)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std.expand_as(mean)), torch.distributions.Normal(mean_ref, std.expand_as(mean))
    ).mean(dim=(1, 2, 3))
    torch.testing.assert_close(kl, expected)
    assert torch.all(grpo.gaussian_kl(mean, mean, std) == 0)


def test_ratio_diagnostics():
    log_prob = torch.tensor([0.0, 0.2, -0.05, 0.01])
    old = torch.zeros(4)
    d = grpo.ratio_diagnostics(log_prob, old, torch.exp(log_prob - old), clip_range=0.1)
    assert float(d["approx_kl"]) == pytest.approx(0.5 * np.mean([0, 0.04, 0.0025, 0.0001]))
    assert float(d["clipfrac"]) == pytest.approx(0.25)  # only exp(0.2) - 1 = 0.22 exceeds 0.1
    assert float(d["ratio_mean"]) == pytest.approx(float(torch.exp(log_prob).mean()))
    on_policy = grpo.ratio_diagnostics(old, old, torch.ones(4), 1e-4)
    assert float(on_policy["approx_kl"]) == 0 and float(on_policy["clipfrac"]) == 0


def test_select_train_timesteps():
    first = select_train_timesteps(10, 0.5, "first", 3)
    assert torch.equal(first, torch.arange(5).expand(3, 5))
    assert select_train_timesteps(10, 0.99, "first", 1).shape == (1, 9)
    rand = select_train_timesteps(10, 0.3, "random", 64, torch.Generator().manual_seed(0))
    assert rand.shape == (64, 3)
    assert torch.all(rand[:, 1:] > rand[:, :-1])  # sorted, distinct
    assert rand.min() >= 0 and rand.max() <= 9
    assert len({tuple(r) for r in rand.tolist()}) > 10  # differs between samples
    with pytest.raises(ValueError, match="strategy"):
        select_train_timesteps(10, 0.5, "last", 1)
