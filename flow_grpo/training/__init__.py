"""The training parts the trainers delegate to (docs/architecture.md): SD3 rollout collection, advantages and
sample selection, the derived sizes, the one update loop, evaluation, phase-timing hooks."""
