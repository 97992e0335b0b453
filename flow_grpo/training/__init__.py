"""The parts of scripts/train_sd3.py: model set-up, rollouts, advantages, the update, evaluation, checkpoints."""
