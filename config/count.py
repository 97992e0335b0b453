"""Counting experiments (GenEval-style counting prompts, SD3.5 Medium).

    accelerate launch --num_processes 8 scripts/train.py \
        --config config/count.py:geneval_sd3_counting_10_step20_reward_strict_first_50
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))


def _counting(task="counting_10"):
    """Flow-GRPO on the paper's SD3.5-M setup (``families.sd3``), GenEval's beta 0.04, a counting task."""
    config = base.task(families.sd3(), task)
    config.train.beta = 0.04
    return config


def geneval_sd3_counting_10():
    """Counts 1-10, partial-credit GenEval reward, the Flow-GRPO defaults."""
    return _counting("counting_10")


def geneval_sd3_counting_10_step20_reward_strict_first_50():
    """20 sampling steps, CFG 7, strict binary reward (exact count or 0), trained on the first 50% of steps,
    beta 0.01. Set merge_lora_path to fuse a cold-start (e.g. SFT) LoRA into the base before RL."""
    config = _counting("counting_10")
    config.sample.num_steps = 20
    config.sample.sde_window_range = (0, 20)
    config.sample.guidance_scale = 7.0
    config.sample.eval_guidance_scale = 7.0
    config.train.timestep_fraction = 0.5
    config.train.timestep_strategy = "first"
    config.train.beta = 0.01
    config.reward_options = {"geneval": {"strict": True, "binary": True}}
    config.merge_lora_path = ""
    return config


def geneval_sd3_counting_1_5():
    return _counting("counting_1_5")


def geneval_sd3_counting_6_10():
    return _counting("counting_6_10")


def get_config(name):
    return config_by_name(name, globals())
