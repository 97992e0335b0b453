"""``python -m flow_grpo.objectives``: every registered objective, its file, its rollouts and its summary."""

from flow_grpo.objectives import OBJECTIVES

for name, cls in OBJECTIVES.items():
    rollouts = "SDE, per-step log-probs" if cls.sde_rollouts else "ODE, clean samples"
    print(f"{name:12s} {cls.__module__.rsplit('.', 1)[1] + '.py':14s} {rollouts:24s} {cls.summary}")
