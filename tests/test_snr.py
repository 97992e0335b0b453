"""Gradient signal-to-noise: the cosine estimator against its closed form, and the script on the tiny SD3."""

import os
import sys

import numpy as np
import pytest
import torch

from flow_grpo import snr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "config", "tiny.py")


def synthetic(signal, noise_std, samples, estimates, generator):
    """Estimates of ``signal`` whose noise is the mean of ``samples`` unit-variance draws times noise_std."""
    noise = torch.randn(estimates, signal.numel(), generator=generator, dtype=torch.float64) * noise_std / samples**0.5
    return signal + noise


def test_cosine_matches_the_closed_form_and_extrapolates_in_samples():
    generator = torch.Generator().manual_seed(0)
    dim, noise_std = 50_000, 1.0
    signal = torch.randn(dim, generator=generator, dtype=torch.float64) * 0.02  # |s|^2 = 20
    s2 = float(signal.pow(2).sum())
    for samples in (16, 128, 1024):
        expected = s2 / (s2 + dim * noise_std**2 / samples)
        cosines = snr.pairwise_cosines(synthetic(signal, noise_std, samples, 6, generator))
        assert abs(float(cosines.mean()) - expected) < 0.01, (samples, float(cosines.mean()), expected)
    # from the cosine at 64 samples, the samples for a pairwise cosine of 0.5; measured there, it is 0.5
    measured = float(snr.pairwise_cosines(synthetic(signal, noise_std, 64, 8, generator)).mean())
    needed = snr.samples_for_cosine(64, measured, 0.5)
    assert needed == pytest.approx(dim * noise_std**2 / s2, rel=0.1)  # rho = m |s|^2 / N = 1 at cosine 0.5
    at_needed = float(snr.pairwise_cosines(synthetic(signal, noise_std, round(needed), 8, generator)).mean())
    assert at_needed == pytest.approx(0.5, abs=0.02)


def test_summary_fields_adam_normalisation_and_no_signal():
    generator = torch.Generator().manual_seed(1)
    # one huge noisy coordinate hides a signal in the others from the raw cosine, not from Adam's
    dim = 20_000
    signal = torch.full((dim,), 0.05, dtype=torch.float64)
    noise = torch.randn(5, dim, generator=generator, dtype=torch.float64) * 0.05
    noise[:, 0] *= 1e4
    result = snr.summary(signal + noise, samples=32)
    assert result["raw_cosine_mean"] < 0.05
    assert result["adam_cosine_mean"] > 0.4
    assert result["estimates"] == 5 and result["samples_per_estimate"] == 32
    # pure noise: no signal, and the sample count for any target is infinite
    pure = snr.summary(torch.randn(4, dim, generator=generator, dtype=torch.float64), samples=32)
    assert abs(pure["raw_cosine_mean"]) < 0.03
    assert snr.samples_for_cosine(32, -0.01) == float("inf")
    assert snr.snr_from_cosine(0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        snr.pairwise_cosines(torch.zeros(1, 10))


def test_the_ideal_floor_matches_reinforce_on_a_linear_gaussian_policy():
    """x = J theta + std eps (D dims, T steps), reward linear in one noise coordinate of the first step: the
    score-function estimates' pairwise cosine at m samples is the closed form of rho = m / (D T + 1)."""
    generator = torch.Generator().manual_seed(3)
    dims, steps, params, std = 64, 3, 4000, 0.7
    jacobians = torch.randn(steps, dims, params, generator=generator, dtype=torch.float64) / params**0.5
    direction = torch.zeros(dims, dtype=torch.float64)
    direction[5] = 1.0

    def estimate(m):
        eps = torch.randn(m, steps, dims, generator=generator, dtype=torch.float64)
        reward = std * eps[:, 0] @ direction  # a . x_1 minus its mean: the advantage
        score = torch.einsum("msd,sdp->mp", eps, jacobians) / std  # sum_t J_t^T eps_t / std = grad log p
        return (reward[:, None] * score).mean(0)

    m = 96
    cosines = snr.pairwise_cosines(torch.stack([estimate(m) for _ in range(12)]))
    signal = float((jacobians[0].T @ direction).pow(2).sum())  # |J_1^T a|^2
    noise = float(sum(j.pow(2).sum() for j in jacobians)) + signal  # tr(sum_t J_t^T J_t) + |J_1^T a|^2
    rho = m * signal / noise
    assert float(cosines.mean()) == pytest.approx(rho / (1 + rho), abs=0.04)
    # isotropic J: rho per sample is close to 1 / (D T + 1), the floor the script reports
    assert signal / noise == pytest.approx(1 / (dims * steps + 1), rel=0.2)
    assert snr.ideal_samples_for_cosine(dims * steps, 0.5) == dims * steps + 1


def test_breakdown_finds_the_step_and_the_group_that_carry_the_signal():
    """Signal only in step 0 and in the parameters of group "a.*.w": those rows show it, the others do not."""
    generator = torch.Generator().manual_seed(2)
    named = [("a.0.w", 3000), ("b.0.w", 3000), ("a.1.w", 3000), ("b.1.w", 3000)]
    groups = snr.parameter_groups(named)
    assert set(groups) == {"a.*.w", "b.*.w"}
    assert torch.equal(groups["a.*.w"], torch.cat([torch.arange(0, 3000), torch.arange(6000, 9000)]))
    signal = torch.zeros(12_000, dtype=torch.float64)
    signal[groups["a.*.w"]] = 0.1  # |s|^2 = 60 against noise 6000 x 0.01 = 60 in group a: cosine 1/2 there
    per_step = torch.randn(6, 3, 12_000, generator=generator, dtype=torch.float64) * 0.1
    per_step[:, 0] += signal
    result = snr.breakdown(per_step, groups, samples=64)
    assert result["steps"][0]["raw_cosine_mean"] == pytest.approx(60 / (60 + 120), abs=0.03)
    assert abs(result["steps"][1]["raw_cosine_mean"]) < 0.03 and abs(result["steps"][2]["raw_cosine_mean"]) < 0.03
    # summing noise-only steps dilutes the signal: |s|^2 / (|s|^2 + j x noise)
    for j, row in enumerate(result["first_steps"]):
        assert row["raw_cosine_mean"] == pytest.approx(60 / (60 + 120 * (j + 1)), abs=0.03)
    # in group a the three steps' noise (3 x 60) meets the whole signal (60); group b has none
    assert result["groups"]["a.*.w"]["raw_cosine_mean"] == pytest.approx(60 / (60 + 180), abs=0.03)
    assert abs(result["groups"]["b.*.w"]["raw_cosine_mean"]) < 0.03
    assert result["groups"]["a.*.w"]["parameters"] == 6000


@pytest.mark.slow
def test_script_writes_json_and_gradients_are_seeded_by_epoch(tmp_path):
    """The run writes its JSON with cosines in range; the same epoch gives the same gradient, another epoch
    a different one."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import gradient_snr

    out = tmp_path / "snr.json"
    result = gradient_snr.main(["--config", f"{TINY}:tiny", "--estimates", "3", "--out", str(out), "--breakdown",
                                "--config.sample.train_batch_size=16", "--config.sample.num_batches_per_epoch=2"])
    assert isinstance(result, dict) and out.exists()
    assert result["estimates"] == 3 and result["samples_per_estimate"] == 32
    assert all(-1 <= result[k] <= 1 for k in ("raw_cosine_mean", "adam_cosine_mean"))
    assert all(row["gradient_norm"] > 0 for row in result["estimates_detail"])
    assert result["noise_dims"] == result["estimates_detail"][0]["latent_dims"] * len(result["breakdown"]["steps"])
    assert result["ideal_samples_for_target"] == result["noise_dims"] + 1
    # the breakdown covers every trained step and every weight of the transformer once
    config_steps = len(result["breakdown"]["steps"])
    assert config_steps >= 1 and len(result["breakdown"]["first_steps"]) == config_steps
    assert result["breakdown"]["first_steps"][-1]["raw_cosine_mean"] == pytest.approx(result["raw_cosine_mean"], abs=1e-9)
    assert sum(row["parameters"] for row in result["breakdown"]["groups"].values()) == result["parameters"]

    from concurrent.futures import ThreadPoolExecutor

    from accelerate import Accelerator

    from flow_grpo.config_cli import parse_args
    from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
    from flow_grpo.rewards import multi_score
    from flow_grpo.backbones import load_backbone

    config = parse_args(["--config", f"{TINY}:tiny", "--config.progress=false"])
    dataset = PromptDataset(config.dataset, "train")
    backbone = load_backbone(config.pretrained.model)
    reward_fn = multi_score(dict(config.reward_fn), dict(config.reward_options), config.reward_nan_policy)

    def gradient(epoch):
        with ThreadPoolExecutor(1) as executor:
            collector, policy, objective = gradient_snr.build_parts(backbone, dataset, reward_fn, config, Accelerator(cpu=True), executor)
            collector.sampler = DistributedKRepeatSampler(len(dataset), config.sample.train_batch_size, config.sample.num_image_per_prompt, 1, 0, seed=0)
            per_step = gradient_snr.estimate(collector, policy, objective, config, epoch)[0]
        assert per_step.ndim == 2 and per_step.shape[1] == sum(p.numel() for p in backbone.transformer.parameters())
        return per_step.sum(0)

    first, again, other = gradient(5), gradient(5), gradient(6)
    assert torch.equal(first, again)
    assert float(torch.nn.functional.cosine_similarity(first, other, dim=0)) < 0.99
    assert np.isfinite(first.numpy()).all()
