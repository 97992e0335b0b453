"""LoRA save/load in both formats, the tiny pipeline on disk, inference_demo.py and sde_diff end to end."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, load_script
from flow_grpo.backbones import backbone_for_pipeline
from flow_grpo.backbones.generation import SampleNoise, SamplingSpec, sample
from flow_grpo.backbones.sd3 import SD3_LORA_TARGET_MODULES
from flow_grpo.backbones.sd3.tiny import TinySD3Config, build_tiny_sd3_pipeline
from flow_grpo.lora import LoraLoadError, add_lora, load_lora, save_lora

inference_demo = load_script("inference_demo.py")
sde_diff = load_script("sde_diff/compare.py")


def ode_images(pipeline, prompts=("a red circle", "a cat"), seed=0):
    n = len(prompts)
    backbone = backbone_for_pipeline(pipeline)
    latents = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    return sample(backbone, backbone.encode(prompts, 32, "cpu"), backbone.negative_conditioning(32, "cpu"),
                  SamplingSpec(num_steps=4, guidance_scale=4.5, height=64, width=64), SampleNoise(latents)).images


def random_lora(pipeline, rank=4, alpha=8):
    add_lora(pipeline.transformer, rank=rank, alpha=alpha, target_modules=SD3_LORA_TARGET_MODULES)
    with torch.no_grad():
        for name, param in pipeline.transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return pipeline


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    pipeline = random_lora(build_tiny_sd3_pipeline())
    path = str(tmp_path_factory.mktemp("lora"))
    save_lora(pipeline.transformer, path, type(pipeline))
    return path, ode_images(pipeline)


def test_tiny_pipeline_round_trips_through_disk(tiny_pipeline, tiny_pipeline_dir):
    from diffusers import StableDiffusion3Pipeline

    loaded = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    assert torch.equal(ode_images(loaded), ode_images(tiny_pipeline))
    params = sum(p.numel() for p in loaded.transformer.parameters())
    assert 10_000 < params < 200_000


def test_tiny_sd3_cli_writes_a_loadable_pipeline(tmp_path, monkeypatch):
    from diffusers import StableDiffusion3Pipeline

    from flow_grpo.backbones.sd3 import tiny

    monkeypatch.setattr("sys.argv", ["tiny", "--out", str(tmp_path / "m"), "--seed", "3"])
    tiny.main()
    pipeline = StableDiffusion3Pipeline.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(ode_images(pipeline), ode_images(build_tiny_sd3_pipeline(seed=3)))


def test_saved_lora_loads_with_diffusers_own_loader(lora_dir, tiny_pipeline_dir):
    from diffusers import StableDiffusion3Pipeline

    path, expected = lora_dir
    assert os.listdir(path) == ["pytorch_lora_weights.safetensors"]
    pipeline = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    base = ode_images(pipeline)
    pipeline.load_lora_weights(path)  # the contract: diffusers' loader, rank and alpha from the file's metadata
    loaded = ode_images(pipeline)
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-6)
    assert (loaded - base).abs().max() > 1e-3


def test_load_lora_accepts_checkpoint_folders_and_peft_adapters(lora_dir, tmp_path):
    path, expected = lora_dir
    checkpoint = tmp_path / "checkpoint-7"
    os.makedirs(checkpoint)
    os.symlink(path, checkpoint / "lora")
    pipeline = build_tiny_sd3_pipeline()
    assert load_lora(pipeline, str(checkpoint)) == "diffusers"
    torch.testing.assert_close(ode_images(pipeline), expected, rtol=0, atol=1e-6)

    from peft import LoraConfig, get_peft_model

    source = build_tiny_sd3_pipeline()
    peft_model = get_peft_model(source.transformer, LoraConfig(r=2, lora_alpha=4, target_modules=["attn.to_q", "attn.to_v"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    expected_peft = ode_images(source)  # source.transformer now carries the adapter
    target = build_tiny_sd3_pipeline()
    assert load_lora(target, str(tmp_path / "peft")) == "peft"
    torch.testing.assert_close(ode_images(target), expected_peft, rtol=0, atol=1e-6)


def test_load_lora_errors_name_the_problem(lora_dir, tmp_path):
    path, _ = lora_dir
    with pytest.raises(LoraLoadError, match="does not exist"):
        load_lora(build_tiny_sd3_pipeline(), str(tmp_path / "nope"))
    with pytest.raises(LoraLoadError, match="holds no LoRA"):
        load_lora(build_tiny_sd3_pipeline(), str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"\x80\x04")
    with pytest.raises(LoraLoadError, match="pickled"):
        load_lora(build_tiny_sd3_pipeline(), str(tmp_path / "weights.bin"))
    wider = build_tiny_sd3_pipeline(TinySD3Config(attention_head_dim=16))
    with pytest.raises(LoraLoadError, match="size mismatch"):
        load_lora(wider, path)


def test_inference_demo_end_to_end(lora_dir, tiny_pipeline_dir, tmp_path, capsys):
    path, _ = lora_dir
    out = tmp_path / "demo"
    argv = ["--lora_path", path, "--model_name", tiny_pipeline_dir, "--custom_prompt", "a red circle",
            "--num_images", "2", "--height", "64", "--width", "64", "--num_steps", "4", "--seed", "5",
            "--output_dir", str(out), "--device", "cpu", "--max_sequence_length", "32"]
    assert inference_demo.main(argv) == 0
    assert sorted(os.listdir(out / "base")) == sorted(os.listdir(out / "lora")) == ["000_0.png", "000_1.png"]
    grid = Image.open(out / "grid.png")
    assert grid.size[0] >= 4 * 64
    base = np.asarray(Image.open(out / "base" / "000_0.png"), dtype=np.float32)
    lora = np.asarray(Image.open(out / "lora" / "000_0.png"), dtype=np.float32)
    assert np.abs(base - lora).max() > 5  # the LoRA changes the image
    # same seeds: a second run reproduces the base images exactly
    assert inference_demo.main(argv[:-6] + ["--output_dir", str(tmp_path / "again"), "--device", "cpu", "--max_sequence_length", "32"]) == 0
    again = np.asarray(Image.open(tmp_path / "again" / "base" / "000_0.png"), dtype=np.float32)
    assert np.array_equal(base, again)
    assert json.load(open(out / "prompts.json"))["prompts"] == ["a red circle"]


def test_inference_demo_bad_paths(lora_dir, tiny_pipeline_dir, tmp_path, capsys):
    path, _ = lora_dir
    assert inference_demo.main(["--lora_path", str(tmp_path / "missing"), "--model_name", tiny_pipeline_dir]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert inference_demo.main(["--lora_path", path, "--model_name", str(tmp_path / "no_model"), "--device", "cpu"]) == 2
    assert "no such folder" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    assert inference_demo.main(["--lora_path", path, "--model_name", tiny_pipeline_dir, "--test_file", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_sde_diff_gallery(tmp_path):
    out = tmp_path / "gallery"
    assert sde_diff.main(["--tiny", "--out", str(out), "--prompts", "a cat", "a dog", "--noise_levels", "0.3", "1.0"]) == 0
    page = (out / "index.html").read_text()
    names = ["ode", "sde_0.3", "sde_1", "cps_0.3", "cps_1"]
    for i in range(2):
        for name in names:
            assert f"images/{i:03d}_{name}.png" in page
            assert (out / "images" / f"{i:03d}_{name}.png").is_file()
    ode = np.asarray(Image.open(out / "images" / "000_ode.png"), dtype=np.float32)
    weak = np.asarray(Image.open(out / "images" / "000_sde_0.3.png"), dtype=np.float32)
    strong = np.asarray(Image.open(out / "images" / "000_sde_1.png"), dtype=np.float32)
    assert 0 < np.abs(weak - ode).mean() < np.abs(strong - ode).mean()


@pytest.mark.slow
def test_demo_and_geneval_take_a_full_fine_tuning_checkpoint_with_its_settings(tmp_path, capsys):
    """A fully fine-tuned run's checkpoint (a transformer/ folder, as make demo writes) in inference_demo.py and
    GenEval generation with no flag beyond the paths: the run's base model, size (64), text length (32), steps
    and guidance come from its config.json; a flag the model was not trained with gets a warning naming both."""
    train = load_script("scripts/train.py")
    tiny = os.path.join(REPO, "config", "tiny.py")
    assert train.main(["--config", f"{tiny}:tiny_full_finetune", f"--config.logdir={tmp_path}", "--config.progress=false",
                       "--config.num_epochs=1", "--config.eval_freq=100", "--config.run_name=full"]) == 0
    checkpoint = next(str(p) for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert os.path.isdir(os.path.join(checkpoint, "transformer")) and not os.path.isdir(os.path.join(checkpoint, "lora"))
    capsys.readouterr()
    out = tmp_path / "demo"
    assert inference_demo.main(["--lora_path", checkpoint, "--custom_prompt", "a red circle", "--num_images", "1",
                                "--output_dir", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "a fully fine-tuned transformer" in printed.out and "10 steps, guidance 4.5, sd3" in printed.out
    assert "warning" not in printed.err
    base, trained = (np.asarray(Image.open(out / kind / "000_0.png"), dtype=np.float32) for kind in ("base", "lora"))
    assert base.shape == (64, 64, 3) and np.abs(base - trained).max() > 0
    assert json.load(open(out / "prompts.json"))["model_name"] == "builtin:tiny"
    assert inference_demo.main(["--lora_path", checkpoint, "--custom_prompt", "a red circle", "--num_images", "1",
                                "--max_sequence_length", "256", "--output_dir", str(tmp_path / "other"), "--device", "cpu"]) == 0
    assert "--max_sequence_length 256 differs from the 32 the model was trained with" in capsys.readouterr().err
    generate = load_script("geneval/generation/generate.py")
    metadata = os.path.join(REPO, "dataset", "geneval", "test_metadata.jsonl")
    assert generate.main(["--metadata", metadata, "--limit", "1", "--n_samples", "1", "--outdir", str(tmp_path / "geneval"),
                          "--lora_path", checkpoint]) == 0
    with Image.open(tmp_path / "geneval" / "00000" / "samples" / "0000.png") as image:
        assert image.size == (64, 64)


def test_the_shipped_shapes_model_carries_its_settings(tmp_path, capsys):
    """models/shapes-sd3/flow_grpo.json: 32 px, 16 text tokens, CFG 4.5, 20 steps reach GenEval generation with
    only the model's path (the default 256 tokens drew grey noise from this model)."""
    from flow_grpo.model_settings import read_settings

    model = os.path.join(REPO, "models", "shapes-sd3")
    assert read_settings(model).values == {"height": 32, "width": 32, "max_sequence_length": 16, "guidance_scale": 4.5, "num_steps": 20}
    generate = load_script("geneval/generation/generate.py")
    metadata = os.path.join(REPO, "dataset", "shapes", "test_metadata.jsonl")
    assert generate.main(["--metadata", metadata, "--limit", "1", "--n_samples", "1", "--outdir", str(tmp_path), "--model", model]) == 0
    assert not capsys.readouterr().err.count("warning")
    with Image.open(tmp_path / "00000" / "samples" / "0000.png") as image:
        assert image.size == (32, 32)
