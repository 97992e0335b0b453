"""Flow-GRPO on FLUX.1 Kontext image editing (black-forest-labs/FLUX.1-Kontext-dev).

    accelerate launch --config_file scripts/accelerate_configs/deepspeed_zero2.yaml --num_processes 28 \\
        scripts/train.py --config config/kontext.py:counting_flux_kontext
    python inference_demo.py --model_name black-forest-labs/FLUX.1-Kontext-dev --lora_path logs/... \\
        --test_file dataset/counting_edit/test_metadata.jsonl --height 512 --width 512 --num_steps 28

Source (the original flow_grpo, yifan123/flow_grpo ``config/grpo.py`` function ``counting_flux_kontext`` and
its ``scripts/train_flux_kontext.py``): 512 px (input images resized to 512 x 512, Kontext's auto-resize not
used), 6 sampling / 28 evaluation steps, FLUX's distilled guidance 2.5 as the model's input, SDE noise 0.9,
int(6 x 0.99) = 5 trained steps, 3 images per GPU in groups of 21 on 28 GPUs, 12 batches per epoch, lr 3e-4,
clip 1e-4, no KL, global std, EMA, bf16, LoRA r64 / alpha 128 on FLUX's targets plus ``proj_mlp``
(``KONTEXT_LORA_TARGET_MODULES``); reward 0.5 CLIP image similarity to the input image + 0.5 GenEval on the
target counts; groups are (instruction, input image) pairs.
Its dataset (``dataset/counting_edit``: instructions such as "Change the number of clock in the image to two."
on FLUX.1-dev images, with GenEval metadata) is not shipped: its images are on the Hugging Face hub
(``jieliu/counting_edit``, ``generated_images.zip``); unpack them so that each line's ``image`` field
(``generated_images/image_N.jpg``) resolves inside the folder. ``shapes_edit_kontext`` runs the same
settings on the shapes world's editing task, which ships (dataset/shapes_edit).
"""

import os

from flow_grpo.config_cli import config_by_name, load_module

HERE = os.path.dirname(os.path.abspath(__file__))
families = load_module(os.path.join(HERE, "families.py"))
REPO = os.path.dirname(HERE)


def _kontext(dataset: str):
    """The original's Kontext run (``families.flux_kontext``) on an editing dataset."""
    config = families.flux_kontext()
    config.dataset = dataset
    return config


def counting_flux_kontext():
    config = _kontext(os.path.join(REPO, "dataset", "counting_edit"))
    config.run_name = "counting_flux_kontext"
    config.reward_fn = {"image_similarity": 0.5, "geneval": 0.5}
    # the similarity is to the input image: the line's own "image" field, relative to the dataset folder
    config.reward_options = {"image_similarity": {"reference_field": "image", "reference_root": config.dataset}}
    return config


def shapes_edit_kontext():
    """The published Kontext settings on the shapes world's edits (dataset/shapes_edit, 32 px scenes resized to
    512): the shapes detector's edit check times preservation (``shapes_edit``) as the reward."""
    config = _kontext(os.path.join(REPO, "dataset", "shapes_edit"))
    config.run_name = "shapes_edit_kontext"
    config.reward_fn = {"shapes_edit": 1.0}
    return config


def get_config(name):
    return config_by_name(name, globals())
