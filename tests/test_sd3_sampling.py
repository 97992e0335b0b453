"""The SD3 sampler with log-probs against diffusers' own pipeline, and its training-time re-scoring through
the policy the trainer uses."""

import pytest
import torch

from flow_grpo.rollout import TransitionBatch
from flow_grpo.sampling import choose_sde_window
from flow_grpo.sd3 import Guidance, encode_prompt, sd3_sample_with_logprob, sd3_schedule
from flow_grpo.sd3.policy import SD3Policy
from flow_grpo.sde import SDEParams

PROMPTS = ["a red circle", "two blue squares", "a photo of a cat", 'a sign that says "hi"']


def embeddings(pipeline, prompts, length=32):
    """(conditioning, negative) of the prompts; the negative is one row, as the trainer keeps it."""
    return encode_prompt(pipeline, prompts, length), encode_prompt(pipeline, [""], length)


def policy(pipeline, negative, guidance_scale, noise_level=0.7, sde_type="sde"):
    transformer = pipeline.transformer
    return SD3Policy(transformer=transformer, unwrapped=transformer, frozen_reference=None,
                     guidance=Guidance(guidance_scale, negative), sde=SDEParams(noise_level, sde_type),
                     model_dtype=transformer.dtype, timestep_scale=pipeline.scheduler.config.num_train_timesteps)


def transitions(trajectory, conditioning, rows, steps, next_latents=None):
    """Stored step ``steps[i]`` of sample ``rows[i]`` (or ``next_latents`` as the step's output)."""
    return TransitionBatch(
        latents=trajectory.latents[rows, steps],
        next_latents=trajectory.latents[rows, steps + 1] if next_latents is None else next_latents,
        sigmas=trajectory.sigmas[steps], sigmas_next=trajectory.sigmas_next[steps],
        old_log_probs=trajectory.log_probs[rows, steps], conditioning=conditioning.select(rows),
    )


def noise(batch=4, seed=0):
    return torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_encode_prompt_matches_diffusers(tiny_pipeline):
    ours = encode_prompt(tiny_pipeline, PROMPTS, 32)
    ours, ours_pooled = ours.prompt_embeds, ours.pooled_prompt_embeds
    with torch.no_grad():
        theirs, _, theirs_pooled, _ = tiny_pipeline.encode_prompt(
            PROMPTS, None, None, do_classifier_free_guidance=False, max_sequence_length=32
        )
    assert ours.shape == (4, 77 + 32, 32) and ours_pooled.shape == (4, 32)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_pooled, theirs_pooled, rtol=0, atol=1e-6)


@pytest.mark.parametrize("guidance_scale", [1.0, 4.5])
def test_ode_sampling_equals_diffusers_pipeline(tiny_pipeline, guidance_scale):
    latents = noise()
    with torch.no_grad():
        reference = tiny_pipeline(
            PROMPTS, num_inference_steps=10, height=64, width=64, guidance_scale=guidance_scale,
            latents=latents.clone(), output_type="pt", max_sequence_length=32,
        ).images
    trajectory = sd3_sample_with_logprob(
        tiny_pipeline, *embeddings(tiny_pipeline, PROMPTS), num_inference_steps=10, guidance_scale=guidance_scale,
        height=64, width=64, deterministic=True, latents=latents.clone(),
    )
    assert trajectory.images.shape == (4, 3, 64, 64)
    assert trajectory.images.min() >= 0 and trajectory.images.max() <= 1
    torch.testing.assert_close(trajectory.images, reference, rtol=0, atol=1e-5)
    assert torch.all(trajectory.log_probs == 0)


def test_schedule_is_the_pipelines(tiny_pipeline):
    timesteps, sigmas = sd3_schedule(tiny_pipeline.scheduler, 10, 16, 16, 2)
    tiny_pipeline.scheduler.set_timesteps(10)
    torch.testing.assert_close(timesteps, tiny_pipeline.scheduler.timesteps)
    torch.testing.assert_close(sigmas, tiny_pipeline.scheduler.sigmas)
    assert sigmas[0] == 1 and sigmas[-1] == 0 and len(sigmas) == 11


@pytest.mark.parametrize("sde_type,guidance_scale", [("sde", 4.5), ("cps", 4.5), ("sde", 1.0)])
def test_rescoring_stored_trajectory_reproduces_log_probs_exactly(tiny_pipeline, sde_type, guidance_scale):
    embeds = embeddings(tiny_pipeline, PROMPTS)
    trajectory = sd3_sample_with_logprob(
        tiny_pipeline, *embeds, num_inference_steps=6, guidance_scale=guidance_scale, height=64, width=64,
        noise_level=0.7, sde_type=sde_type, generator=torch.Generator().manual_seed(3), latents=noise(),
    )
    assert trajectory.latents.shape == (4, 7, 4, 16, 16) and trajectory.log_probs.shape == (4, 6)
    if sde_type == "cps":  # CPS re-noises with std = sigma_next * sin(a pi / 2): the last step (to 0) is deterministic
        assert torch.all(trajectory.log_probs[:, :-1] != 0) and torch.all(trajectory.log_probs[:, -1] == 0)
    else:
        assert torch.all(trajectory.log_probs != 0)
    rows = torch.arange(4)
    scorer = policy(tiny_pipeline, embeds[1], guidance_scale, 0.7, sde_type)
    with torch.no_grad():
        for j in range(6):
            score = scorer.score(transitions(trajectory, embeds[0], rows, torch.full((4,), j)))
            assert torch.equal(score.log_prob, trajectory.log_probs[:, j])  # ratio exactly 1
            torch.testing.assert_close(score.std_dev.reshape(-1), trajectory.std_devs[:, j])
    # the transformer's timestep is sigma * num_train_timesteps, exactly the scheduler's
    assert torch.equal(trajectory.timesteps, trajectory.sigmas * tiny_pipeline.scheduler.config.num_train_timesteps)


def test_rescoring_with_per_sample_timesteps(tiny_pipeline):
    """The trainer's `random` strategy scores different steps for different samples in one batch."""
    embeds = embeddings(tiny_pipeline, PROMPTS)
    trajectory = sd3_sample_with_logprob(
        tiny_pipeline, *embeds, num_inference_steps=6, guidance_scale=4.5, height=64, width=64,
        generator=torch.Generator().manual_seed(4), latents=noise(),
    )
    steps = torch.tensor([0, 3, 5, 1])
    rows = torch.arange(4)
    with torch.no_grad():
        log_prob = policy(tiny_pipeline, embeds[1], 4.5).score(transitions(trajectory, embeds[0], rows, steps)).log_prob
    torch.testing.assert_close(log_prob, trajectory.log_probs[rows, steps], rtol=0, atol=1e-5)


def test_sde_window_semantics(tiny_pipeline):
    embeds = embeddings(tiny_pipeline, PROMPTS)
    common = dict(num_inference_steps=10, guidance_scale=4.5, height=64, width=64, latents=noise())
    ode = sd3_sample_with_logprob(tiny_pipeline, *embeds, deterministic=True, **common)
    runs = [
        sd3_sample_with_logprob(
            tiny_pipeline, *embeds, sde_window_size=3, sde_window_range=(2, 6),
            window_generator=torch.Generator().manual_seed(11), generator=torch.Generator().manual_seed(seed), **common,
        )
        for seed in (1, 2)
    ]
    start = int(runs[0].step_indices[0])
    assert 2 <= start <= 3
    for run in runs:
        assert run.step_indices.tolist() == list(range(start, start + 3))
        assert run.latents.shape == (4, 4, 4, 16, 16) and run.log_probs.shape == (4, 3)
        assert torch.all(run.log_probs != 0)
        # steps before the window are the ODE: the window starts where the ODE trajectory is at `start`
        torch.testing.assert_close(run.latents[:, 0], ode.latents[:, start], rtol=0, atol=1e-6)
        torch.testing.assert_close(run.timesteps, ode.timesteps[start : start + 3])
    # the window is stochastic: different noise, different window outputs
    assert not torch.allclose(runs[0].latents[:, 1], runs[1].latents[:, 1])
    # steps after the window are the ODE: continue deterministically from the window's last latent
    ode_policy = policy(tiny_pipeline, embeds[1], 4.5, noise_level=0.0)
    with torch.no_grad():
        x = runs[0].latents[:, -1]
        for i in range(start + 3, 10):
            step = TransitionBatch(latents=x, next_latents=x, sigmas=ode.sigmas[i].expand(4), sigmas_next=ode.sigmas_next[i].expand(4),
                                   old_log_probs=torch.zeros(4), conditioning=embeds[0])
            x = ode_policy.score(step).mean  # with noise 0 the step is its mean
    torch.testing.assert_close(x, runs[0].final_latents, rtol=0, atol=1e-6)


def test_choose_sde_window_covers_range_uniformly():
    generator = torch.Generator().manual_seed(0)
    starts = [choose_sde_window(10, 2, (0, 5), generator)[0] for _ in range(4000)]
    counts = torch.bincount(torch.tensor(starts), minlength=5)
    assert counts[4:].sum() == 0 and torch.all(counts[:4] > 900)  # starts 0..3, each ~1000
    assert choose_sde_window(10, 0, None) == (0, 10)
    with pytest.raises(ValueError, match="cannot hold"):
        choose_sde_window(10, 4, (0, 3))


def test_same_latent_groups_share_initial_noise(tiny_pipeline):
    prompts = ["a red circle", "a cat", "a red circle", "a cat"]
    trajectory = sd3_sample_with_logprob(
        tiny_pipeline, *embeddings(tiny_pipeline, prompts), num_inference_steps=3, height=64, width=64,
        generator=[torch.Generator().manual_seed(i) for i in range(4)], same_latent_groups=prompts,
    )
    start = trajectory.latents[:, 0]
    assert torch.equal(start[0], start[2]) and torch.equal(start[1], start[3])
    assert not torch.equal(start[0], start[1])
    # shared start, independent SDE noise
    assert not torch.equal(trajectory.final_latents[0], trajectory.final_latents[2])


def test_per_sample_generators_make_samples_independent_of_the_batch(tiny_pipeline):
    embeds = embeddings(tiny_pipeline, PROMPTS)
    batch = sd3_sample_with_logprob(
        tiny_pipeline, *embeds, num_inference_steps=4, height=64, width=64,
        generator=[torch.Generator().manual_seed(100 + i) for i in range(4)],
    )
    single = sd3_sample_with_logprob(
        tiny_pipeline, embeds[0].select(torch.tensor([2])), embeds[1], num_inference_steps=4, height=64, width=64,
        generator=[torch.Generator().manual_seed(102)],
    )
    torch.testing.assert_close(single.latents[0], batch.latents[2], rtol=0, atol=1e-4)
    torch.testing.assert_close(single.log_probs[0], batch.log_probs[2], rtol=0, atol=1e-4)


def test_latents_stay_float32_with_a_bfloat16_transformer(fresh_tiny_pipeline):
    pipeline = fresh_tiny_pipeline.to(torch_dtype=torch.bfloat16)
    embeds = embeddings(pipeline, PROMPTS[:2])
    trajectory = sd3_sample_with_logprob(pipeline, *embeds, num_inference_steps=3, height=64, width=64, latents=noise(2))
    assert trajectory.latents.dtype == trajectory.log_probs.dtype == trajectory.images.dtype == torch.float32
    assert torch.isfinite(trajectory.log_probs).all()


def test_cfg_needs_negative_embeddings(tiny_pipeline):
    conditioning, _ = embeddings(tiny_pipeline, PROMPTS[:1])
    with pytest.raises(ValueError, match="negative"):
        sd3_sample_with_logprob(tiny_pipeline, conditioning, num_inference_steps=2, guidance_scale=4.5, height=64, width=64)


def test_sequential_cfg_equals_batched_cfg(tiny_pipeline):
    embeds = embeddings(tiny_pipeline, PROMPTS)
    common = dict(num_inference_steps=4, guidance_scale=4.5, height=64, width=64, latents=noise(),
                  generator=torch.Generator().manual_seed(3))
    batched = sd3_sample_with_logprob(tiny_pipeline, *embeds, **common)
    common["generator"] = torch.Generator().manual_seed(3)
    sequential = sd3_sample_with_logprob(tiny_pipeline, *embeds, batched_cfg=False, **common)
    torch.testing.assert_close(sequential.latents, batched.latents, rtol=0, atol=1e-5)
    torch.testing.assert_close(sequential.log_probs, batched.log_probs, rtol=0, atol=1e-4)
