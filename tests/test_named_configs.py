"""Every named config in config/*.py, exercised: it loads, its prompt files are in the repository, its batch
arithmetic holds at the process count it is sized for (the k-repeat sampler's groups included), and it runs one
epoch on its family's tiny model (SD3, FLUX.1-dev, Qwen-Image; or its toy world) with everything else as configured: sampling steps and SDE, window,
timesteps, objective, KL form, guidance. Rewards whose model cannot be loaded here (no hub) are replaced by
the brightness reward; the OCR reward is real (its model ships in the rapidocr wheel)."""

import collections
import glob
import os
import re

import pytest

from conftest import REPO, load_script
from flow_grpo.backbones import BUILTIN
from flow_grpo.config_cli import experiment_names, load_module, parse_args
from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
from flow_grpo.rewards import RewardError, build_reward
from flow_grpo.training.sizes import run_sizes

train_sd3 = load_script("scripts/train_sd3.py")
train_toy = load_script("scripts/train_toy.py")

TINY_MODELS = {family: name for name, (family, _) in BUILTIN.items()}  # family -> its built-in tiny model
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(REPO, "config", "*.py")) if "def get_config" in open(p).read())
CASES = [(os.path.basename(path), name) for path in CONFIG_FILES for name in experiment_names(vars(load_module(path)))]


def sized_for(file: str, name: str) -> int:
    """The number of processes a config is sized for: config/grpo.py and count.py keep the 32-GPU original's
    groups per epoch, with _4gpu / _1gpu variants; config/forward.py runs NFT, AWM and GARDO's NFT on one node of 8
    GPUs, DGPO on 4, DPO and SFT on 1 (as their sources); the CPU configs run in one process."""
    if file in ("grpo.py", "count.py"):
        return 1 if name.endswith("_1gpu") else 4 if name.endswith("_4gpu") else 32
    if file == "forward.py":  # DGPO on 4, as its authors
        return 8 if name.endswith(("_nft", "_awm", "_nft_gardo")) else 4 if name.endswith("_dgpo") else 1
    if file in ("flux.py", "qwenimage.py"):  # the original's 32 GPUs, _8gpu variants; the forward objectives on 8
        return 8 if name.endswith(("_8gpu", "_nft", "_awm")) else 32
    if file == "kontext.py":  # the original's 28 GPUs
        return 28
    return 1  # wan.py: the original's one GPU; the CPU configs


def test_every_config_file_and_name_is_covered():
    files = {file for file, _ in CASES}
    assert files == {"count.py", "flux.py", "forward.py", "grpo.py", "kontext.py", "qwenimage.py", "shapes.py", "tiny.py",
                     "toy.py", "wan.py"}
    assert len(CASES) == 113  # a new named config is picked up by the tests below; update this count
    assert not os.path.exists(os.path.join(REPO, "config", "base.py")) or "def get_config" not in open(os.path.join(REPO, "config", "base.py")).read()


def cheap_rewards(reward_fn: dict, options: dict) -> tuple[dict, dict]:
    """The configured rewards, each replaced by brightness when its model cannot be built here."""
    rewards, kept_options = {}, {}
    for name, weight in reward_fn.items():
        try:
            build_reward(name, **options.get(name, {}))
            rewards[name], kept_options[name] = weight, options.get(name, {})
        except RewardError:
            rewards["brightness"] = rewards.get("brightness", 0.0) + weight
    return rewards, kept_options


def check_batch_arithmetic(config, processes: int) -> None:
    sizes = run_sizes(config, processes)
    train = PromptDataset(config.dataset, "train")
    k = config.sample.num_image_per_prompt
    samplers = [DistributedKRepeatSampler(len(train), config.sample.train_batch_size, k, processes, rank, seed=config.seed)
                for rank in range(processes)]
    counts = collections.Counter(i for sampler in samplers for i in sampler.next_indices())
    assert set(counts.values()) == {k} and len(counts) * k == processes * sizes.images_per_batch
    assert sizes.groups_per_epoch * k == sizes.images_per_epoch


# editing datasets that are not shipped (their images are on the hub; config/kontext.py says where): their
# configs run on the shipped editing task instead, everything else as configured
UNSHIPPED = {os.path.join(REPO, "dataset", "counting_edit"): os.path.join(REPO, "dataset", "shapes_edit")}


@pytest.mark.parametrize("file,name", [c for c in CASES if c[0] != "toy.py"])
def test_config_runs_one_epoch(file, name, tmp_path, monkeypatch, capsys):
    spec = os.path.join(REPO, "config", file) + f":{name}"
    config = parse_args(["--config", spec])
    dataset = config.dataset if os.path.isdir(config.dataset) else UNSHIPPED[config.dataset]
    config.dataset = dataset
    PromptDataset(config.dataset, "test")
    check_batch_arithmetic(config, sized_for(file, name))

    rewards, options = cheap_rewards(config.reward_fn.to_dict(), config.reward_options.to_dict())
    judges = tuple(dict.fromkeys(n if n in rewards else "brightness" for n in config.train.gardo.aux_rewards))  # GARDO's, replaced alike
    k = min(config.sample.num_image_per_prompt, 4)
    overrides = [
        f"--config.logdir={tmp_path}", "--config.progress=false", "--config.log_with=", "--config.mixed_precision=no",
        "--config.num_epochs=1", "--config.save_freq=100", "--config.eval_freq=100", "--config.sample.eval_max_prompts=2",
        "--config.sample.test_batch_size=2", f"--config.sample.num_image_per_prompt={k}",
        f"--config.sample.train_batch_size={2 * k}", "--config.sample.num_batches_per_epoch=1",
        f"--config.train.batch_size={k}", "--config.train.gradient_accumulation_steps=2",
        f"--config.reward_fn={rewards}", f"--config.reward_options={options}", f"--config.dataset={dataset}",
        f"--config.train.gardo.aux_rewards={judges}",
    ]
    if not config.pretrained.model.startswith(("builtin:", os.path.join(REPO, "models"))):  # a hub model: its family's tiny one
        family = config.pretrained.family or "sd3"
        # its family's tiny model at a tiny size: 64 px, Kontext at the edits' 32 px, Wan 9 frames of 32 x 48
        size = {"wan": ["--config.height=32", "--config.width=48", "--config.num_frames=9"],
                "flux_kontext": ["--config.resolution=32"]}.get(family, ["--config.resolution=64"])
        overrides += [f"--config.pretrained.model={TINY_MODELS[family]}", "--config.max_sequence_length=32", *size]
    assert train_sd3.main(["--config", spec, *overrides]) == 0
    out = capsys.readouterr().out
    stored = run_sizes(config, sized_for(file, name)).stored_steps  # the Fast window, or the schedule for ODE rollouts
    trained = run_sizes(config, sized_for(file, name)).trained_steps  # int(stored * fraction), or the stratified count
    assert re.search(rf"denoising steps stored / trained\s+{stored} / {trained} per image", out), out
    assert f"objective {config.train.objective}" in out
    rows = [line for line in open(tmp_path / config.run_name / "metrics.jsonl")]
    assert len(rows) == 2  # the base model's evaluation, then the epoch
    row = __import__("json").loads(rows[1])
    # one optimizer step, unless every group's rewards were equal (OCR reads nothing on a random tiny model)
    assert row["trained_samples"] in (0.0, 2.0 * k) and row["global_step"] == (1 if row["trained_samples"] else 0)
    if row["trained_samples"]:
        assert ("first_microstep_kl" in row) == (config.train.beta > 0 and config.train.objective != "flowrl")
        assert ("tb_loss" in row) == (config.train.objective == "flowrl")


@pytest.mark.parametrize("name", [n for f, n in CASES if f == "toy.py"])
def test_toy_config_runs_one_epoch(name, tmp_path, capsys):
    spec = os.path.join(REPO, "config", "toy.py") + f":{name}"
    config = parse_args(["--config", spec])
    if config.world.name == "line_shapes":
        for split in ("train", "test"):
            assert os.path.isfile(os.path.join(config.world.dataset, f"{split}.txt"))
    argv = ["--config", spec, f"--config.logdir={tmp_path}", "--config.progress=false", "--config.num_epochs=1",
            "--config.pretrain.num_steps=30", "--config.sample.eval_samples_per_prompt=8"]
    assert train_toy.main(argv) == 0
    assert f"objective {config.train.objective}" in capsys.readouterr().out
    rows = [__import__("json").loads(line) for line in open(tmp_path / config.run_name / "metrics.jsonl")]
    assert rows[-1]["epoch"] == 1 and rows[-1]["global_step"] >= 1
