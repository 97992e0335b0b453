"""MixGRPO (Li et al., arXiv 2507.21802; code Tencent-Hunyuan/MixGRPO): Flow-GRPO's clipped surrogate on a
window of SDE steps that slides from high to low noise over training, the ODE everywhere else, and a
higher-order ODE solver after the window (MixGRPO-Flash). The paper's text was not at hand; the algorithm below
is the authors' code's.

The rollout (the sampler's config, ``flow_grpo.sampling_loop``; the named configs set it):

    window at iteration n:  [s_n, s_n + w),  s_n = lo + stride * (floor(n / shift_every) mod P)
                            P = floor((hi - lo - w) / stride) + 1 positions that hold a whole window
    steps in the window:    Flow-GRPO's SDE step (noise a), stored with their log-probs
    steps before it:        Euler;  after it: Euler, or DPM-Solver++(2M) (``sample.ode_solver = "dpm2"``)

keys ``sample.sde_window_schedule = "progressive"``, ``sde_window_size`` (w = 4), ``sde_window_range``,
``sde_window_shift_every`` (25 iterations; 20 for Flash), ``sde_window_stride`` (1; 0 freezes the window at
``lo``, MixGRPO-Flash*). The authors' window shrinks at the range's end before rolling back; here it rolls back
as soon as a whole window no longer fits, so every epoch trains the same number of steps.

The loss, per trained step ``t`` of the window (all of them: ``train.timestep_fraction = 1``), for advantages
``A`` clipped to +-``adv_clip_max``:

    ratio = exp(log p_theta(x_{t+1} | x_t) - log p_old(x_{t+1} | x_t))
    loss  = mean over samples and window steps of max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps))

which is :class:`~flow_grpo.objectives.grpo.GRPO`'s (the authors' KL coefficient is 0; ``train.beta`` adds
GRPO's KL if set). The class adds no term: it names the algorithm a run trains, and its loss is tested as
GRPO's is.
"""

from __future__ import annotations

from flow_grpo.objectives.grpo import GRPO
from flow_grpo.objectives.base import register_objective


@register_objective
class MixGRPO(GRPO):
    """GRPO's clipped surrogate on MixGRPO's sliding-window rollouts (``config.sample``, module docstring)."""

    name = "mixgrpo"
    summary = "MixGRPO: the clipped surrogate on an SDE window that slides from high to low noise over training"
