"""The bridge from flow_grpo.sde to diffusers' Stable Diffusion 3 classes."""

from flow_grpo.diffusers_patch.sd3_prompt import encode_prompt
from flow_grpo.diffusers_patch.sd3_sampling import (
    SD3Trajectory,
    choose_sde_window,
    decode_latents,
    denoising_step,
    predict_velocity,
    sd3_sample_with_logprob,
    sd3_schedule,
)

__all__ = [
    "SD3Trajectory",
    "choose_sde_window",
    "decode_latents",
    "denoising_step",
    "encode_prompt",
    "predict_velocity",
    "sd3_sample_with_logprob",
    "sd3_schedule",
]
