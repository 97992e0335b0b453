"""Every named config in config/*.py, checked in two ways (issue 37's budget: 113 one-epoch runs took a fifth of
the suite).

1. Every config is built and validated (cheap): it loads, the script's own checks accept it, its prompt files are
   in the repository, its batch arithmetic holds at the process count it is sized for (the k-repeat sampler's
   groups included), and its rewards can be built here or replaced.
2. One config per distinct code path runs one epoch on its family's tiny model (SD3, FLUX.1-dev, Qwen-Image,
   Wan2.1, Kontext; or its toy world) with everything else as configured: sampling steps and SDE, window,
   timesteps, objective, KL form, guidance. A code path is ``run_path(config)``: the model that runs, the
   objective, the sampler (SDE type, window schedule, ODE solver), guidance in sampling and training, the KL form,
   the timestep strategy, LoRA or full fine-tuning and the rewards that run. Configs that differ only in sizes,
   learning rates, coefficients or prompt sets share a path, and the first of them (in file order) runs. A new
   config with a new combination is run without any list to update.

Rewards whose model cannot be loaded here (no hub) are replaced by the brightness reward; the OCR reward is real
(its model ships in the rapidocr wheel) in the SD3 configs (SD3_ONLY_REWARDS says why not elsewhere). Groups are of
2 images, 2 prompts per epoch. Each run adds brightness at weight 1e-3, so that a group's rewards
differ even where a real reward reads nothing on a random tiny model, and asserts that an optimizer step
happened. Evaluation runs 2 ODE steps: its step count is a number, not a code path."""

import collections
import functools
import glob
import json
import os
import re

import pytest

from conftest import REPO, load_script, tiny_frame_size
from flow_grpo.backbones import BACKBONES, BUILTIN
from flow_grpo.config_cli import experiment_names, load_module, parse_args
from flow_grpo.data import DistributedKRepeatSampler, PromptDataset
from flow_grpo.rewards import RewardError, build_reward
from flow_grpo.training.sizes import run_sizes

train_toy = load_script("scripts/train_toy.py")
train_module = load_script("scripts/train.py")

TINY_MODELS = {cls.family: name for name, cls in BUILTIN.items()}  # family -> its built-in tiny model
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(REPO, "config", "*.py")) if "def get_config" in open(p).read())
CASES = [(os.path.basename(path), name) for path in CONFIG_FILES for name in experiment_names(vars(load_module(path)))]
# editing datasets that are not shipped (their images are on the hub; config/kontext.py says where): their
# configs run on the shipped editing task instead, everything else as configured
UNSHIPPED = {os.path.join(REPO, "dataset", "counting_edit"): os.path.join(REPO, "dataset", "shapes_edit")}


def load(file: str, name: str):
    config = parse_args(["--config", os.path.join(REPO, "config", file) + f":{name}"])
    if not os.path.isdir(config.dataset):
        config.dataset = UNSHIPPED[config.dataset]
    return config


def sized_for(config) -> int:
    """The number of processes a config's batches are sized for, as it records it (``config.scale.processes``;
    the toy worlds and the hand-sized CPU configs: one)."""
    return config.get("scale", {}).get("processes", 0) or 1


@functools.lru_cache(maxsize=None)
def buildable(name: str, options: str) -> bool:
    try:
        build_reward(name, **json.loads(options))
        return True
    except RewardError:
        return False


# a real reward model that costs ~0.1 s per image here: it runs in the SD3 configs that name it and is replaced like
# the hub's rewards on the other families (its code does not depend on the family that drew the image; a video's
# frames reach any image reward the same way, brightness included, and tests/test_video_and_editing.py checks that)
SD3_ONLY_REWARDS = ("ocr",)


def family_of(config) -> str:
    model = config.pretrained.model
    return BUILTIN[model].family if model in BUILTIN else config.pretrained.family or "sd3"


def cheap_rewards(reward_fn: dict, options: dict, family: str = "sd3") -> tuple[dict, dict]:
    """The configured rewards, each replaced by brightness when its model cannot be built here (or, for
    SD3_ONLY_REWARDS, when the config is not an SD3 one)."""
    rewards, kept_options = {}, {}
    for name, weight in reward_fn.items():
        if (family == "sd3" or name not in SD3_ONLY_REWARDS) and buildable(name, json.dumps(options.get(name, {}), sort_keys=True)):
            rewards[name], kept_options[name] = weight, options.get(name, {})
        else:
            rewards["brightness"] = rewards.get("brightness", 0.0) + weight
    return rewards, kept_options


def is_hub_model(config) -> bool:
    """Whether the config names a hub model (its run here takes its family's tiny model instead)."""
    return not config.pretrained.model.startswith(("builtin:", os.path.join(REPO, "models")))


def tiny_model(config) -> str:
    """The model a config's run uses here: its own when it is built in or shipped, else its family's tiny one."""
    if is_hub_model(config):
        return TINY_MODELS[family_of(config)]
    return os.path.relpath(config.pretrained.model, REPO) if os.path.isabs(config.pretrained.model) else config.pretrained.model


def run_path(config) -> tuple:
    """What a one-epoch run of ``config`` exercises that another config may not (module docstring)."""
    sample, train = config.sample, config.train
    rewards, _ = cheap_rewards(config.reward_fn.to_dict(), config.reward_options.to_dict(), family_of(config))
    return (tiny_model(config), train.objective, sample.sde_type,
            sample.sde_window_schedule if sample.sde_window_size else "no window", sample.ode_solver,
            sample.guidance_scale > 1, bool(train.cfg), train.kl_form if train.beta > 0 else "no KL",
            train.timestep_strategy, bool(config.use_lora), tuple(sorted(rewards)))


def check_batch_arithmetic(config, processes: int) -> None:
    sizes = run_sizes(config, processes)
    train = PromptDataset(config.dataset, "train")
    k = config.sample.num_image_per_prompt
    samplers = [DistributedKRepeatSampler(len(train), config.sample.train_batch_size, k, processes, rank, seed=config.seed)
                for rank in range(processes)]
    counts = collections.Counter(i for sampler in samplers for i in sampler.next_indices())
    assert set(counts.values()) == {k} and len(counts) * k == processes * sizes.images_per_batch
    assert sizes.groups_per_epoch * k == sizes.images_per_epoch


IMAGE_CASES = [c for c in CASES if c[0] != "toy.py"]
CONFIGS = {case: load(*case) for case in IMAGE_CASES}  # loaded once at collection; the tests load their own copy
PATHS = collections.defaultdict(list)  # run_path -> the configs on it, in file order
for _case, _config in CONFIGS.items():
    PATHS[run_path(_config)].append(_case)
RUN_CASES = [cases[0] for cases in PATHS.values()]


def test_every_config_file_has_named_configs_and_base_has_none():
    files = {os.path.basename(p) for p in CONFIG_FILES}
    assert files and files == {file for file, _ in CASES}  # a file with get_config names at least one config
    assert "base.py" not in files  # base.py holds the defaults, no experiment
    assert len(RUN_CASES) < len(IMAGE_CASES)  # the paths are shared (else run_path separates configs by accident)


def test_the_named_configs_use_every_objective_and_family():
    from flow_grpo.objectives import OBJECTIVES

    assert {path[1] for path in PATHS} == set(OBJECTIVES)
    assert {family_of(config) for config in CONFIGS.values()} == set(BACKBONES)


@pytest.mark.parametrize("file,name", IMAGE_CASES)
def test_config_builds_and_validates(file, name):
    config = load(file, name)
    train_module.check_config(config)
    PromptDataset(config.dataset, "test")
    check_batch_arithmetic(config, sized_for(config))
    rewards, _ = cheap_rewards(config.reward_fn.to_dict(), config.reward_options.to_dict(), family_of(config))
    assert rewards and sum(rewards.values()) > 0
    assert config.train.objective == run_path(config)[1] and config.sample.eval_num_steps > 0


@pytest.mark.slow
@pytest.mark.parametrize("file,name", RUN_CASES)
def test_config_runs_one_epoch(file, name, tmp_path, monkeypatch, capsys):
    """One epoch of the first config on each code path (module docstring); the others on its path:
    ``PATHS[run_path(config)]``."""
    spec = os.path.join(REPO, "config", file) + f":{name}"
    config = load(file, name)
    rewards, options = cheap_rewards(config.reward_fn.to_dict(), config.reward_options.to_dict(), family_of(config))
    rewards["brightness"] = rewards.get("brightness", 0.0) + 1e-3  # the groups' rewards differ: an update happens
    judges = tuple(dict.fromkeys(n if n in rewards else "brightness" for n in config.train.gardo.aux_rewards))  # GARDO's, replaced alike
    k = 2  # groups of 2: the smallest group with an advantage
    overrides = [
        f"--config.logdir={tmp_path}", "--config.progress=false", "--config.log_with=", "--config.mixed_precision=no",
        "--config.num_epochs=1", "--config.save_freq=100", "--config.eval_freq=100", "--config.sample.eval_max_prompts=2",
        "--config.sample.eval_num_steps=2", "--config.sample.test_batch_size=2", f"--config.sample.num_image_per_prompt={k}",
        f"--config.sample.train_batch_size={2 * k}", "--config.sample.num_batches_per_epoch=1",
        f"--config.train.batch_size={k}", "--config.train.gradient_accumulation_steps=2",
        f"--config.reward_fn={rewards}", f"--config.reward_options={options}", f"--config.dataset={config.dataset}",
        f"--config.train.gardo.aux_rewards={judges}",
    ]
    if is_hub_model(config):
        # its family's tiny model at its tiny size (conftest.tiny_frame_size): a square image by resolution, else each side
        height, width, frames = tiny_frame_size(BACKBONES[family_of(config)])
        size = ([f"--config.resolution={height}"] if (height, frames) == (width, 1)
                else [f"--config.height={height}", f"--config.width={width}", f"--config.num_frames={frames}"])
        overrides += [f"--config.pretrained.model={tiny_model(config)}", "--config.max_sequence_length=32", *size]
    assert train_module.main(["--config", spec, *overrides]) == 0
    out = capsys.readouterr().out
    stored = run_sizes(config, sized_for(config)).stored_steps  # the Fast window, or the schedule for ODE rollouts
    trained = run_sizes(config, sized_for(config)).trained_steps  # int(stored * fraction), or the stratified count
    assert re.search(rf"denoising steps stored / trained\s+{stored} / {trained} per image", out), out
    assert f"objective {config.train.objective}" in out
    rows = [json.loads(line) for line in open(tmp_path / config.run_name / "metrics.jsonl")]
    assert len(rows) == 2  # the base model's evaluation, then the epoch
    row = rows[1]
    assert row["trained_samples"] == 2.0 * k and row["global_step"] == 1  # one optimizer step on every sample
    assert ("first_microstep_kl" in row) == (config.train.beta > 0 and config.train.objective != "flowrl")
    assert ("tb_loss" in row) == (config.train.objective == "flowrl")


@pytest.mark.slow
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
    rows = [json.loads(line) for line in open(tmp_path / config.run_name / "metrics.jsonl")]
    assert rows[-1]["epoch"] == 1 and rows[-1]["global_step"] >= 1
