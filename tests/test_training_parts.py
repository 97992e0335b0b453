"""The training parts on their own: typed rollouts, advantages, sample selection, sizes, SD3 rollout collection,
and one update step of every objective with its parameter change checked against a hand computation."""

import copy
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import REPO, load_script
from flow_grpo.config_cli import ConfigError, load_module, parse_args
from flow_grpo.errors import InputError
from flow_grpo.objectives import OBJECTIVES, Minibatch, build_objective
from flow_grpo.rollout_types import Rollout, concatenate
from flow_grpo.sampling_loop import sample_with_logprob
from flow_grpo.sde import SDEParams
from flow_grpo.toy.policy import ToyConditioning, ToyPolicy
from flow_grpo.toy.schedule import sigma_schedule
from flow_grpo.training.advantages import compute_advantages, select_training_samples
from flow_grpo.training.sizes import run_sizes
from flow_grpo.training.update import Learner, make_minibatches, update

base = load_module(os.path.join(REPO, "config", "base.py"))


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


# ---- typed rollouts ------------------------------------------------------------------------------------------


def tiny_rollout(n=4, k_steps=3, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Rollout(
        prompts=[f"p{i % 2}" for i in range(n)], metadata=[{"i": i} for i in range(n)], group_ids=torch.arange(n) % 2,
        conditioning=ToyConditioning(torch.randn(n, 5, generator=g)), final_latents=torch.randn(n, dim, generator=g),
        rewards={"avg": np.arange(n, dtype=float)}, latents=torch.randn(n, k_steps + 1, dim, generator=g),
        log_probs=torch.randn(n, k_steps, generator=g), sigmas=torch.rand(n, k_steps, generator=g),
        sigmas_next=torch.rand(n, k_steps, generator=g), reward_info={"x": np.arange(n) * 2.0}, timing={"sample_time_s": 1.0},
    )


def test_rollout_select_concatenate_and_transitions():
    rollout = tiny_rollout()
    picked = rollout.select(torch.tensor([3, 1]))
    assert picked.prompts == ["p1", "p1"] and picked.metadata == [{"i": 3}, {"i": 1}]
    assert torch.equal(picked.conditioning.embedding, rollout.conditioning.embedding[[3, 1]])
    np.testing.assert_array_equal(picked.rewards["avg"], [3.0, 1.0])
    np.testing.assert_array_equal(picked.reward_info["x"], [6.0, 2.0])
    assert picked.timing == {"sample_time_s": 1.0} and picked.images is None  # not per sample / absent: kept
    joined = concatenate([rollout.select(torch.tensor([0, 1])), rollout.select(torch.tensor([2, 3]))])
    assert joined.prompts == rollout.prompts and torch.equal(joined.latents, rollout.latents)
    np.testing.assert_array_equal(joined.rewards["avg"], rollout.rewards["avg"])
    rows, steps = torch.tensor([2, 0]), torch.tensor([1, 2])
    batch = rollout.transitions(rows, steps, "cpu")
    assert torch.equal(batch.latents, rollout.latents[[2, 0], [1, 2]])
    assert torch.equal(batch.next_latents, rollout.latents[[2, 0], [2, 3]])
    assert torch.equal(batch.old_log_probs, rollout.log_probs[[2, 0], [1, 2]])
    assert torch.equal(batch.sigmas_next, rollout.sigmas_next[[2, 0], [1, 2]])
    assert torch.equal(batch.conditioning.pooled, rollout.conditioning.embedding[[2, 0]])
    assert batch.old_means is None
    ode = Rollout(prompts=["a"], metadata=[{}], group_ids=torch.zeros(1), conditioning=rollout.conditioning.select(torch.tensor([0])),
                  final_latents=torch.zeros(1, 2), rewards={"avg": np.zeros(1)})
    with pytest.raises(ValueError, match="stored no denoising steps"):
        ode.transitions(torch.tensor([0]), torch.tensor([0]), "cpu")


# ---- advantages and sample selection -------------------------------------------------------------------------


def train_config(**changes):
    config = base.train_config()
    for key, value in changes.items():
        config[key] = value
    return config


def test_compute_advantages_groups_clips_and_drops_non_finite(accelerator):
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 14.0, np.nan, 5.0, 5.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    rollout = tiny_rollout(n=8)
    rollout.rewards, rollout.group_ids = {"avg": rewards}, ids
    advantages, stats = compute_advantages(accelerator, rollout, train_config(adv_clip_max=1.5))
    finite = rewards[np.isfinite(rewards)]
    std = finite.std()  # global std over the finite rewards
    expected = np.array([-1 / (std + 1e-4), 0, 1 / (std + 1e-4), -2 / (std + 1e-4), 2 / (std + 1e-4), 0, 0, 0])
    np.testing.assert_allclose(advantages.numpy(), np.clip(expected, -1.5, 1.5), rtol=1e-6)
    assert advantages.dtype == torch.float32
    assert stats["reward_nonfinite"] == 1 and stats["num_groups"] == 3 and stats["advantage_checksum_spread"] == 0
    assert stats["zero_std_groups"] == pytest.approx(1 / 3)  # group 2: two equal rewards
    # per-group std, and whole-batch normalisation (DDPO)
    per_group, _ = compute_advantages(accelerator, rollout, train_config(global_std=False))
    assert float(per_group[3]) == pytest.approx(-2 / (2 + 1e-4), rel=1e-6)
    batch, _ = compute_advantages(accelerator, rollout, train_config(per_prompt_stat_tracking=False))
    np.testing.assert_allclose(batch.numpy()[np.isfinite(rewards)], (finite - finite.mean()) / (finite.std() + 1e-8), rtol=1e-5)


def test_select_training_samples_drops_zeros_and_fills_whole_windows(accelerator):
    advantages = torch.tensor([0.5, 0.0, -1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    keep, stats = select_training_samples(accelerator, advantages, torch.Generator().manual_seed(0), multiple_of=4)
    assert len(keep) == 4 and {0, 2, 5} <= set(keep.tolist())  # 3 non-zero, one zero refill to a window of 4
    assert torch.all(keep[1:] > keep[:-1]) and stats["kept_fraction"] == pytest.approx(3 / 8)
    keep, _ = select_training_samples(accelerator, advantages, torch.Generator().manual_seed(0), multiple_of=1)
    assert keep.tolist() == [0, 2, 5]


def test_make_minibatches_cover_the_kept_rows_with_their_advantages():
    rollout = tiny_rollout(n=8, k_steps=4)
    advantages = torch.arange(8, dtype=torch.float32)
    keep = torch.tensor([0, 2, 3, 5, 6, 7])
    config = train_config(batch_size=4, timestep_fraction=0.5, timestep_strategy="random")
    minibatches = make_minibatches(rollout, advantages, keep, config, torch.Generator().manual_seed(0), "cpu")
    assert [len(m.rows) for m in minibatches] == [4, 2]
    rows = torch.cat([m.rows for m in minibatches])
    assert sorted(rows.tolist()) == keep.tolist()
    for m in minibatches:
        assert torch.equal(m.advantages, advantages[m.rows]) and m.steps.shape == (len(m.rows), 2)
        assert m.num_micro_steps == 2 and torch.all(m.steps[:, 1] > m.steps[:, 0])


def test_run_sizes_and_their_checks():
    config = parse_args(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny"])
    sizes = run_sizes(config, processes=2)
    assert (sizes.images_per_epoch, sizes.groups_per_epoch, sizes.stored_steps, sizes.trained_steps) == (32, 8, 6, 3)
    assert sizes.micro_steps_per_optimizer_step == 3 and sizes.images_per_optimizer_step == 16
    assert sizes.max_optimizer_steps_per_epoch == 2 and "images per epoch" in sizes.describe()
    config.sample.sde_window_size = 2
    assert run_sizes(config, 1).stored_steps == 2
    config.train.batch_size = 5
    with pytest.raises(ConfigError, match="not a multiple of train.batch_size"):
        run_sizes(config, 1)


# ---- rollout collection ---------------------------------------------------------------------------------


def test_rollout_collector(accelerator):
    from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
    from flow_grpo.backbones import load_backbone
    from flow_grpo.training.collector import RolloutCollector

    config = parse_args(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny", "--config.progress=false",
                         "--config.sample.same_latent=true"])
    backbone = load_backbone("builtin:tiny")
    dataset = PromptDataset.from_prompts(["a red circle", "a cat", "a dog", "a red circle"])  # duplicate text: one group

    def reward(images, prompts, metadata):
        return {"avg": images.mean(dim=(1, 2, 3)).double().numpy()}, {"numeric": np.ones(len(prompts)), "text": ["x"] * len(prompts)}

    with ThreadPoolExecutor(1) as executor:
        collector = RolloutCollector(
            backbone=backbone, transformer=backbone.transformer, negative=backbone.negative_conditioning(32, "cpu"), dataset=dataset,
            sampler=DistributedKRepeatSampler(len(dataset), 8, 4, seed=0), reward_fn=reward, executor=executor,
            accelerator=accelerator, config=config,
        )
        rollout = collector.collect(epoch=0, store_means=True)
    assert len(rollout) == 16  # 2 batches of 8
    assert rollout.latents.shape == (16, 7, 4, 16, 16) and rollout.log_probs.shape == (16, 6)
    assert rollout.prev_sample_means.shape == (16, 6, 4, 16, 16) and rollout.images.shape == (16, 3, 64, 64)
    assert torch.equal(rollout.latents[:, -1], rollout.final_latents)
    assert rollout.sigmas.shape == (16, 6) and torch.all(rollout.sigmas > rollout.sigmas_next)
    assert rollout.conditioning.prompt_embeds.shape[0] == 16
    assert set(rollout.reward_info) == {"numeric"}  # non-numeric info is left out
    assert set(rollout.timing) == {"sample_time_s", "reward_wait_s"}
    np.testing.assert_allclose(rollout.rewards["avg"], rollout.images.mean(dim=(1, 2, 3)).numpy())
    for prompt, group in zip(rollout.prompts, rollout.group_ids.tolist()):
        assert group == {"a red circle": 0, "a cat": 1, "a dog": 2}[prompt]
    # same_latent: a batch's samples of one prompt start from one noise
    for b in (0, 8):
        rows = [i for i in range(b, b + 8) if rollout.prompts[i] == rollout.prompts[b]]
        assert len(rows) > 1 and all(torch.equal(rollout.latents[r, 0], rollout.latents[rows[0], 0]) for r in rows)


def test_evaluation_with_several_images_per_prompt_adds_images_and_keeps_the_first(accelerator):
    """Image 0 of every prompt is the image a one-image evaluation makes (same seed); the others differ."""
    from flow_grpo.data import PromptDataset
    from flow_grpo.backbones import load_backbone
    from flow_grpo.training.evaluate import evaluate_rewards

    backbone = load_backbone("builtin:tiny")
    dataset = PromptDataset.from_prompts(["a red circle", "a cat", "a dog"])
    seen = {}

    def run(per_prompt):
        config = parse_args(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny", "--config.progress=false",
                             f"--config.sample.eval_images_per_prompt={per_prompt}", "--config.sample.test_batch_size=2"])
        images = seen.setdefault(per_prompt, [])

        def reward(batch, prompts, metadata):
            images.extend(zip(prompts, batch))
            return {"avg": batch.mean(dim=(1, 2, 3)).double().numpy()}, {}

        return evaluate_rewards(backbone=backbone, transformer=backbone.transformer, dataset=dataset, reward_fn=reward,
                        config=config, accelerator=accelerator)

    one, three = run(1), run(3)
    assert one["eval_num_images"] == 3 and three["eval_num_images"] == 9
    assert [p for p, _ in seen[3]] == [p for p in dataset.prompts for _ in range(3)]
    for i, (prompt, image) in enumerate(seen[1]):
        torch.testing.assert_close(seen[3][3 * i][1], image, atol=1e-4, rtol=0)  # image 0: the same seed (other batches)
        assert (seen[3][3 * i + 1][1] - image).abs().max() > 0.01
    expected = np.mean([float(image.mean()) for _, image in seen[3]])
    assert three["eval_reward_avg"] == pytest.approx(expected, rel=1e-6)


# ---- one update step per objective, checked by hand ------------------------------------------------------------


class ConstantVelocity(torch.nn.Module):
    """v = theta whatever the latent, time and prompt: d(mean)/d(theta) is the step's velocity coefficient."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.as_tensor(theta, dtype=torch.float32))

    def forward(self, latents, sigma, cond):
        return self.theta.expand(latents.shape[0], -1)


def sde_coefficients(sigma: float, sigma_next: float, a: float):
    """Independent of flow_grpo.sde: the std of the step and d(mean)/d(v) for the `sde` type."""
    dt = sigma_next - sigma
    sigma_hat = sigma_next if sigma == 1 else sigma
    std_t = a * math.sqrt(sigma / (1 - sigma_hat))
    return std_t * math.sqrt(-dt), (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt, dt


N, D, K, NOISE = 8, 3, 4, 0.7


def rollout_of(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(N, 2, generator=g)
    trajectory = sample_with_logprob(lambda x, s: model(x, s, cond), torch.randn(N, D, generator=g), sigma_schedule(K),
                                     SDEParams(NOISE), generator=g, store_means=True)
    return Rollout(
        prompts=[str(i // 2) for i in range(N)], metadata=[{}] * N, group_ids=torch.arange(N) // 2,
        conditioning=ToyConditioning(cond), final_latents=trajectory.final_latents, rewards={"avg": np.zeros(N)},
        latents=trajectory.latents, log_probs=trajectory.log_probs, sigmas=trajectory.sigmas.expand(N, -1),
        sigmas_next=trajectory.sigmas_next.expand(N, -1), prev_sample_means=trajectory.prev_sample_means,
    )


def one_update(objective_name, advantages, reference_shift=0.0, own=None, setup=None, **train):
    """One optimizer step (SGD, lr 1, no clipping) of minibatches of 4, 2 accumulated, first 2 of 4 steps;
    ``own``: the objective's own settings (config.train.<name>); ``setup(objective, model)`` runs before the
    update (after ``attach``)."""
    from accelerate import Accelerator

    config = parse_args(["--config", os.path.join(REPO, "config", "toy.py") + ":four_modes_grpo", "--config.progress=false"])
    config.train.update(objective=objective_name, batch_size=4, gradient_accumulation_steps=2, timestep_fraction=0.5,
                        max_grad_norm=1e9, **train)
    if own:
        config.train[objective_name].update(own)
    torch.manual_seed(0)
    model = ConstantVelocity([0.3, -0.2, 0.5])
    reference = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        reference.theta -= reference_shift
    rollout = rollout_of(model)
    objective = build_objective(config.train, pooled_dim=2)
    objective.attach(list(model.parameters()), ["theta"])
    if setup is not None:
        setup(objective, model)
    parameters = [*model.parameters(), *(p for m in objective.trained_modules.values() for p in m.parameters())]
    before = [p.detach().clone() for p in parameters]
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2 * 2)
    optimizer = accelerator.prepare(torch.optim.SGD(parameters, lr=1.0))
    learner = Learner(accelerator=accelerator, policy=ToyPolicy(model, reference, SDEParams(NOISE)), objective=objective,
                      optimizer=optimizer, parameters=parameters)
    stats, step = update(learner, rollout, advantages, torch.arange(N), config, torch.Generator().manual_seed(1), 0)
    assert step == 1
    changes = [b - p.detach() for b, p in zip(before, parameters)]  # = the gradient (SGD, lr 1)
    return rollout, changes, stats


def per_step_terms(rollout, j):
    """x_next - mean [N, D], the std, d(mean)/d(v) and dt of stored step j (the same for every sample)."""
    std, coefficient, dt = sde_coefficients(float(rollout.sigmas[0, j]), float(rollout.sigmas_next[0, j]), NOISE)
    return (rollout.latents[:, j + 1] - rollout.prev_sample_means[:, j]).double().numpy(), std, coefficient, dt


ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.2, 2.0, -1.5, 0.3, 0.9])
WINDOW = 2 * 2  # accelerate divides every micro-step's loss by accumulation x trained steps


def test_grpo_step_by_hand():
    """On-policy the clipped surrogate's gradient is -mean_i A_i d log p_i / d theta, with
    d log p / d theta_d = (x_next - mean)_d c / (D std^2); each micro-step's loss is divided by the window."""
    rollout, (change,), stats = one_update("grpo", ADVANTAGES)
    expected = np.zeros(D)
    for j in range(2):
        residual, std, coefficient, _ = per_step_terms(rollout, j)
        expected += -(ADVANTAGES.double().numpy()[:, None] * residual * coefficient / (D * std**2)).sum(0) / 4 / WINDOW
    np.testing.assert_allclose(change.double().numpy(), expected, rtol=1e-4)
    assert stats["first_microstep_clipfrac"] == 0 and stats["first_microstep_approx_kl"] < 1e-12
    assert "kl_loss" in stats and stats["kl_loss"] == 0.0  # beta 0: no KL computed


def test_grpo_kl_step_by_hand():
    """With zero advantages only beta KL moves theta: KL = mean_d (c (theta - theta_ref))^2 / (2 std^2)."""
    shift = torch.tensor([0.1, -0.2, 0.05])
    rollout, (change,), stats = one_update("grpo", torch.zeros(N), reference_shift=shift, beta=0.5)
    expected = np.zeros(D)
    for j in range(2):
        _, std, coefficient, _ = per_step_terms(rollout, j)
        expected += 0.5 * coefficient**2 * shift.double().numpy() / (D * std**2) * 2 / WINDOW  # 2 minibatches
    np.testing.assert_allclose(change.double().numpy(), expected, rtol=1e-4)
    kl_first = np.mean([(per_step_terms(rollout, 0)[2] * s) ** 2 / (2 * per_step_terms(rollout, 0)[1] ** 2) for s in shift.numpy()])
    assert stats["first_microstep_kl"] == pytest.approx(kl_first, rel=1e-4)


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_kl_forms_differ_by_exactly_the_step_size(sde_type):
    """kl_form "paper" (the original's (mean - mean_ref)^2 / (2 std_t^2)) is -dt times the exact Gaussian KL of
    an `sde` step, whose std is std_t sqrt(-dt); the `cps` step's std has no dt factor: the forms agree."""
    from flow_grpo.objectives.grpo import step_kl
    from flow_grpo.sde import sde_step_with_logprob

    g = torch.Generator().manual_seed(0)
    sigmas = sigma_schedule(10, shift=3.0)
    for i in range(9):
        x, v, v_ref = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
        s, s_next = sigmas[i].expand(3), sigmas[i + 1].expand(3)
        _, _, mean, std = sde_step_with_logprob(v, s, s_next, x, 0.7, sde_type=sde_type, generator=g)
        _, _, mean_ref, _ = sde_step_with_logprob(v_ref, s, s_next, x, 0.7, sde_type=sde_type, generator=g)
        exact = step_kl(mean, mean_ref, std, s_next - s, "exact", sde_type)
        paper = step_kl(mean, mean_ref, std, s_next - s, "paper", sde_type)
        if sde_type == "sde":
            std_t = 0.7 * math.sqrt(float(sigmas[i]) / (1 - float(sigmas[i + 1] if i == 0 else sigmas[i])))  # the original's std_t
            by_hand = ((mean - mean_ref) ** 2).mean(dim=(1, 2, 3)) / (2 * std_t**2)
            torch.testing.assert_close(paper, by_hand, rtol=1e-5, atol=0)
            torch.testing.assert_close(exact / paper, (1 / (sigmas[i] - sigmas[i + 1])).expand(3), rtol=1e-5, atol=0)
        else:
            assert torch.equal(exact, paper)
    with pytest.raises(ValueError, match="kl_form"):
        step_kl(mean, mean_ref, std, s_next - s, "original", "sde")


def test_grpo_paper_kl_step_by_hand():
    """The same step as test_grpo_kl_step_by_hand with kl_form "paper": each step's KL gradient times -dt."""
    shift = torch.tensor([0.1, -0.2, 0.05])
    rollout, (change,), _ = one_update("grpo", torch.zeros(N), reference_shift=shift, beta=0.5, kl_form="paper")
    expected = np.zeros(D)
    for j in range(2):
        _, std, coefficient, dt = per_step_terms(rollout, j)
        expected += 0.5 * coefficient**2 * shift.double().numpy() / (D * std**2) * (-dt) * 2 / WINDOW
    np.testing.assert_allclose(change.double().numpy(), expected, rtol=1e-4)


def test_grpo_guard_step_by_hand():
    """On-policy GRPO-Guard's ratio is 1 and its gradient is std times the log-prob's, the loss divided by -dt."""
    rollout, (change,), stats = one_update("grpo_guard", ADVANTAGES)
    expected = np.zeros(D)
    for j in range(2):
        residual, std, coefficient, dt = per_step_terms(rollout, j)
        expected += -(ADVANTAGES.double().numpy()[:, None] * std * residual * coefficient / (D * std**2)).sum(0) / (-dt) / 4 / WINDOW
    np.testing.assert_allclose(change.double().numpy(), expected, rtol=1e-4)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6)


def test_flowrl_step_by_hand():
    """At the start log Z = 0 (zero-initialised head), the policy equals the reference and w = 1, so
    delta = -tb_coef A; the gradient of mean(w delta^2) is sum_t mean_i(2 delta_i / J d log p_it) for the
    policy and mean_i(2 delta_i) for log Z's bias, averaged over the accumulated minibatches."""
    tb = 2.0
    rollout, (change, weight_change, bias_change), stats = one_update("flowrl", ADVANTAGES, own={"tb_coef": tb, "proj_layer": 1})
    delta = -tb * ADVANTAGES.double().numpy()
    expected = np.zeros(D)
    for j in range(2):
        residual, std, coefficient, _ = per_step_terms(rollout, j)
        expected += (2 * delta[:, None] / 2 * residual * coefficient / (D * std**2)).sum(0) / 4 / 2  # 2 minibatches
    np.testing.assert_allclose(change.double().numpy(), expected, rtol=1e-4)
    # log Z's loss mean(w (z + delta - z)^2) enters once per minibatch; the optimizer sees the gradient of
    # the trajectory-balance loss itself, averaged over the 2 accumulated minibatches (not divided by J)
    assert float(bias_change) == pytest.approx((2 * delta).sum() / 4 / 2, rel=1e-5)
    cond = rollout.conditioning.embedding.double().numpy()
    np.testing.assert_allclose(weight_change.double().numpy().ravel(), (2 * delta[:, None] * cond).sum(0) / 4 / 2, rtol=1e-5)
    assert stats["tb_loss"] == pytest.approx(np.mean(delta**2), rel=1e-5) and stats["importance_weight"] == 1.0


def test_every_objective_is_covered_by_a_hand_computation():
    # mixgrpo is grpo's loss (test_grpo_step_by_hand) on the sampler's sliding window (tests/test_sde.py)
    assert set(OBJECTIVES) == {"grpo", "grpo_guard", "mixgrpo", "flowrl", "nft", "awm", "dpo", "dgpo", "sft",
                               "grpo_gardo", "nft_gardo"}
    assert OBJECTIVES["mixgrpo"].loss is OBJECTIVES["grpo"].loss


# ---- the forward-process objectives: loss and gradient of one micro-step, by hand --------------------------


def forward_setup(name, theta, old=None, reference=None, own=None, **train):
    """A constant-velocity policy (v = theta), its objective attached, and a minibatch of 6 rows of an ODE
    rollout with 5 schedule steps; ``own``: the objective's own settings (config.train.<name>)."""
    config = base.train_config()
    config.update(objective=name, **train)
    if own:
        config[name].update(own)
    model = ConstantVelocity(theta)
    ref = ConstantVelocity(reference if reference is not None else theta).requires_grad_(False)
    policy = ToyPolicy(model, ref, SDEParams(0.0))
    objective = build_objective(config, pooled_dim=2)
    objective.attach(list(model.parameters()), ["theta"])
    for snapshot in objective.snapshots.values():  # the old policy / reference / KL-EMA snapshots
        snapshot.shadow[0].copy_(torch.as_tensor(old if old is not None else theta))
    g = torch.Generator().manual_seed(3)
    n = 6
    rollout = Rollout(
        prompts=[str(i // 3) for i in range(n)], metadata=[{}] * n, group_ids=torch.arange(n) // 3,
        conditioning=ToyConditioning(torch.randn(n, 2, generator=g)), final_latents=torch.randn(n, D, generator=g),
        rewards={"avg": np.array([0.1, 0.9, 0.5, 0.3, 0.3, 0.8])},
        sigmas=sigma_schedule(5)[:-1].expand(n, -1), sigmas_next=sigma_schedule(5)[1:].expand(n, -1),
    )
    minibatch = Minibatch(rollout=rollout, rows=torch.arange(n), steps=torch.tensor([[1, 3]] * n),
                          advantages=torch.tensor([1.5, -2.0, 0.5, 0.0, -6.0, 3.0]), device="cpu", noise_seed=11)
    return policy, objective, minibatch, config


def grad_of(objective, policy, minibatch, j=1):
    loss, stats = objective.loss(policy, minibatch, j, None)
    (grad,) = torch.autograd.grad(loss, policy.trained_module.theta)
    return float(loss.detach()), grad.double().numpy(), stats


def np_inputs(minibatch, j, times=None):
    x0 = minibatch.rollout.final_latents.double().numpy()
    eps = minibatch.noise(j).double().numpy()
    t = (times if times is not None else minibatch.schedule_sigmas(j)).double().numpy()
    return x0, eps, t, (1 - t[:, None]) * x0 + t[:, None] * eps


def test_nft_loss_and_gradient_by_hand():
    theta, old, reference = np.array([0.3, -0.2, 0.5]), np.array([0.1, 0.0, 0.4]), np.array([0.0, 0.1, 0.2])
    beta, kl_beta, m = 0.7, 0.05, 5.0
    policy, objective, minibatch, _ = forward_setup("nft", theta, old, reference, own={"mix_strength": beta}, beta=kl_beta)
    loss, grad, stats = grad_of(objective, policy, minibatch)
    x0, eps, t, x_t = np_inputs(minibatch, 1)
    A = np.clip(minibatch.advantages.double().numpy(), -m, m)
    r = np.clip(A / (2 * m) + 0.5, 0, 1)
    total, expected = 0.0, np.zeros(D)
    for sign, v in ((+1, beta * theta + (1 - beta) * old), (-1, (1 + beta) * old - beta * theta)):
        x0_pred = x_t - t[:, None] * v
        w = np.maximum(np.abs(x0_pred - x0).mean(1), 1e-5)
        part = ((x0_pred - x0) ** 2).mean(1) / w
        share = r if sign > 0 else 1 - r
        total += m * np.mean(share * part / beta)
        # d x0_pred / d theta = -t beta for the positive policy, +t beta for the negative one
        expected += m * np.mean((share / beta / w)[:, None] * 2 / D * (x0_pred - x0) * (-sign * beta * t)[:, None], axis=0)
    total += kl_beta * np.mean((theta - reference) ** 2)
    expected += kl_beta * 2 * (theta - reference) / D
    assert loss == pytest.approx(total, rel=1e-5)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    assert float(stats["old_deviation"]) == pytest.approx(np.mean((theta - old) ** 2), rel=1e-5)


def test_nft_old_policy_schedule_and_sampling_weights():
    from flow_grpo.objectives.nft import old_policy_decay

    assert old_policy_decay(100, 0, 0.001, 0.5) == pytest.approx(0.1) and old_policy_decay(900, 0, 0.001, 0.5) == 0.5
    assert old_policy_decay(70, 75, 0.0075, 0.999) == 0.0 and old_policy_decay(95, 75, 0.0075, 0.999) == pytest.approx(0.15)
    policy, objective, _, _ = forward_setup("nft", [1.0, 1.0, 1.0], old=[0.0, 0.0, 0.0], own={"old_policy_decay": (0.0, 0.001, 0.5)})
    with objective.rollout_weights(0):  # the old policy samples
        assert torch.equal(policy.trained_module.theta.detach(), torch.zeros(3))
    assert torch.equal(policy.trained_module.theta.detach(), torch.ones(3))
    assert objective.end_update(global_step=300)["old_policy_decay"] == pytest.approx(0.3)
    np.testing.assert_allclose(objective.snapshots["old"].shadow[0].numpy(), [0.7] * 3, rtol=1e-6)  # 0.3 old + 0.7 theta


def test_awm_loss_and_gradient_by_hand():
    theta, old, reference = np.array([0.3, -0.2, 0.5]), np.array([0.25, -0.1, 0.45]), np.array([0.0, 0.1, 0.2])
    p, kl_beta, ema_beta, m = 0.25, 0.01, 1.0, 5.0
    policy, objective, minibatch, _ = forward_setup("awm", theta, old, reference, own={"power": p, "kl_ema_beta": ema_beta},
                                                    beta=kl_beta, clip_range=1.0)
    loss, grad, stats = grad_of(objective, policy, minibatch)
    x0, eps, t, _ = np_inputs(minibatch, 1)
    target = eps - x0
    A = np.clip(minibatch.advantages.double().numpy(), -m, m) / m

    def log_p(v):
        mse = ((v - target) ** 2).mean(1)
        return -((mse + 1e-10) ** p - 1e-10**p) / p * t, mse

    logp, mse = log_p(theta)
    logp_old, _ = log_p(old)
    ratio = np.exp(logp - logp_old)
    clipped = np.clip(ratio, 0.0, 2.0)
    policy_terms = np.maximum(-A * ratio, -A * clipped)
    ema = old  # the KL-EMA snapshot also holds `old` here
    total = policy_terms.mean() + kl_beta * np.mean((theta - reference) ** 2) + ema_beta * np.mean((theta - ema) ** 2)
    dlogp = -((mse + 1e-10) ** (p - 1) * t)[:, None] * 2 / D * (theta - target)
    expected = np.mean((-A * ratio)[:, None] * dlogp, axis=0) + kl_beta * 2 * (theta - reference) / D + ema_beta * 2 * (theta - ema) / D
    assert loss == pytest.approx(total, rel=1e-5)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    assert float(stats["ratio_mean"]) == pytest.approx(ratio.mean(), rel=1e-5)


def test_dpo_pairs_and_loss_and_gradient_by_hand():
    from flow_grpo.objectives.dpo import group_extremes

    theta, reference = np.array([0.3, -0.2, 0.5]), np.array([0.0, 0.1, 0.2])
    dpo_beta = 3.0
    policy, objective, minibatch, _ = forward_setup("dpo", theta, old=reference, own={"temperature": dpo_beta, "time_shift": 3.0})
    values = objective.training_advantages(minibatch.rollout, torch.zeros(6))
    # groups {0, 1, 2} (rewards 0.1, 0.9, 0.5) and {3, 4, 5} (0.3, 0.3, 0.8): winners 1 and 5, losers 0 and 3
    assert values.tolist() == [0, 1, 0, 0, 0, 1] and objective.partner[[1, 5]].tolist() == [0, 3]
    assert group_extremes(minibatch.rollout)[0].sum() == 2
    winners = Minibatch(rollout=minibatch.rollout, rows=torch.tensor([1, 5, 2]), steps=torch.tensor([[0, 1]] * 3),
                        advantages=torch.tensor([1.0, 1.0, 0.0]), device="cpu", noise_seed=5)  # row 2: a refill, weight 0
    loss, grad, stats = grad_of(objective, policy, winners)
    from flow_grpo.objectives.dpo import logit_normal_times

    t = logit_normal_times(winners.uniform(1, "t_a"), winners.uniform(1, "t_b"), 3.0).double().numpy()
    eps = winners.noise(1).double().numpy()
    x0 = minibatch.rollout.final_latents.double().numpy()
    total, expected = 0.0, np.zeros(D)
    for i, (w, l, weight) in enumerate(((1, 0, 1.0), (5, 3, 1.0), (2, 2, 0.0))):
        def err(v, row):
            return np.mean((v - (eps[i] - x0[row])) ** 2)
        z = -0.5 * dpo_beta * ((err(theta, w) - err(reference, w)) - (err(theta, l) - err(reference, l)))
        total += weight * -np.log(1 / (1 + np.exp(-z)))
        dz = -0.5 * dpo_beta * (2 / D * (theta - (eps[i] - x0[w])) - 2 / D * (theta - (eps[i] - x0[l])))
        expected += weight * -(1 - 1 / (1 + np.exp(-z))) * dz
    assert 0 < t.min() and t.max() < 1
    assert loss == pytest.approx(total / 2, rel=1e-5)
    np.testing.assert_allclose(grad, expected / 2, rtol=1e-4)
    assert 0 <= float(stats["dpo_accuracy"]) <= 1


def test_sft_chooses_each_groups_best_and_its_loss_and_gradient_by_hand():
    theta, reference = np.array([0.3, -0.2, 0.5]), np.array([0.0, 0.1, 0.2])
    policy, objective, minibatch, _ = forward_setup("sft", theta, reference=reference, own={"time_shift": 1.0}, beta=0.5)
    values = objective.training_advantages(minibatch.rollout, torch.zeros(6))
    assert values.tolist() == [0, 1, 0, 0, 0, 1]
    minibatch.advantages = values
    loss, grad, _ = grad_of(objective, policy, minibatch)
    from flow_grpo.objectives.dpo import logit_normal_times

    t = logit_normal_times(minibatch.uniform(1, "t_a"), minibatch.uniform(1, "t_b"), 1.0)
    assert t.min() > 0 and t.max() < 1
    x0, eps, _, _ = np_inputs(minibatch, 1, times=t)
    chosen = values.numpy().astype(bool)
    residual = theta - (eps - x0)
    total = np.mean((residual[chosen] ** 2).mean(1)) + 0.5 * np.mean((theta - reference) ** 2)
    expected = np.mean(2 / D * residual[chosen], axis=0) + 0.5 * 2 * (theta - reference) / D
    assert loss == pytest.approx(total, rel=1e-5)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


# ---- DGPO: one sigmoid per group over advantage-weighted error improvements ---------------------------------


def _dgpo_hand(theta, reference, minibatch, dgpo_beta, j=1):
    """(S_g per row [n], each row's error gradient [n, D], e_i) by hand for the constant-velocity policy."""
    from flow_grpo.seeding import generator_for

    x0 = minibatch.rollout.final_latents.double().numpy()
    groups = minibatch.rollout.group_ids.numpy()
    eps = {g: torch.randn(D, generator=generator_for(minibatch.noise_seed, "dgpo_noise", j, int(g))).double().numpy()
           for g in set(groups.tolist())}
    target = np.stack([eps[g] - x0[i] for i, g in enumerate(groups)])
    error = lambda v: ((v - target) ** 2).mean(1)  # noqa: E731
    A = minibatch.advantages.double().numpy()
    S = np.array([dgpo_beta * np.mean([A[k] * (error(theta)[k] - error(reference)[k]) for k in np.flatnonzero(groups == g)])
                  for g in groups])
    return S, 2 / D * (theta - target), error


def test_dgpo_group_sigmoid_loss_and_gradient_by_hand():
    """loss = mean_i softplus(S_g(i)) / dgpo_beta + beta mean((v - v_ref)^2); its gradient is the authors'
    code's, mean_i sigmoid(S_g(i)) A_i de_i / dtheta, with one noise per group."""
    theta, reference = np.array([0.3, -0.2, 0.5]), np.array([0.0, 0.1, 0.2])
    dgpo_beta, kl_beta = 4.0, 0.05
    policy, objective, minibatch, _ = forward_setup("dgpo", theta, reference=reference, own={"temperature": dgpo_beta, "trust_region": 0.0},
                                                    beta=kl_beta)
    loss, grad, stats = grad_of(objective, policy, minibatch)
    S, error_grad, _ = _dgpo_hand(theta, reference, minibatch, dgpo_beta)
    A = minibatch.advantages.double().numpy()
    sigmoid = 1 / (1 + np.exp(-S))
    total = np.mean(np.log1p(np.exp(S))) / dgpo_beta + kl_beta * np.mean((theta - reference) ** 2)
    expected = np.mean((sigmoid * A)[:, None] * error_grad, axis=0) + kl_beta * 2 * (theta - reference) / D
    assert loss == pytest.approx(total, rel=1e-5)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    assert float(stats["dgpo_weight"]) == pytest.approx(sigmoid.mean(), rel=1e-5) and float(stats["dgpo_group_rows"]) == 3


def test_dgpo_trust_region_stops_the_gradient_of_rows_past_the_clip():
    """Rows whose exp(e_old - e) left 1 +- clip in their advantage's direction keep their place in S_g but pass no
    gradient (the authors' clip_dsm)."""
    theta, reference, old = np.array([0.3, -0.2, 0.5]), np.array([0.0, 0.1, 0.2]), np.array([0.5, -0.4, 0.3])
    dgpo_beta, clip = 4.0, 0.05
    policy, objective, minibatch, _ = forward_setup("dgpo", theta, old=old, reference=reference,
                                                    own={"temperature": dgpo_beta, "trust_region": clip})
    loss, grad, stats = grad_of(objective, policy, minibatch)
    S, error_grad, error = _dgpo_hand(theta, reference, minibatch, dgpo_beta)
    A = minibatch.advantages.double().numpy()
    ratio = np.exp(error(old) - error(theta))
    clipped = np.where(A > 0, ratio > 1 + clip, ratio < 1 - clip)
    assert 0 < clipped.sum() < len(A)  # the test has rows on both sides
    sigmoid = 1 / (1 + np.exp(-S))
    expected = np.mean((sigmoid * A * ~clipped)[:, None] * error_grad, axis=0)
    assert loss == pytest.approx(np.mean(np.log1p(np.exp(S))) / dgpo_beta, rel=1e-5)  # the value is unchanged
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    assert float(stats["clipfrac"]) == pytest.approx(clipped.mean())


def test_dgpo_old_policy_samples_after_its_switch_and_follows_the_weights():
    policy, objective, _, _ = forward_setup("dgpo", [1.0, 1.0, 1.0], old=[0.0, 0.0, 0.0], own={"old_samples_after": 5})
    with objective.rollout_weights(5):  # not yet: the current weights sample
        assert torch.equal(policy.trained_module.theta.detach(), torch.ones(3))
    with objective.rollout_weights(6):
        assert torch.equal(policy.trained_module.theta.detach(), torch.zeros(3))
    assert objective.end_update(global_step=100)["old_policy_decay"] == pytest.approx(0.1)  # min(0.001 step, 0.3)
    np.testing.assert_allclose(objective.snapshots["old"].shadow[0].numpy(), [0.9] * 3, rtol=1e-6)


def test_group_index_and_minibatches_of_whole_groups():
    from flow_grpo.objectives.dgpo import group_index

    first, inverse = group_index(torch.tensor([7, 3, 7, 9, 3]))
    assert first.tolist() == [0, 1, 0, 3, 1] and inverse.tolist() == [1, 0, 1, 2, 0]
    n = 12
    rollout = Rollout(prompts=[""] * n, metadata=[{}] * n, group_ids=torch.arange(n) % 3, conditioning=ToyConditioning(torch.zeros(n, 2)),
                      final_latents=torch.zeros(n, D), rewards={"avg": np.zeros(n)}, sigmas=torch.rand(n, 4), sigmas_next=torch.rand(n, 4))
    config = base.train_config()
    config.batch_size = 4
    for by_group in (False, True):
        minibatches = make_minibatches(rollout, torch.zeros(n), torch.arange(n), config, torch.Generator().manual_seed(0), "cpu", by_group)
        groups = [rollout.group_ids[m.rows].tolist() for m in minibatches]
        whole = all(len(set(g)) == 1 for g in groups)
        assert whole == by_group, groups  # shuffled rows mix groups; by_group keeps each group's 4 rows together
    assert sorted(torch.cat([m.rows for m in minibatches]).tolist()) == list(range(n))


# ---- GARDO: the gate, the moving reference, the diversity-aware advantages ----------------------------------


def test_gardo_gate_by_hand():
    from flow_grpo.objectives.gardo import adapted_share, gated_samples, uncertainty, win_rates

    np.testing.assert_allclose(win_rates(np.array([0.1, 0.5, 0.5, 0.9])), [0, 0.5, 0.5, 1])
    main = np.array([0.9, 0.8, 0.1, 0.5, 0.3])
    aux = [np.array([0.1, 0.7, 0.2, 0.6, 0.9]), np.array([0.2, 0.9, 0.1, 0.4, 0.8])]
    # win rates: main [1, .75, 0, .5, .25]; aux1 [0, .75, .25, .5, 1]; aux2 [.25, 1, 0, .5, .75]
    u = uncertainty(main, aux)  # the judges' mean win rate minus the main reward's: the authors' rank difference / (N - 1)
    np.testing.assert_allclose(u, [-0.875, 0.125, 0.125, 0.0, 0.625])
    ranks = lambda r: np.argsort(np.argsort(-r)) + 1  # noqa: E731 - 1 the best, as the authors'
    np.testing.assert_allclose(u, (ranks(main) - (ranks(aux[0]) + ranks(aux[1])) / 2) / 4)
    # u >= 0: {0.125, 0.125, 0, 0.625}; the top 40% of them: above their 60th percentile 0.125
    assert gated_samples(u, 0.4).tolist() == [False, False, False, False, True]
    assert gated_samples(-u, 0.4).tolist() == [True, False, False, False, False]  # "overrated": the sign flipped
    assert not gated_samples(np.array([-0.1, -0.2]), 0.5).any()
    assert adapted_share(0.1, [], 0.3, (0.02, 0.2)) == 0.1
    assert adapted_share(0.1, [0.1, 0.2], 0.3, (0.02, 0.2)) == pytest.approx(0.11)
    assert adapted_share(0.1, [0.1, 0.2], 0.05, (0.02, 0.2)) == pytest.approx(0.09)
    assert adapted_share(0.1, [0.1, 0.2], 0.15, (0.02, 0.2)) == 0.1
    assert adapted_share(0.19, [0.1], 0.5, (0.02, 0.2)) == 0.2


def test_gardo_diversity_weights_by_hand():
    from flow_grpo.objectives.gardo import diversity_weights

    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    advantages = torch.tensor([1.0, 0.5, -1.0, -0.5, 0.2, 0.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    weights = diversity_weights(advantages, groups, features)
    unit = features / features.norm(dim=1, keepdim=True)
    d = 1 - unit[:4] @ unit[:4].T
    d.fill_diagonal_(9)
    nearest = d.min(dim=1).values
    expected = torch.where(advantages[:4] >= 0, nearest / nearest.mean(), torch.ones(4))
    torch.testing.assert_close(weights[:4], expected)
    assert weights[1] > 1 > weights[0]  # the sample far from the others counts more, the near one less
    torch.testing.assert_close(weights[4:], torch.ones(2))  # two orthogonal samples: equal distances, weight 1


def test_gardo_gated_kl_step_by_hand():
    """GRPO's KL gradient, now to GARDO's snapshot reference and averaged over each minibatch's gated rows:
    gating rows of one minibatch only gives half the gradient of gating all (every row's KL is equal here)."""
    shift = torch.tensor([0.1, -0.2, 0.05])
    order = torch.randperm(N, generator=torch.Generator().manual_seed(1))  # update()'s first draw: the minibatches

    def gate(rows):
        def setup(objective, model):
            objective.snapshots["gardo_ref"].shadow[0].copy_(model.theta.detach() - shift)
            objective.kl_mask = torch.zeros(N, dtype=torch.bool)
            objective.kl_mask[rows] = True
        return setup

    changes = {}
    for name, rows in (("all", torch.arange(N)), ("first minibatch", order[:2]), ("none", torch.tensor([], dtype=torch.long))):
        rollout, (change,), stats = one_update("grpo_gardo", torch.zeros(N), beta=0.5, setup=gate(rows))
        changes[name] = change.double().numpy()
    expected = np.zeros(D)
    for j in range(2):
        _, std, coefficient, _ = per_step_terms(rollout, j)
        expected += 0.5 * coefficient**2 * shift.double().numpy() / (D * std**2) * 2 / WINDOW
    np.testing.assert_allclose(changes["all"], expected, rtol=1e-4)
    np.testing.assert_allclose(changes["first minibatch"], expected / 2, rtol=1e-4)
    assert np.all(changes["none"] == 0)
    assert stats["gardo_epoch_kl"] > 0  # the epoch's KL is measured over every row, gated or not


def test_nft_with_gardo_is_nft_against_its_reference_on_the_gated_rows():
    theta, old = np.array([0.3, -0.2, 0.5]), np.array([0.1, 0.0, 0.4])
    plain = forward_setup("nft", theta, old, reference=old, beta=0.05)
    gardo = forward_setup("nft_gardo", theta, old, reference=np.zeros(3), beta=0.05)  # its own reference: the snapshot (old)
    gardo[1].kl_mask = torch.ones(6, dtype=torch.bool)
    loss, grad, _ = grad_of(gardo[1], gardo[0], gardo[2])
    loss_plain, grad_plain, _ = grad_of(plain[1], plain[0], plain[2])
    assert loss == pytest.approx(loss_plain, rel=1e-6)
    np.testing.assert_allclose(grad, grad_plain, rtol=1e-6)
    gardo[1].kl_mask = torch.tensor([True, False, True, False, False, False])
    kl = torch.arange(1.0, 7.0)
    assert float(gardo[1].reduce_kl(kl, gardo[2])) == pytest.approx(2.0)  # (1 + 3) / 2


def test_gardo_resets_its_reference_and_resumes_its_state():
    theta = [1.0, 2.0, 3.0]
    policy, objective, minibatch, config = forward_setup("nft_gardo", theta, old=[0.0, 0.0, 0.0], own=None)
    objective.gardo.update(reset_every=3, reset_kl=0.5)
    objective._epoch_kls = [torch.tensor(0.1)]
    assert objective.end_update(1)["gardo_resets"] == 0  # KL below the threshold, 1 epoch of 3
    assert torch.equal(objective.snapshots["gardo_ref"].shadow[0], torch.zeros(3))
    objective._epoch_kls = [torch.tensor(0.2), torch.tensor(0.9)]  # mean 0.55 > 0.5
    assert objective.end_update(2)["gardo_resets"] == 1
    assert torch.equal(objective.snapshots["gardo_ref"].shadow[0], torch.tensor(theta))  # the current weights
    for step in (3, 4, 5):
        stats = objective.end_update(step)
    assert stats["gardo_resets"] == 2  # the periodic reset, 3 epochs after the last one
    rollout = minibatch.rollout
    rollout.rewards = {"avg": np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2]), "judge": np.array([0.1, 0.2, 0.5, 0.4, 0.3, 0.6])}
    objective.gardo.aux_rewards = ("judge",)
    values = objective.training_advantages(rollout, torch.tensor([1.0, -1.0, 0.0, -0.5, 0.5, -0.2]))
    assert values.shape == (6,) and objective.kl_mask[5] and objective.kl_mask.sum() == 1  # u = [-1, .2, .2, .2, -.4, .8]
    state = objective.state_dict()
    other = forward_setup("nft_gardo", theta, old=[5.0, 5.0, 5.0])[1]
    other.load_state_dict(state)
    assert (other.epochs_since_reset, other.resets, other.share, other.history) == \
        (objective.epochs_since_reset, objective.resets, objective.share, objective.history)
    assert torch.equal(other.snapshots["gardo_ref"].shadow[0], objective.snapshots["gardo_ref"].shadow[0])
    objective.gardo.aux_rewards = ("missing",)
    with pytest.raises(InputError, match="missing"):
        objective.training_advantages(rollout, torch.zeros(6))


def test_fsdp_settles_the_config_before_it_is_recorded():
    """Under FSDP the EMA is switched off by ``settle_distributed_config`` (what train.py calls before the run
    folder's config.json is written), a LoRA run is refused, and a second call changes nothing."""
    import types

    from accelerate.utils import DistributedType

    from flow_grpo.training.assembly import settle_distributed_config

    fsdp = types.SimpleNamespace(distributed_type=DistributedType.FSDP)
    config = parse_args(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny_full_finetune"])
    assert config.train.ema and not config.use_lora
    settle_distributed_config(fsdp, config)
    settle_distributed_config(fsdp, config)
    assert not config.train.ema
    with pytest.raises(ConfigError, match="FSDP shards weights"):
        settle_distributed_config(fsdp, parse_args(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny"]))
    single = parse_args(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny_full_finetune"])
    settle_distributed_config(types.SimpleNamespace(distributed_type=DistributedType.NO), single)
    assert single.train.ema


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    """Bad input exits with status 2 and one line; a ValueError that is not bad input is a bug: it propagates."""
    train = load_script("scripts/train.py")

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(train, "run_sizes", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        train.main(["--config", os.path.join(REPO, "config", "tiny.py") + ":tiny", f"--config.logdir={tmp_path}"])


def test_the_curves_put_a_strict_accuracy_beside_a_partial_credit_reward(tmp_path):
    from flow_grpo.plots import plot_training_curves, training_panels

    rows = [{"epoch": e, "reward_mean": 0.6, "eval_reward_avg": 0.6 - 0.01 * e, "eval_geneval_correct": 0.47 - 0.05 * e,
             "batch_geneval_strict_correct": 0.3, "policy_loss": 0.0} for e in range(4)]
    panels = dict(training_panels(rows, "eval_reward_avg"))
    assert panels["accuracy (strict)"] == ["batch_geneval_strict_correct", "eval_geneval_correct"]
    assert "accuracy (strict)" not in dict(training_panels([{"epoch": 0, "reward_mean": 1.0}], "eval_reward_avg"))
    plot_training_curves(rows, "eval_reward_avg", str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_the_exit_table_maps_what_ended_a_run_to_its_status(capsys):
    """stopping.EXIT_RULES through Supervisor.exit_status: a reward that cannot be built is bad input (2) during
    setup and a failure (1) once training; the non-finite stop names its epoch; a missing file while training and
    any exception in no rule are bugs (None: re-raised with their traceback)."""
    from flow_grpo.checkpoint.folders import CheckpointWriteError
    from flow_grpo.rewards import RewardError
    from flow_grpo.training.stopping import EXIT_PREEMPTED, RunStopped, Supervisor
    from flow_grpo.training.update import NonFiniteUpdates

    supervisor = Supervisor()
    assert supervisor.exit_status(RewardError("no such reward")) == 2
    assert supervisor.exit_status(FileNotFoundError("prompts.txt")) == 2
    assert supervisor.exit_status(ValueError("a bug")) is None
    assert "error: no such reward" in capsys.readouterr().err
    supervisor.training, supervisor.epoch_in_flight = True, 3
    assert supervisor.exit_status(RewardError("the server is down")) == 1
    assert supervisor.exit_status(NonFiniteUpdates("3 steps in a row")) == 1
    assert "error: epoch 3: 3 steps in a row" in capsys.readouterr().err
    assert supervisor.exit_status(CheckpointWriteError("disk full")) == 2
    assert supervisor.exit_status(FileNotFoundError("gone")) is None
    assert supervisor.exit_status(RunStopped(EXIT_PREEMPTED, "")) == EXIT_PREEMPTED and capsys.readouterr().err.count("error") == 1
