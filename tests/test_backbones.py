"""The backbone layer on every family (tiny SD3, FLUX.1-dev, Qwen-Image, Wan2.1 text-to-video and FLUX.1
Kontext editing, of the real diffusers classes): prompt encoding and ODE sampling against the family's own
diffusers pipeline, exact re-scoring of stored steps through the policy the trainer uses, the SDE window,
seeding, dtypes, and loading by family."""

import json
import os
import re

import pytest
import torch

from conftest import tiny_frame_size
from flow_grpo.backbones import BACKBONES, BUILTIN, ModelLoadError, backbone_for_pipeline, detect_family, load_backbone
from flow_grpo.backbones.base import Guidance
from flow_grpo.backbones.flux.backbone import pack_latents, unpack_latents
from flow_grpo.backbones.policy import BackbonePolicy
from flow_grpo.backbones.generation import SampleNoise, SamplingSpec, initial_latents, sample
from flow_grpo.rollout_types import TransitionBatch
from flow_grpo.sampling_loop import choose_sde_window
from flow_grpo.sde import SDEParams

PROMPTS = ["a red circle", "two blue squares", "a photo of a cat", 'a sign that says "hi"']
# every registered family: (its built-in tiny model, the guidance scale its pipeline samples with)
FAMILIES = {name: (cls.tiny_model, cls.default_guidance_scale) for name, cls in BACKBONES.items()}
LENGTH = 32


def size(backbone):
    """(height, width, frames) a family is tested at (conftest.tiny_frame_size)."""
    return tiny_frame_size(backbone)


def sample_shape(backbone, batch):
    """What decode makes: [B, 3, H, W] images, or [B, F, 3, H, W] videos."""
    height, width, frames = size(backbone)
    return (batch, frames, 3, height, width) if backbone.modality == "video" else (batch, 3, height, width)


def input_images(backbone, count, seed=5):
    """Seeded input images [count, 3, H, W] for an editing family, else None."""
    if not backbone.takes_input_image:
        return None
    height, width, _ = size(backbone)
    return torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    """(backbone, its guidance scale): one tiny model per family, shared by this module's tests (not modified)."""
    name, scale = FAMILIES[request.param]
    return load_backbone(name), scale


def encode(backbone, prompts=PROMPTS):
    conditioning = backbone.condition(prompts, LENGTH, "cpu", input_images(backbone, len(prompts)))
    return conditioning, backbone.negative_conditioning(LENGTH, "cpu")


def latent_shape(backbone):
    height, width, frames = size(backbone)
    return backbone.latent_shape(height, width, frames)


def noise(backbone, batch=4, seed=0):
    return initial_latents((batch, *latent_shape(backbone)), torch.Generator().manual_seed(seed), "cpu")


def spec_of(backbone, steps, scale, **options):
    height, width, frames = size(backbone)
    return SamplingSpec(num_steps=steps, guidance_scale=scale, height=height, width=width, num_frames=frames, **options)


def run(backbone, conditioning, negative, latents, steps=6, scale=1.0, generator=None, **spec):
    spec = spec_of(backbone, steps, scale, **spec)
    return sample(backbone, conditioning, negative, spec, SampleNoise(latents.clone(), steps=generator,
                                                                      window=spec_window_generator(spec)))


def spec_window_generator(spec):
    return torch.Generator().manual_seed(11) if spec.sde_window_size else None


def policy(backbone, negative, scale, noise_level=0.7, sde_type="sde"):
    transformer = backbone.transformer
    return BackbonePolicy(backbone=backbone, transformer=transformer, unwrapped=transformer, frozen_reference=None,
                          guidance=Guidance(scale, negative), sde=SDEParams(noise_level, sde_type), model_dtype=transformer.dtype)


def transitions(trajectory, conditioning, rows, steps):
    return TransitionBatch(
        latents=trajectory.latents[rows, steps], next_latents=trajectory.latents[rows, steps + 1],
        sigmas=trajectory.sigmas[steps], sigmas_next=trajectory.sigmas_next[steps],
        old_log_probs=trajectory.log_probs[rows, steps], conditioning=conditioning.select(rows),
    )


# ---- against the family's own diffusers pipeline ----

def test_encoding_matches_the_pipelines(family):
    backbone, _ = family
    ours = backbone.encode(PROMPTS, LENGTH, "cpu")
    pipeline = backbone.pipeline
    with torch.no_grad():
        if backbone.family == "sd3":
            theirs, _, pooled, _ = pipeline.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False,
                                                         max_sequence_length=LENGTH)
            torch.testing.assert_close(ours.pooled_prompt_embeds, pooled, rtol=0, atol=1e-6)
            torch.testing.assert_close(ours.prompt_embeds, theirs, rtol=0, atol=1e-5)
        elif backbone.family == "flux":
            theirs, pooled, text_ids = pipeline.encode_prompt(PROMPTS, None, max_sequence_length=LENGTH)
            assert ours.prompt_embeds.shape == (4, LENGTH, 32) and text_ids.shape == (LENGTH, 3)
            torch.testing.assert_close(ours.pooled_prompt_embeds, pooled, rtol=0, atol=1e-6)
            torch.testing.assert_close(ours.prompt_embeds, theirs, rtol=0, atol=1e-6)
        elif backbone.family == "wan":
            theirs, _ = pipeline.encode_prompt(PROMPTS, do_classifier_free_guidance=False, max_sequence_length=LENGTH)
            assert ours.prompt_embeds.shape == (4, LENGTH, 32) and torch.all(ours.prompt_embeds[:, -1] == 0)  # zero padded
            torch.testing.assert_close(ours.prompt_embeds, theirs, rtol=0, atol=1e-6)
        elif backbone.family == "flux_kontext":  # FLUX's text, and the input image as the pipeline encodes it
            theirs, pooled, _ = pipeline.encode_prompt(PROMPTS, None, max_sequence_length=LENGTH)
            torch.testing.assert_close(ours.prompt_embeds, theirs, rtol=0, atol=1e-6)
            images = input_images(backbone, 4)
            edited = backbone.condition(PROMPTS, LENGTH, "cpu", images)
            reference = pipeline._encode_vae_image(pipeline.image_processor.preprocess(images, 32, 32), None)
            assert edited.image_latents.shape == (4, 16, 4, 4)
            torch.testing.assert_close(edited.image_latents, reference, rtol=0, atol=1e-6)
        elif backbone.family == "qwenimage":  # pads to the batch's longest prompt; ours to LENGTH, with the same mask
            theirs, mask = pipeline.encode_prompt(PROMPTS, max_sequence_length=LENGTH)
            assert ours.prompt_embeds.shape == (4, LENGTH, 32)
            lengths = mask.sum(1)
            assert torch.equal(ours.prompt_embeds_mask.sum(1), lengths)
            assert lengths.min() >= 5  # the prompt's words and the template's 5 closing tokens, the 34-token prefix dropped
            for i, n in enumerate(lengths.tolist()):
                torch.testing.assert_close(ours.prompt_embeds[i, :n], theirs[i, :n], rtol=0, atol=1e-6)
                assert torch.all(ours.prompt_embeds[i, n:] == 0)
        elif backbone.family == "zimage":  # one [L_i, D] tensor per prompt (its template's tokens); ours padded to LENGTH
            theirs, _ = pipeline.encode_prompt(list(PROMPTS), do_classifier_free_guidance=False, max_sequence_length=LENGTH)
            assert ours.prompt_embeds.shape == (4, LENGTH, 32) and ours.prompt_embeds_mask.sum(1).tolist() == [len(t) for t in theirs]
            for mine, reference in zip(ours.caption_features(torch.float32), theirs):
                torch.testing.assert_close(mine, reference, rtol=0, atol=1e-6)
            assert all(torch.all(ours.prompt_embeds[i, len(t):] == 0) for i, t in enumerate(theirs))
        else:
            pytest.fail(f"no check of {backbone.family}'s encoding against its pipeline's encode_prompt: write one here")


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_ode_sampling_equals_the_pipelines_call(family, guided, batched):
    """Noise level 0 reproduces the family's diffusers ``__call__`` on the same conditioning, latents and
    steps: measured largest differences 0 to 2e-6 (float32; Wan 2.1e-6, Kontext 0)."""
    backbone, scale = family
    scale = scale if guided else 1.0
    conditioning, negative = encode(backbone)
    latents = noise(backbone)
    spec = spec_of(backbone, 5, scale, batched_cfg=batched)
    ours = sample(backbone, conditioning, negative, spec, SampleNoise(latents.clone())).images
    theirs = backbone.diffusers_call(conditioning, negative, latents, spec)
    assert ours.shape == theirs.shape == sample_shape(backbone, 4) and 0 <= ours.min() and ours.max() <= 1
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # not a vacuous equality: the images depend on the prompt and the noise
    assert (ours[0] - ours[1]).abs().max() > 1e-3
    other = sample(backbone, conditioning, negative, spec, SampleNoise(noise(backbone, seed=1))).images
    assert (other - ours).abs().max() > 1e-3


def test_schedule_is_the_pipelines(family):
    """Our sigmas are the ones the pipeline's scheduler steps through (SD3, Wan: static shift; FLUX, Kontext,
    Qwen-Image: linspace sigmas shifted by the resolution-dependent mu, Qwen-Image stretched to its terminal
    0.02)."""
    backbone, _ = family
    height, width, _ = size(backbone)
    sigmas = backbone.sigmas(10, height, width)
    seen = []
    scheduler = backbone.pipeline.scheduler
    original = scheduler.step

    def record(model_output, timestep, sample, **kwargs):
        seen.append(float(timestep) / scheduler.config.num_train_timesteps)  # the scheduler's timestep is sigma x 1000
        return original(model_output, timestep, sample, **kwargs)

    conditioning, negative = encode(backbone, PROMPTS[:1])
    scheduler.step = record
    try:
        backbone.diffusers_call(conditioning, negative, noise(backbone, 1), spec_of(backbone, 10, 1.0))
    finally:
        del scheduler.step
    assert sigmas[0] == 1 and sigmas[-1] == 0 and len(sigmas) == 11 and torch.all(sigmas[1:] < sigmas[:-1])
    torch.testing.assert_close(sigmas[:-1], torch.tensor(seen), rtol=0, atol=1e-6)
    torch.testing.assert_close(sigmas, scheduler.sigmas.float(), rtol=0, atol=0)  # after the call: the same tensor
    if backbone.family == "qwenimage":
        assert sigmas[-2] == pytest.approx(0.02, abs=1e-6)


def test_input_images_are_checked_and_change_the_edit():
    """Kontext needs one input image per prompt and its velocity depends on it (the reference tokens reach the
    attention); a text-to-image family refuses input images; the prediction has the noisy latents' shape."""
    kontext, flux = load_backbone("builtin:tiny_kontext"), load_backbone("builtin:tiny_flux")
    with pytest.raises(ValueError, match="flux_kontext edits images"):
        kontext.condition(PROMPTS[:2], LENGTH, "cpu")
    with pytest.raises(ValueError, match="flux generates from text only"):
        flux.condition(PROMPTS[:2], LENGTH, "cpu", torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="3 input images for 2 prompts"):
        kontext.condition(PROMPTS[:2], LENGTH, "cpu", torch.rand(3, 3, 32, 32))
    latents, sigma = noise(kontext, 2), torch.tensor(0.7)
    velocities = []
    for seed in (1, 2):
        conditioning = kontext.condition(PROMPTS[:2], LENGTH, "cpu", input_images(kontext, 2, seed))
        with torch.no_grad():
            velocities.append(kontext.velocity(kontext.transformer, latents, sigma, conditioning, Guidance(2.5)))
    assert velocities[0].shape == latents.shape
    assert (velocities[0] - velocities[1]).abs().max() > 1e-4
    # the stored per-sample latents follow the rows of a re-scored minibatch
    conditioning = kontext.condition(PROMPTS[:2], LENGTH, "cpu", input_images(kontext, 2))
    assert torch.equal(conditioning.select(torch.tensor([1])).image_latents, conditioning.image_latents[1:])


def test_video_shapes_and_their_errors():
    """Wan's latents are [16, (F - 1) / 4 + 1, H / 8, W / 8] and its decode gives [N, F, 3, H, W]; frame counts
    off 4k + 1, frame sizes off 16 and videos from an image family stop with the rule named."""
    wan = load_backbone("builtin:tiny_wan")
    assert wan.latent_shape(32, 48, 9) == (16, 3, 4, 6) and wan.latent_shape(240, 416, 33) == (16, 9, 30, 52)
    with pytest.raises(ValueError, match="num_frames - 1 must be a multiple of 4"):
        wan.latent_shape(32, 48, 8)
    with pytest.raises(ValueError, match="multiples of 16"):
        wan.latent_shape(40, 48, 9)
    with pytest.raises(ValueError, match="makes images, not videos"):
        load_backbone("builtin:tiny_flux").latent_shape(64, 64, 9)
    videos = wan.decode(noise(wan, 2))
    assert videos.shape == (2, 9, 3, 32, 48) and videos.dtype == torch.float32


def test_wan_samples_on_its_checkpoints_unipc_sigmas():
    """The published Wan2.1 checkpoints ship UniPC with flow sigmas and flow_shift: the backbone's schedule is
    UniPC's own sigmas (what the original Flow-GRPO steps its SDE on), the closed-form shift of linspace."""
    from diffusers import UniPCMultistepScheduler

    from flow_grpo.backbones.wan.backbone import scheduler_sigmas

    wan = load_backbone("builtin:tiny_wan")
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    wan.pipeline.scheduler = unipc
    sigmas = wan.sigmas(10, 32, 48)
    t = torch.linspace(1, 1 / 1000, 11, dtype=torch.float64)[:-1]  # UniPC's spacing of its 1000 training steps
    shifted = 3.0 * t / (1 + 2.0 * t)
    torch.testing.assert_close(sigmas[:-1].double(), shifted, rtol=0, atol=1e-4)
    assert sigmas[-1] == 0 and len(sigmas) == 11
    assert unipc.num_inference_steps is None  # a fresh copy was set, not the pipeline's scheduler
    with pytest.raises(ValueError, match="does not use flow sigmas"):
        scheduler_sigmas(UniPCMultistepScheduler(), 10)


def test_packing_is_a_permutation_and_inverts():
    x = torch.randn(2, 16, 8, 6)
    tokens = pack_latents(x)
    assert tokens.shape == (2, 12, 64)
    assert torch.equal(unpack_latents(tokens, 8, 6), x)
    assert torch.equal(torch.sort(tokens.flatten(1)).values, torch.sort(x.flatten(1)).values)
    # token (row r, col c) holds the 2x2 patch at (2r, 2c), channel-major: feature 4 * ch + 2 * dy + dx
    assert tokens[0, 1 * 3 + 2, 4 * 5 + 2 * 1 + 0] == x[0, 5, 2 * 1 + 1, 2 * 2 + 0]


# ---- re-scoring stored steps: the trainer's path ----

@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_rescoring_stored_steps_reproduces_log_probs_exactly(family, sde_type):
    backbone, scale = family
    conditioning, negative = encode(backbone)
    trajectory = run(backbone, conditioning, negative, noise(backbone), scale=scale, noise_level=0.7, sde_type=sde_type,
                     generator=torch.Generator().manual_seed(3))
    assert trajectory.latents.shape == (4, 7, *latent_shape(backbone)) and trajectory.log_probs.shape == (4, 6)
    if sde_type == "cps":  # CPS re-noises with std = sigma_next sin(a pi / 2): the last step (to 0) is deterministic
        assert torch.all(trajectory.log_probs[:, :-1] != 0) and torch.all(trajectory.log_probs[:, -1] == 0)
    else:
        assert torch.all(trajectory.log_probs != 0)
    scorer = policy(backbone, negative, scale, 0.7, sde_type)
    with torch.no_grad():
        for j in range(6):
            score = scorer.score(transitions(trajectory, conditioning, torch.arange(4), torch.full((4,), j)))
            assert torch.equal(score.log_prob, trajectory.log_probs[:, j])  # ratio exactly 1


def test_rescoring_with_per_sample_timesteps(family):
    """The trainer's `random` strategy scores different steps for different samples in one batch."""
    backbone, scale = family
    conditioning, negative = encode(backbone)
    trajectory = run(backbone, conditioning, negative, noise(backbone), scale=scale, noise_level=0.7,
                     generator=torch.Generator().manual_seed(4))
    steps, rows = torch.tensor([0, 3, 5, 1]), torch.arange(4)
    with torch.no_grad():
        log_prob = policy(backbone, negative, scale).score(transitions(trajectory, conditioning, rows, steps)).log_prob
    torch.testing.assert_close(log_prob, trajectory.log_probs[rows, steps], rtol=0, atol=1e-5)


def test_sde_window_semantics(family):
    backbone, scale = family
    conditioning, negative = encode(backbone)
    latents = noise(backbone)
    ode = run(backbone, conditioning, negative, latents, steps=10, scale=scale)
    runs = [run(backbone, conditioning, negative, latents, steps=10, scale=scale, noise_level=0.7, sde_window_size=3,
                sde_window_range=(2, 6), generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    start = int(torch.nonzero(ode.sigmas == runs[0].sigmas[0]))  # where the window begins in the full schedule
    assert 2 <= start <= 3
    for trajectory in runs:
        assert torch.equal(trajectory.sigmas, ode.sigmas[start : start + 3])
        assert trajectory.latents.shape[:2] == (4, 4) and trajectory.log_probs.shape == (4, 3)
        assert torch.all(trajectory.log_probs != 0)
        # steps before the window are the ODE: the window starts where the ODE trajectory is at `start`
        torch.testing.assert_close(trajectory.latents[:, 0], ode.latents[:, start], rtol=0, atol=1e-6)
    assert not torch.allclose(runs[0].latents[:, 1], runs[1].latents[:, 1])  # the window is stochastic
    # steps after the window are the ODE: continue deterministically from the window's last latent
    ode_policy = policy(backbone, negative, scale, noise_level=0.0)
    with torch.no_grad():
        x = runs[0].latents[:, -1]
        for i in range(start + 3, 10):
            step = TransitionBatch(latents=x, next_latents=x, sigmas=ode.sigmas[i].expand(4), sigmas_next=ode.sigmas_next[i].expand(4),
                                   old_log_probs=torch.zeros(4), conditioning=conditioning)
            x = ode_policy.score(step).mean  # with noise 0 the step is its mean
    torch.testing.assert_close(x, runs[0].final_latents, rtol=0, atol=1e-6)


def test_placed_window_and_ode_solver(family):
    """``sde_window_start`` puts the window where the caller says (MixGRPO's schedule); ``ode_solver="dpm2"``
    keeps the steps up to the window's end and changes only those after it."""
    backbone, scale = family
    conditioning, negative = encode(backbone)
    latents = noise(backbone)
    ode = run(backbone, conditioning, negative, latents, steps=8, scale=scale)
    placed = {solver: run(backbone, conditioning, negative, latents, steps=8, scale=scale, noise_level=0.7, sde_window_size=2,
                          sde_window_start=3, ode_solver=solver, generator=torch.Generator().manual_seed(5))
              for solver in ("euler", "dpm2")}
    assert torch.equal(placed["euler"].sigmas, ode.sigmas[3:5])
    torch.testing.assert_close(placed["euler"].latents[:, 0], ode.latents[:, 3], rtol=0, atol=1e-6)
    assert torch.equal(placed["euler"].latents, placed["dpm2"].latents)
    assert not torch.allclose(placed["euler"].final_latents, placed["dpm2"].final_latents)


def test_choose_sde_window_covers_range_uniformly():
    generator = torch.Generator().manual_seed(0)
    starts = [choose_sde_window(10, 2, (0, 5), generator)[0] for _ in range(4000)]
    counts = torch.bincount(torch.tensor(starts), minlength=5)
    assert counts[4:].sum() == 0 and torch.all(counts[:4] > 900)  # starts 0..3, each ~1000
    assert choose_sde_window(10, 0, None) == (0, 10)
    with pytest.raises(ValueError, match="cannot hold"):
        choose_sde_window(10, 4, (0, 3))


def test_per_sample_generators_make_samples_independent_of_the_batch(family):
    backbone, scale = family
    conditioning, negative = encode(backbone)
    generators = [torch.Generator().manual_seed(100 + i) for i in range(4)]
    latents = initial_latents((4, *latent_shape(backbone)), generators, "cpu")
    batch = run(backbone, conditioning, negative, latents, steps=4, scale=scale, noise_level=0.7, generator=generators)
    single_generator = [torch.Generator().manual_seed(102)]
    single_latents = initial_latents((1, *latent_shape(backbone)), single_generator, "cpu")
    single = run(backbone, conditioning.select(torch.tensor([2])), negative, single_latents, steps=4, scale=scale,
                 noise_level=0.7, generator=single_generator)
    torch.testing.assert_close(single.latents[0], batch.latents[2], rtol=0, atol=1e-4)
    torch.testing.assert_close(single.log_probs[0], batch.log_probs[2], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(BUILTIN))
def test_latents_stay_float32_with_a_bfloat16_transformer(name):
    backbone = load_backbone(name)
    backbone.transformer.to(torch.bfloat16)
    conditioning, negative = encode(backbone, PROMPTS[:2])
    trajectory = run(backbone, conditioning, negative, noise(backbone, 2), steps=3, scale=FAMILIES[backbone.family][1],
                     noise_level=0.7, generator=torch.Generator().manual_seed(0))
    assert trajectory.latents.dtype == trajectory.log_probs.dtype == trajectory.images.dtype == torch.float32
    assert torch.isfinite(trajectory.log_probs).all()


def test_cfg_needs_the_negative_conditioning(tiny_pipeline):
    backbone = backbone_for_pipeline(tiny_pipeline)
    conditioning, _ = encode(backbone, PROMPTS[:1])
    with pytest.raises(ValueError, match="negative"):
        run(backbone, conditioning, None, noise(backbone, 1), steps=2, scale=4.5)


def test_guidance_kinds(family):
    """SD3, Qwen-Image and Wan guide with a negative pass (scale 1: none); FLUX.1-dev and Kontext feed the
    scale to the model and have no negative prompt, and their training guidance never drops to 1."""
    backbone, scale = family
    conditioning, negative = encode(backbone, PROMPTS[:2])
    latents = noise(backbone, 2)
    guided = run(backbone, conditioning, negative, latents, steps=3, scale=scale).final_latents
    other = run(backbone, conditioning, negative, latents, steps=3, scale=scale + 2).final_latents
    assert (guided - other).abs().max() > 1e-4  # the scale reaches the model in every family
    if backbone.guidance_kind == "embedded":  # FLUX.1-dev, Kontext
        assert negative is None and backbone.training_guidance_scale(scale, train_cfg=False) == scale
    else:
        assert len(negative) == 1 and backbone.training_guidance_scale(scale, train_cfg=False) == 1.0


def test_qwenimage_true_cfg_rescales_to_the_conditional_norm():
    """v = comb |v_text| / |comb| per packed token, comb = v_neg + s (v_text - v_neg): checked against the
    formula on the transformer's raw outputs."""
    backbone = load_backbone("builtin:tiny_qwenimage")
    conditioning, negative = encode(backbone, PROMPTS[:2])
    latents, sigma = noise(backbone, 2), torch.tensor(0.6)
    with torch.no_grad():
        v = backbone.velocity(backbone.transformer, latents, sigma, conditioning, Guidance(4.0, negative))
        v_text = pack_latents(backbone.velocity(backbone.transformer, latents, sigma, conditioning, Guidance(1.0)))
        v_neg = pack_latents(backbone.velocity(backbone.transformer, latents, sigma, negative.select(torch.tensor([0, 0])), Guidance(1.0)))
    combined = v_neg + 4.0 * (v_text - v_neg)
    expected = combined * v_text.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(pack_latents(v), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(pack_latents(v).norm(dim=-1), v_text.norm(dim=-1), rtol=1e-5, atol=1e-6)


# ---- loading ----

def test_family_is_read_from_model_index(tmp_path, tiny_pipeline_dir):
    assert detect_family(tiny_pipeline_dir) == "sd3"
    assert {cls.family: detect_family(name) for name, cls in BUILTIN.items()} == {f: f for f in BACKBONES}
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ModelLoadError, match=re.escape("known families: " + ", ".join(f"{f} ({c.pipeline_classes[0]})" for f, c in BACKBONES.items()))):
        detect_family(str(folder))
    with pytest.raises(ModelLoadError, match=re.escape(f"unknown model family 'sdxl'; known: {', '.join(BACKBONES)}")):
        load_backbone(tiny_pipeline_dir, family="sdxl")
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_backbone(str(tmp_path))
    with pytest.raises(ModelLoadError, match="holds a sd3 pipeline, but config.pretrained.family is 'flux'"):
        load_backbone(tiny_pipeline_dir, family="flux")
    with pytest.raises(ModelLoadError, match="is a flux model"):
        load_backbone("builtin:tiny_flux", family="sd3")
    assert load_backbone(tiny_pipeline_dir).family == "sd3"


@pytest.mark.parametrize("name", ["builtin:tiny_flux", "builtin:tiny_qwenimage", "builtin:tiny_wan", "builtin:tiny_kontext"])
def test_saved_folder_loads_back_as_its_family(tmp_path, name):
    backbone = load_backbone(name)
    backbone.pipeline.save_pretrained(str(tmp_path / "model"))
    loaded = load_backbone(str(tmp_path / "model"))
    assert type(loaded) is type(backbone)
    conditioning, negative = encode(backbone, PROMPTS[:2])
    theirs_conditioning, theirs_negative = encode(loaded, PROMPTS[:2])
    scale = FAMILIES[backbone.family][1]
    a = run(backbone, conditioning, negative, noise(backbone, 2), steps=3, scale=scale).final_latents
    b = run(loaded, theirs_conditioning, theirs_negative, noise(backbone, 2), steps=3, scale=scale).final_latents
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert os.path.isfile(tmp_path / "model" / "model_index.json")


@pytest.mark.parametrize("name", list(BUILTIN))
def test_dead_lora_modules_are_exactly_the_targets_without_a_gradient(name):
    """A LoRA on every Flow-GRPO target: the modules outside the velocity's graph are the ones the backbone
    leaves out of the LoRA (Qwen-Image: its last block's text output branch; none elsewhere); SD3's and
    Qwen-Image's last block's text queries are in the graph with a zero gradient (as in the original)."""
    from flow_grpo.lora import add_lora

    backbone = load_backbone(name)
    targets = backbone.lora_target_modules
    add_lora(backbone.transformer, 2, 2, targets)
    conditioning, negative = encode(backbone, PROMPTS[:2])
    guidance = Guidance(3.0, negative)
    velocity = backbone.velocity(backbone.transformer, noise(backbone, 2), torch.tensor(0.7), conditioning, guidance)
    velocity.square().mean().backward()
    # B starts at 0, so every lora_A's gradient is 0; a lora_B's is absent outside the graph, 0 where unused
    lora_b = {n.split(".lora_")[0]: p.grad for n, p in backbone.transformer.named_parameters() if "lora_B" in n}
    outside = {n for n, grad in lora_b.items() if grad is None}
    zero = {n for n, grad in lora_b.items() if grad is not None and not grad.any()}
    assert outside == set(backbone.dead_lora_modules(targets))
    assert (backbone.family == "qwenimage") == bool(outside)
    if backbone.family in ("sd3", "qwenimage"):
        last = f"transformer_blocks.{len(backbone.transformer.transformer_blocks) - 1}.attn.add_q_proj"
        assert zero == {last}
    else:  # FLUX's and Kontext's single blocks read the text states after the last double block; Wan's text is only cross-attended
        assert zero == set()


def test_full_fine_tuning_trains_exactly_the_weights_in_the_graph():
    """Qwen-Image trained in full: the last block's text output branch is frozen (DDP stops on parameters
    outside the loss's graph), every other weight gets a gradient."""
    from flow_grpo.backbones.trainable import prepare_transformer
    from flow_grpo.config_cli import parse_args

    config = parse_args(["--config", os.path.join(os.path.dirname(__file__), "..", "config", "tiny.py") + ":tiny_qwenimage",
                         "--config.use_lora=false"])
    backbone = load_backbone("builtin:tiny_qwenimage")
    model = prepare_transformer(backbone, config, "cpu", needs_reference=False)
    frozen = {n for n, p in backbone.transformer.named_parameters() if not p.requires_grad}
    dead = backbone.dead_lora_modules(backbone.lora_target_modules)
    assert frozen and all(any(n.startswith(d + ".") for d in dead) for n in frozen)
    conditioning, negative = encode(backbone, PROMPTS[:2])
    velocity = backbone.velocity(backbone.transformer, noise(backbone, 2), torch.tensor(0.7), conditioning, Guidance(4.0, negative))
    velocity.square().mean().backward()
    assert all(p.grad is not None for p in model.trainable.values()) and set(model.trainable).isdisjoint(frozen)


def test_bad_model_folders_stop_with_their_problem(tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a diffusers model_index.json"):
        load_backbone(str(broken))
    (broken / "model_index.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="names no pipeline class"):
        load_backbone(str(broken))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_backbone("broken/missing")  # a relative path under an existing folder, not a hub id
