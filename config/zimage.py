"""Flow-GRPO on Z-Image-Turbo (Tongyi-MAI/Z-Image-Turbo), the distilled few-step Z-Image, with PickScore.

    accelerate launch --config_file scripts/accelerate_configs/fsdp.yaml --num_processes 8 \\
        scripts/train.py --config config/zimage.py:pickscore_zimage_turbo

Source: Flow-Factory's ``examples/grpo/full/z_image_turbo/default.yaml`` (X-GenGroup/Flow-Factory; the settings and
where this differs are in config/families.py ``zimage_turbo``); Flow-GRPO's own repository publishes no Z-Image run.
A distilled model samples without CFG and in few steps, so the SDE is one step of six, as theirs.
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
base = load_module(os.path.join(HERE, "base.py"))
families = load_module(os.path.join(HERE, "families.py"))


def pickscore_zimage_turbo():
    config = base.task(families.zimage_turbo(), "pickscore")
    config.run_name = "pickscore_zimage_turbo"
    return config


def get_config(name):
    return config_by_name(name, globals())
