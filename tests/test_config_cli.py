import os

import pytest

from flow_grpo.config_cli import ConfigError, parse_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(REPO, "config", "toy.py")


def test_loads_named_config_and_applies_overrides():
    config = parse_args(
        ["--config", f"{TOY}:moons_unlearn", "--config.train.beta=0.5", "--config.num_epochs", "3",
         "--config.sample.same_latent=false", "--config.sample.sde_type=cps", "--config.train.learning_rate=1e-3"]
    )
    assert config.train.beta == 0.5
    assert config.num_epochs == 3 and isinstance(config.num_epochs, int)
    assert config.sample.same_latent is False
    assert config.sample.sde_type == "cps"
    assert config.train.learning_rate == 1e-3


def test_unknown_config_name_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        parse_args(["--config", f"{TOY}:moons_unlern"])
    message = str(info.value)
    assert "moons_unlern" in message and "did you mean 'moons_unlearn'" in message
    for name in ("line_shapes", "moons_unlearn", "moons_fidelity"):
        assert name in message


def test_missing_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="line_shapes"):
        parse_args(["--config", TOY])


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError) as info:
        parse_args(["--config", f"{TOY}:line_shapes", "--config.train.bta=0.1"])
    message = str(info.value)
    assert "train.bta" in message and "train.beta" in message and "clip_range" in message


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="train.beta.*number"):
        parse_args(["--config", f"{TOY}:line_shapes", "--config.train.beta=lots"])
    with pytest.raises(ConfigError, match="num_epochs.*integer"):
        parse_args(["--config", f"{TOY}:line_shapes", "--config.num_epochs=2.5"])


def test_dict_override_in_python_or_json():
    """A dict override may be written as Python or as JSON (true, null): the same nested value either way; a
    list where a dict belongs is refused by name."""
    shapes = os.path.join(REPO, "config", "shapes.py") + ":shapes_grpo"
    python = parse_args(["--config", shapes, "--config.reward_options={'geneval': {'backend': 'shapes', 'binary': True}}"])
    as_json = parse_args(["--config", shapes, '--config.reward_options={"geneval": {"backend": "shapes", "binary": true, "x": null}}'])
    assert python.reward_options["geneval"]["binary"] is True
    assert dict(as_json.reward_options["geneval"]) == {"backend": "shapes", "binary": True, "x": None}
    with pytest.raises(ConfigError, match="reward_options.*dict"):
        parse_args(["--config", shapes, "--config.reward_options=[1, 2]"])


def test_missing_file_and_stray_argument():
    with pytest.raises(ConfigError, match="not found"):
        parse_args(["--config", "config/nope.py:x"])
    with pytest.raises(ConfigError, match="unrecognised argument '--lr'"):
        parse_args(["--config", f"{TOY}:line_shapes", "--lr", "3"])


# ---- the composition of the named configs (docs/running.md, "How a named config is composed") ----

SIZE_KEYS = {"sample.train_batch_size", "sample.num_batches_per_epoch", "train.batch_size",
             "train.gradient_accumulation_steps", "scale.processes"}


def leaves(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items") and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_a_gpu_count_variant_is_its_run_resized():
    """Every ``NAME_<n>gpu`` is ``families.on_gpus(NAME(), n)`` key by key: it differs from NAME in the batch
    sizes (and the process count it records) alone, and samples the same groups per epoch on n processes as NAME on its family's published count."""
    import re

    from flow_grpo.config_cli import experiment_names, load_module

    families = load_module(os.path.join(REPO, "config", "families.py"))
    variants = 0
    for file in ("grpo.py", "flux.py", "qwenimage.py"):
        module = load_module(os.path.join(REPO, "config", file))
        for name in experiment_names(vars(module)):
            match = re.fullmatch(r"(\w+)_(\d+)gpu", name)
            if not match:
                continue
            variants += 1
            run, gpus = getattr(module, match[1])(), int(match[2])
            variant = leaves(getattr(module, name)())
            assert variant == leaves(families.on_gpus(getattr(module, match[1])(), gpus)), name
            assert {key for key, value in leaves(run).items() if variant[key] != value} <= SIZE_KEYS, name
            published = families.PUBLISHED_SIZES[run.pretrained.family][0]

            def groups(c, processes):
                return processes * c["sample.train_batch_size"] * c["sample.num_batches_per_epoch"] // c["sample.num_image_per_prompt"]

            assert groups(variant, gpus) == groups(leaves(run), published), name
    assert variants == 12


def test_only_the_recipes_name_an_objective():
    """``config.train.objective`` is assigned in config/recipes.py (one function per objective) and nowhere else
    in config/ but base.py's default: a named config takes its objective from a recipe."""
    import glob
    import re

    assigned = {}
    for path in glob.glob(os.path.join(REPO, "config", "*.py")):
        found = re.findall(r"^\s+[\w.]+\.objective = (.+)$", open(path).read(), flags=re.M)  # code, not the docstrings' --config
        if found:
            assigned[os.path.basename(path)] = found
    assert assigned.pop("base.py") == ['"grpo"']
    recipes = assigned.pop("recipes.py")
    assert assigned == {}
    assert {'"nft"', '"awm"', '"dpo"', '"sft"', '"dgpo"', '"mixgrpo"', '"grpo_guard"', '"flowrl"'} <= set(recipes)


def test_an_objective_key_renamed_off_a_shared_name_says_its_new_name():
    """config.train's shared keys and an objective's own section share no name; the old names say where they went."""
    from flow_grpo.config_cli import ConfigError, parse_args

    tiny = os.path.join(REPO, "config", "tiny.py") + ":tiny_nft"
    with pytest.raises(ConfigError, match=r"'train.nft.beta' was renamed: use --config.train.nft.mix_strength"):
        parse_args(["--config", tiny, "--config.train.nft.beta=0.1"])
    train = parse_args(["--config", tiny]).train
    shared = {key for key, value in train.items() if not hasattr(value, "items")}
    clashes = {f"{section}.{key}" for section, value in train.items() if hasattr(value, "items") for key in value if key in shared}
    assert not clashes, clashes


def test_the_config_dump_reads_renamed_keys_under_their_new_names():
    from conftest import load_script

    dump = load_script("scripts/dump_configs.py")
    old = {"tiny.py:tiny_nft": {"train": {"nft": {"beta": 0.1}}}}
    assert dump.differences(old, {"tiny.py:tiny_nft": {"train": {"nft": {"mix_strength": 0.1}}}}, rename=True) == []
    assert dump.differences(old, {"tiny.py:tiny_nft": {"train": {"nft": {"mix_strength": 0.2}}}}, rename=True) == [
        "tiny.py:tiny_nft: train.nft.mix_strength changed 0.1 -> 0.2"]
    assert len(dump.differences(old, {"tiny.py:tiny_nft": {"train": {"nft": {"mix_strength": 0.1}}}})) == 2


def test_a_run_launched_on_other_processes_keeps_its_epoch():
    """config.scale: config/grpo.py's 32-GPU run launched on 4 processes is its _4gpu variant key by key (the same
    48 groups of 24 in two optimizer steps), on 32 it is unchanged, and an epoch that cannot split says so."""
    from flow_grpo.config_cli import load_config
    from flow_grpo.training.sizes import fit_to_processes

    grpo = os.path.join(REPO, "config", "grpo.py")
    run, on_four = load_config(f"{grpo}:geneval_sd3"), load_config(f"{grpo}:geneval_sd3_4gpu")
    assert fit_to_processes(run, 32) == [] and run.scale.processes == 32
    (line,) = fit_to_processes(run, 4)
    assert "sized for 32 process(es), launched on 4: the same 48 groups of 24 per epoch, 2 optimizer step(s)" in line
    assert "sample.train_batch_size 9 -> 6" in line
    run.run_name = on_four.run_name
    assert run.to_dict() == on_four.to_dict()
    with pytest.raises(ConfigError, match="48 groups of 24 do not split into batches of 5 process"):
        fit_to_processes(load_config(f"{grpo}:geneval_sd3"), 5)
    tiny = load_config(os.path.join(REPO, "config", "tiny.py") + ":tiny")  # sized by hand: left as written
    assert fit_to_processes(tiny, 2) == [] and tiny.scale.processes == 0


def test_the_trainer_fits_the_epoch_to_its_launch_unless_the_batches_are_given(monkeypatch, capsys):
    from conftest import load_script

    train = load_script("scripts/train.py")
    spec = os.path.join(REPO, "config", "grpo.py") + ":geneval_sd3"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert train.parse_args(["--config", spec], after_overrides=train.fit_epoch_to_launch).sample.train_batch_size == 6
    assert "launched on 4" in capsys.readouterr().out
    by_hand = train.parse_args(["--config", spec, "--config.sample.train_batch_size=12"], after_overrides=train.fit_epoch_to_launch)
    assert by_hand.sample.train_batch_size == 12 and by_hand.sample.num_batches_per_epoch == 4  # as written
    assert "not resized, as the command line sets sample.train_batch_size" in capsys.readouterr().out
