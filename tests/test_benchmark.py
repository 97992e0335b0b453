"""The benchmark's FLOP counts against PyTorch's counter, and the harness end to end on the tiny pipeline."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from conftest import load_script
from flow_grpo.backbones.sd3.flops import sd3_transformer_flops
from flow_grpo.backbones.sd3.presets import sd35m_components

benchmark = load_script("scripts/benchmark.py")


@pytest.mark.parametrize("layers,dual,qk_norm", [(2, (), None), (3, (0,), "rms_norm"), (4, (0, 1), "rms_norm")])
def test_analytic_flops_equal_pytorchs_count(layers, dual, qk_norm):
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=layers, attention_head_dim=32,
        num_attention_heads=4, joint_attention_dim=24, caption_projection_dim=128, pooled_projection_dim=40,
        pos_embed_max_size=4, dual_attention_layers=dual, qk_norm=qk_norm,
    )
    inputs = dict(hidden_states=torch.randn(3, 4, 8, 8), encoder_hidden_states=torch.randn(3, 20, 24),
                  pooled_projections=torch.randn(3, 40), timestep=torch.rand(3) * 1000)
    # the math attention backend decomposes attention into counted matmuls
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    analytic = sd3_transformer_flops(model.config, batch=3, image_tokens=16, text_tokens=20)
    assert analytic["attention"] == counts["aten.bmm"]
    assert analytic["linear"] == counts["aten.addmm"] + counts["aten.mm"] + counts["aten.convolution"]
    assert analytic["total"] == sum(counts.values())


def test_sd35m_sizes():
    """The SD3.5-M preset's transformer has SD3.5 Medium's size (built on the meta device): SD3 Medium's 2.0 B
    (its 4.2 GB fp16 file) plus 13 dual-attention blocks of about 16 M each."""
    from diffusers import SD3Transformer2DModel

    t = sd35m_components(reduced=False)["transformer"]
    with torch.device("meta"):
        model = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, out_channels=16,
                                      pos_embed_max_size=384, qk_norm="rms_norm", **t)
    parameters = sum(p.numel() for p in model.parameters())
    assert 2.15e9 < parameters < 2.35e9, parameters


@pytest.mark.slow
def test_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--preset", "tiny-cpu", "--repeats", "1", "--reward", "brightness", "--json", str(out),
                           "--lever", "sequential_cfg"]) == 0
    figures = json.loads(out.read_text())["baseline"]
    for phase in ("prompt_encoding", "sampling", "vae_decode", "train_forward_backward", "optimizer", "ema"):
        assert figures["phases_s"][phase] > 0, phase
    assert figures["step_s"] >= sum(figures["phases_s"].values()) * 0.95
    assert 0 < figures["train_mfu"] < 1 and figures["train_tflop"] > 0 and figures["peak_rss_gb"] > 0
    assert figures["images_per_s"] == pytest.approx(16 / figures["step_s"])


def _flux_inputs(batch, image_tokens, text_tokens):
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    side = int(image_tokens ** 0.5)
    return dict(hidden_states=torch.randn(batch, image_tokens, 64), timestep=torch.rand(batch), guidance=torch.full((batch,), 3.5),
                pooled_projections=torch.randn(batch, 40), encoder_hidden_states=torch.randn(batch, text_tokens, 24),
                txt_ids=torch.zeros(text_tokens, 3), img_ids=FluxPipeline._prepare_latent_image_ids(batch, side, side, "cpu", torch.float32))


@pytest.mark.parametrize("family", ["flux", "qwenimage"])
def test_analytic_flops_of_flux_and_qwenimage_equal_pytorchs_count(family):
    from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel

    from flow_grpo.backbones import BACKBONES

    batch, image_tokens, text_tokens = 3, 16, 7
    if family == "flux":
        model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=3, attention_head_dim=16,
                                       num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=40,
                                       guidance_embeds=True, axes_dims_rope=(4, 6, 6))
        inputs = _flux_inputs(batch, image_tokens, text_tokens)
    else:
        model = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=3, attention_head_dim=16,
                                            num_attention_heads=2, joint_attention_dim=24, guidance_embeds=False, axes_dims_rope=(4, 6, 6))
        inputs = dict(hidden_states=torch.randn(batch, image_tokens, 64), timestep=torch.rand(batch),
                      encoder_hidden_states=torch.randn(batch, text_tokens, 24),
                      encoder_hidden_states_mask=torch.ones(batch, text_tokens, dtype=torch.long), img_shapes=[[(1, 4, 4)]] * batch)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    analytic = BACKBONES[family].transformer_flops(model.config, batch=batch, image_tokens=image_tokens, text_tokens=text_tokens)
    assert analytic["attention"] == counts["aten.bmm"]
    assert analytic["linear"] == counts["aten.addmm"] + counts.get("aten.mm", 0)
    assert analytic["total"] == sum(counts.values())


def test_analytic_flops_of_wan_equal_pytorchs_count():
    """Wan2.1's video transformer on 3 clips of 3 latent frames of 8 x 12 (72 patches) and 7 text tokens: the
    attention products are PyTorch's bmm, the weights' products its addmm plus the patch convolution."""
    from diffusers import WanTransformer3DModel

    from flow_grpo.backbones import BACKBONES

    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
                                  text_dim=24, freq_dim=32, ffn_dim=80, num_layers=2, rope_max_seq_len=64)
    batch, text_tokens = 3, 7
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(hidden_states=torch.randn(batch, 16, 3, 8, 12), timestep=torch.rand(batch) * 1000,
              encoder_hidden_states=torch.randn(batch, text_tokens, 24))
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    analytic = BACKBONES["wan"].transformer_flops(model.config, batch=batch, image_tokens=3 * 4 * 6, text_tokens=text_tokens)
    assert analytic["attention"] == counts["aten.bmm"]
    assert analytic["linear"] == counts["aten.addmm"] + counts["aten.convolution"]
    assert analytic["total"] == sum(counts.values())


def test_flux_and_qwenimage_presets_have_the_published_sizes():
    """Built on the meta device: FLUX.1-dev's transformer is 11.9 B parameters (its 23.8 GB bf16 file), Qwen-Image's
    20.4 B (40.9 GB), with the Qwen2.5-VL-7B text encoder (8.3 B)."""
    flux, qwen = benchmark.count_parameters("flux-dev"), benchmark.count_parameters("qwenimage")
    assert 11.85e9 < flux["transformer"] < 11.95e9, flux
    assert 20.38e9 < qwen["transformer"] < 20.48e9 and 8.2e9 < qwen["text_encoder"] < 8.4e9, qwen


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["flux-dev-flowgrpo", "qwenimage-flowgrpo"])
def test_family_presets_run_reduced(tmp_path, preset):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--preset", preset, "--reduced", "--repeats", "1", "--reward", "brightness", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["baseline"]
    assert figures["phases_s"]["train_forward_backward"] > 0 and 0 < figures["train_mfu"] < 1


def test_every_family_counts_its_image_tokens_its_own_way():
    """512 px at VAE factor 8 is 32 x 32 tokens for every image family: SD3, Qwen-Image and Z-Image patchify by 2, FLUX
    packs 2x2 with patch 1, and Kontext is FLUX's (the noisy tokens; its FLOPs add as many for the input image)."""
    import types

    from flow_grpo.backbones import BACKBONES

    tokens = {family: cls.image_tokens(types.SimpleNamespace(patch_size=1 if family.startswith("flux") else 2, all_patch_size=(2,)), 512, 8)
              for family, cls in BACKBONES.items() if family != "wan"}
    assert BACKBONES["zimage"].image_tokens(types.SimpleNamespace(all_patch_size=(2,)), 48, 8) == 32  # 9 patches, padded
    assert tokens == {family: 1024 for family in BACKBONES if family != "wan"}
    assert BACKBONES["wan"].image_tokens(types.SimpleNamespace(patch_size=(1, 2, 2)), 480, 8) == 30 * 30


def test_analytic_flops_of_zimage_equal_pytorchs_count():
    """Z-Image's single-stream transformer on 3 images of 8 x 8 patches and 32 caption tokens (both multiples of 32,
    so nothing is padded): the refiners, the joint layers and the final projection over both."""
    from diffusers import ZImageTransformer2DModel

    from flow_grpo.backbones import BACKBONES

    model = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1,
                                     n_heads=2, n_kv_heads=2, cap_feat_dim=24, axes_dims=[4, 6, 6], axes_lens=[256, 64, 64])
    batch, text_tokens = 3, 32
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model([torch.randn(4, 1, 16, 16) for _ in range(batch)], torch.rand(batch), [torch.randn(text_tokens, 24) for _ in range(batch)],
              return_dict=False)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    analytic = BACKBONES["zimage"].transformer_flops(model.config, batch=batch, image_tokens=64, text_tokens=text_tokens)
    assert analytic["attention"] == counts["aten.bmm"]
    assert analytic["linear"] == counts["aten.addmm"] + counts["aten.mm"]
    assert analytic["total"] == sum(counts.values())
