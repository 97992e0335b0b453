from setuptools import find_packages, setup

setup(
    name="flow_grpo",
    version="0.1.0",
    description="Online RL (Flow-GRPO and relatives) for flow-matching text-to-image models",
    packages=find_packages(include=["flow_grpo", "flow_grpo.*"]),
    package_data={"flow_grpo.shapes": ["decoded_exemplars.npz"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "accelerate>=1.0",
        "diffusers>=0.32",
        "transformers>=4.46",
        "peft>=0.13",
        "ml_collections>=0.1.1",
        "numpy>=1.24",
        "pillow>=10.0",
        "requests>=2.31",
        "matplotlib>=3.7",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "scipy>=1.10",  # transformers' Mask2Former (the GenEval detector backend) needs it
        "fastapi>=0.110",  # the reward server (flow_grpo/reward_server/server.py), on uvicorn
        "uvicorn>=0.29",
    ],
    extras_require={
        "dev": ["pytest>=8.0", "coverage>=7.10", "tensorboard>=2.15", "wandb>=0.17", "rapidocr>=3.0", "onnxruntime>=1.18", "datasets>=3.0"],
        "wandb": ["wandb>=0.17"],
        "tensorboard": ["tensorboard>=2.15"],
        "deepspeed": ["deepspeed>=0.15"],
        "ocr": ["rapidocr>=3.0", "onnxruntime>=1.18"],
        "pickapic": ["datasets>=3.0"],  # dataset/make_pickscore_prompts.py --source pickapic
    },
)
