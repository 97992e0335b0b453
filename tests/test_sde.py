"""flow_grpo.sde against closed forms and independent re-derivations."""

import math

import pytest
import torch

from flow_grpo.errors import InputError
from flow_grpo.sde import SDEParams, gaussian_log_prob, sde_step_with_logprob


def _inputs(batch=4, shape=(3, 5, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g)
    v = torch.randn(batch, *shape, generator=g)
    return x, v


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
@pytest.mark.parametrize("sigma,sigma_next", [(1.0, 0.9), (0.6, 0.45), (0.1, 0.0)])
def test_zero_noise_is_euler_step(sde_type, sigma, sigma_next):
    x, v = _inputs()
    prev, log_prob, mean, std = sde_step_with_logprob(v, sigma, sigma_next, x, 0.0, sde_type=sde_type)
    euler = x + v * (sigma_next - sigma)
    torch.testing.assert_close(prev, euler, rtol=0, atol=1e-6)
    torch.testing.assert_close(mean, euler, rtol=0, atol=1e-6)
    assert torch.all(std == 0)
    assert torch.all(log_prob == 0)


def test_per_sample_sigmas_match_scalar_calls():
    x, v = _inputs(batch=3)
    sigmas = torch.tensor([1.0, 0.7, 0.2])
    sigmas_next = torch.tensor([0.9, 0.5, 0.1])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    _, _, mean, std = sde_step_with_logprob(v, sigmas, sigmas_next, x, 0.7)
    prev = mean + std * noise
    _, log_prob, _, _ = sde_step_with_logprob(v, sigmas, sigmas_next, x, 0.7, prev_sample=prev)
    for i in range(3):
        _, lp_i, mean_i, std_i = sde_step_with_logprob(
            v[i : i + 1], float(sigmas[i]), float(sigmas_next[i]), x[i : i + 1], 0.7, prev_sample=prev[i : i + 1]
        )
        torch.testing.assert_close(mean[i : i + 1], mean_i)
        torch.testing.assert_close(std[i : i + 1], std_i)
        torch.testing.assert_close(log_prob[i : i + 1], lp_i)


def test_sde_formulas_and_log_prob_is_mean_normal_density():
    x, v = _inputs()
    a, s, s_next = 0.7, 0.6, 0.45
    dt = s_next - s
    prev, log_prob, mean, std = sde_step_with_logprob(v, s, s_next, x, a, generator=torch.Generator().manual_seed(3))
    std_t = a * math.sqrt(s / (1 - s))
    expected_mean = x * (1 + std_t**2 * dt / (2 * s)) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
    torch.testing.assert_close(mean, expected_mean, rtol=1e-6, atol=1e-6)
    assert std.shape == (4, 1, 1, 1)
    torch.testing.assert_close(std.reshape(-1), torch.full((4,), std_t * math.sqrt(-dt)))
    normal = torch.distributions.Normal(expected_mean.double(), std_t * math.sqrt(-dt))
    expected = normal.log_prob(prev.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    # the drawn sample is the mean plus std times the generator's noise
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(prev, expected_mean + std_t * math.sqrt(-dt) * noise, rtol=1e-5, atol=1e-5)


def test_sde_first_step_uses_next_sigma_in_std():
    x, v = _inputs()
    _, _, _, std = sde_step_with_logprob(v, 1.0, 0.9, x, 0.5)
    expected = 0.5 * math.sqrt(1.0 / (1 - 0.9)) * math.sqrt(0.1)
    torch.testing.assert_close(std.reshape(-1), torch.full((4,), expected))


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_rescoring_a_sampled_step_gives_identical_log_prob(sde_type):
    x, v = _inputs()
    prev, log_prob, mean, std = sde_step_with_logprob(
        v, 0.8, 0.7, x, 0.7, sde_type=sde_type, generator=torch.Generator().manual_seed(5)
    )
    prev2, log_prob2, mean2, std2 = sde_step_with_logprob(v, 0.8, 0.7, x, 0.7, prev_sample=prev, sde_type=sde_type)
    assert torch.equal(prev, prev2)
    assert torch.equal(log_prob, log_prob2)
    assert torch.equal(mean, mean2)
    # a different sample scores lower in expectation (the sampled one is near the mean)
    _, far, _, _ = sde_step_with_logprob(v, 0.8, 0.7, x, 0.7, prev_sample=prev + 3 * std, sde_type=sde_type)
    assert torch.all(far < log_prob)


def test_cps_matches_its_definition_term_by_term():
    x, v = _inputs()
    a, s, s_next = 0.8, 0.7, 0.55
    prev, log_prob, mean, std = sde_step_with_logprob(
        v, s, s_next, x, a, sde_type="cps", generator=torch.Generator().manual_seed(9)
    )
    std_t = s_next * math.sin(a * math.pi / 2)
    pred_x0 = x - s * v
    pred_x1 = x + (1 - s) * v
    expected_mean = (1 - s_next) * pred_x0 + math.sqrt(s_next**2 - std_t**2) * pred_x1
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(std.reshape(-1), torch.full((4,), std_t))
    torch.testing.assert_close(mean, expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prev, expected_mean + std_t * noise, rtol=1e-6, atol=1e-6)
    # the original's unnormalised score: -mean((prev - mean)^2) = -std^2 mean(eps^2)
    torch.testing.assert_close(log_prob, -(std_t**2) * (noise**2).mean(dim=(1, 2, 3)), rtol=1e-5, atol=1e-7)
    # optional exact Gaussian density
    gaussian = gaussian_log_prob(prev, mean, std)
    expected = torch.distributions.Normal(expected_mean.double(), std_t).log_prob(prev.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(gaussian.double(), expected, rtol=1e-5, atol=1e-5)


def test_cps_preserves_signal_and_noise_coefficients():
    """With x = (1-s) x0 + s x1 and the exact v = x1 - x0, the mean has coefficient (1 - s') on x0 and the
    noise coefficient sqrt(s'^2 - std^2) on x1, so mean + std * eps keeps the total noise variance s'^2."""
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    s, s_next, a = 0.8, 0.6, 0.5
    x = (1 - s) * x0 + s * x1
    _, _, mean, std = sde_step_with_logprob(x1 - x0, s, s_next, x, a, sde_type="cps")
    coefficient = math.sqrt(s_next**2 - (s_next * math.sin(a * math.pi / 2)) ** 2)
    torch.testing.assert_close(mean, (1 - s_next) * x0 + coefficient * x1, rtol=1e-5, atol=1e-5)
    assert coefficient**2 + float(std.reshape(-1)[0]) ** 2 == pytest.approx(s_next**2)


def test_per_sample_generators():
    x, v = _inputs(batch=3)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    prev, _, mean, std = sde_step_with_logprob(v, 0.5, 0.4, x, 0.7, generator=gens)
    for i in range(3):
        noise = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(100 + i))
        torch.testing.assert_close(prev[i], mean[i] + std[i] * noise)


def test_computes_in_float32_from_half_inputs():
    x, v = _inputs()
    prev, log_prob, mean, std = sde_step_with_logprob(v.to(torch.bfloat16), 0.5, 0.4, x.to(torch.bfloat16), 0.7)
    assert prev.dtype == log_prob.dtype == mean.dtype == std.dtype == torch.float32


def test_bad_arguments_are_named():
    x, v = _inputs()
    with pytest.raises(ValueError, match="sde_type"):
        sde_step_with_logprob(v, 0.5, 0.4, x, 0.7, sde_type="ode")
    with pytest.raises(ValueError, match="differ"):
        sde_step_with_logprob(v[:, :1], 0.5, 0.4, x, 0.7)
    with pytest.raises(ValueError, match="4 values"):
        sde_step_with_logprob(v, torch.tensor([0.5, 0.4]), 0.3, x, 0.7)


# --- marginals: Gaussian data, where the exact velocity is known in closed form -----------------------

DATA_MEAN, DATA_STD = 1.5, 0.5


def exact_velocity(x, s):
    """E[eps - x0 | x_s = x] for x0 ~ N(m, d^2), x_s = (1 - s) x0 + s eps."""
    var = (1 - s) ** 2 * DATA_STD**2 + s**2
    centred = x - (1 - s) * DATA_MEAN
    return (s - (1 - s) * DATA_STD**2) / var * centred - DATA_MEAN


def integrate(noise_level, num_steps, stop_sigma=0.0, drift_correction=True, n=40000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    sigmas = torch.linspace(1.0, stop_sigma, num_steps + 1).tolist()
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        v = exact_velocity(x, s)
        if drift_correction:
            x, _, _, _ = sde_step_with_logprob(v, s, s_next, x, noise_level, generator=g)
        else:  # negative control: same noise, no score term in the drift
            _, _, _, std = sde_step_with_logprob(v, s, s_next, x, noise_level)
            x = x + v * (s_next - s) + std * torch.randn(x.shape, generator=g)
    return x


@pytest.mark.parametrize("noise_level", [0.3, 0.7, 1.0])
def test_sde_preserves_the_ode_marginals_on_gaussian_data(noise_level):
    x = integrate(noise_level, num_steps=500)
    # standard errors with n = 40000: mean 0.0025, std 0.0018
    assert float(x.mean()) == pytest.approx(DATA_MEAN, abs=0.02)
    assert float(x.std()) == pytest.approx(DATA_STD, abs=0.02)
    # an intermediate marginal too: x_s ~ N((1 - s) m, (1 - s)^2 d^2 + s^2)
    half = integrate(noise_level, num_steps=250, stop_sigma=0.5)
    assert float(half.mean()) == pytest.approx(0.5 * DATA_MEAN, abs=0.02)
    assert float(half.std()) == pytest.approx(math.sqrt(0.25 * DATA_STD**2 + 0.25), abs=0.02)


def test_sde_without_drift_correction_does_not_preserve_marginals():
    x = integrate(0.7, num_steps=500, drift_correction=False)
    assert float(x.std()) > DATA_STD + 0.3


def test_coarse_sde_is_close_but_fine_steps_are_closer():
    coarse = abs(float(integrate(0.7, num_steps=10).std()) - DATA_STD)
    fine = abs(float(integrate(0.7, num_steps=500).std()) - DATA_STD)
    assert fine < coarse


# ---- the rollout's other steps: DPM-Solver++(2M) and MixGRPO's sliding window (flow_grpo.sampling_loop) ----

def _gaussian_flow(data_std: float):
    """The exact velocity of the flow from N(0, I) to N(0, data_std^2 I), and its exact ODE solution: the
    marginal std at sigma is s(sigma) = sqrt((1 - sigma)^2 data_std^2 + sigma^2), and the ODE maps x(1) to
    x(1) s(sigma) (it moves quantiles)."""
    def velocity(x, sigma):
        sigma = float(sigma)
        return x * (sigma - (1 - sigma) * data_std**2) / ((1 - sigma) ** 2 * data_std**2 + sigma**2)
    return velocity, lambda sigma: math.sqrt((1 - sigma) ** 2 * data_std**2 + sigma**2)


def test_dpm_solver_first_order_step_is_the_euler_step():
    from flow_grpo.sampling_loop import dpm_solver_step

    x, v = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    for sigma, sigma_next in ((1.0, 0.9), (0.8, 0.55), (0.3, 0.0)):
        torch.testing.assert_close(dpm_solver_step(x, x - sigma * v, None, sigma, sigma_next), x + (sigma_next - sigma) * v,
                                   rtol=0, atol=1e-6)


def test_dpm_solver_is_second_order_where_euler_is_first():
    """On a flow with a closed-form solution, halving the step halves Euler's error and quarters the solver's."""
    from flow_grpo.sampling_loop import sample_with_logprob

    velocity, std_at = _gaussian_flow(data_std=0.3)
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    sigma_end = 0.2  # stop short of 0, where the last (first-order) step would dominate both errors
    exact = x1 * std_at(sigma_end)
    errors = {}
    for solver in ("euler", "dpm2"):
        for steps in (16, 32, 64):
            sigmas = torch.linspace(0.95, sigma_end, steps + 1)
            start = x1 * std_at(0.95)
            final = sample_with_logprob(velocity, start, sigmas, SDEParams(0.0, ode_solver=solver), store_latents=False).final_latents
            errors[solver, steps] = float((final - exact).abs().max())
    euler_ratios = [errors["euler", n] / errors["euler", 2 * n] for n in (16, 32)]
    dpm_ratios = [errors["dpm2", n] / errors["dpm2", 2 * n] for n in (16, 32)]
    assert all(1.8 < r < 2.2 for r in euler_ratios), euler_ratios  # measured 1.98, 1.99
    assert all(3.5 < r < 5.5 for r in dpm_ratios), dpm_ratios  # measured 4.85, 4.51 (4 asymptotically)
    assert errors["dpm2", 16] < errors["euler", 16] / 5


def test_dpm_solver_only_after_the_window():
    """The steps before and inside the SDE window are those of the Euler run; the solver changes the rest."""
    from flow_grpo.sampling_loop import sample_with_logprob

    velocity, _ = _gaussian_flow(data_std=0.3)
    x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    sigmas = torch.linspace(1.0, 0.0, 11)
    runs = {solver: sample_with_logprob(velocity, x1, sigmas, SDEParams(0.7, ode_solver=solver), window=(2, 5),
                                        generator=torch.Generator().manual_seed(3))
            for solver in ("euler", "dpm2")}
    assert torch.equal(runs["euler"].latents, runs["dpm2"].latents)  # stored: entering step 2 .. leaving step 4
    assert torch.equal(runs["euler"].log_probs, runs["dpm2"].log_probs)
    assert not torch.allclose(runs["euler"].final_latents, runs["dpm2"].final_latents)
    with pytest.raises(InputError, match="ode_solver"):
        SDEParams(0.0, ode_solver="heun")


def test_progressive_window_slides_toward_low_noise_and_rolls_back():
    import ml_collections

    from flow_grpo.sampling_loop import progressive_window_start, scheduled_window_start

    starts = [progressive_window_start(i, window_size=2, window_range=(1, 6), shift_every=3, stride=1) for i in range(15)]
    assert starts == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 1, 1, 1]  # 4 positions hold a whole window: 1..4
    assert [progressive_window_start(i, 2, (0, 8), 1, 2) for i in range(5)] == [0, 2, 4, 6, 0]
    assert {progressive_window_start(i, 4, (0, 10), 5, 0) for i in range(50)} == {0}  # MixGRPO-Flash*: frozen
    with pytest.raises(InputError, match="cannot hold"):
        progressive_window_start(0, 4, (0, 3), 1, 1)
    sample = ml_collections.ConfigDict({"sde_window_schedule": "progressive", "sde_window_size": 2, "sde_window_range": (0, 4),
                                        "sde_window_shift_every": 2, "sde_window_stride": 1})
    assert [scheduled_window_start(sample, i) for i in range(7)] == [0, 0, 1, 1, 2, 2, 0]
    sample.sde_window_schedule = "random"
    assert scheduled_window_start(sample, 5) is None
    sample.sde_window_schedule = "sliding"
    with pytest.raises(InputError, match="sde_window_schedule"):
        scheduled_window_start(sample, 0)
