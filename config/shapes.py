"""The shapes world: GenEval on a laptop CPU. Flow-GRPO and Flow-GRPO-Fast on the shipped base model.

    python scripts/shapes_demo.py                                            # shapes_grpo + before/after
    python scripts/train_sd3.py --config config/shapes.py:shapes_grpo       # the training run alone

The base (models/shapes-sd3, made by scripts/pretrain_shapes.py) is a 32 px SD3; the reward is the GenEval
partial-credit score from the analytic shapes detector; evaluation uses GenEval's official rule on 60
held-out prompts with ODE sampling.
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

base = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shapes():
    config = base.default()
    config.pretrained.model = os.path.join(REPO, "models", "shapes-sd3")
    config.dataset = os.path.join(REPO, "dataset", "shapes")
    config.resolution = 32
    config.max_sequence_length = 16
    config.mixed_precision = "no"
    config.log_with = ""
    config.lora.rank = 16
    config.lora.alpha = 32

    config.sample.num_steps = 10
    config.sample.eval_num_steps = 20
    config.sample.guidance_scale = 4.5
    config.sample.eval_guidance_scale = 4.5
    config.sample.train_batch_size = 64
    config.sample.num_image_per_prompt = 8  # 16 groups of 8 per epoch
    config.sample.num_batches_per_epoch = 2
    config.sample.test_batch_size = 60
    config.sample.noise_level = 0.7

    config.train.batch_size = 64
    config.train.gradient_accumulation_steps = 1
    config.train.learning_rate = 1e-3
    config.train.clip_range = 1e-3
    config.train.timestep_fraction = 0.5  # the first, high-noise half of the 10 steps
    config.train.beta = 0.0
    config.train.ema_update_interval = 1

    config.reward_fn = {"geneval": 1.0}
    config.reward_options = {"geneval": {"backend": "shapes"}}
    config.num_epochs = 60
    config.eval_freq = 10
    config.save_freq = 20
    config.num_checkpoint_limit = 2
    return config


def shapes_grpo():
    """Flow-GRPO: SDE on all 10 steps, trained on the first 5."""
    config = _shapes()
    config.run_name = "shapes_grpo"
    return config


def shapes_fast():
    """Flow-GRPO-Fast: CPS (noise 0.8) on a window of 2 steps among the first 4, ODE elsewhere; only the
    window is stored and trained."""
    config = _shapes()
    config.run_name = "shapes_fast"
    config.sample.sde_type = "cps"
    config.sample.noise_level = 0.8
    config.sample.sde_window_size = 2
    config.sample.sde_window_range = (0, 4)
    config.train.timestep_fraction = 1.0
    config.train.clip_range = 1e-4
    return config


def get_config(name):
    return config_by_name(name, globals())
