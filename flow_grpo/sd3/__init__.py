"""Stable Diffusion 3 through diffusers' classes: prompt encoding, sampling with log-probs, the training
policy, and loading / preparing a pipeline for training."""

from flow_grpo.sd3.prompt import SD3Conditioning, encode_prompt
from flow_grpo.sd3.sampling import (
    Guidance,
    SD3Trajectory,
    decode_latents,
    initial_latents,
    predict_velocity,
    sd3_sample_with_logprob,
    sd3_schedule,
)

__all__ = [
    "Guidance",
    "SD3Conditioning",
    "SD3Trajectory",
    "decode_latents",
    "encode_prompt",
    "initial_latents",
    "predict_velocity",
    "sd3_sample_with_logprob",
    "sd3_schedule",
]
