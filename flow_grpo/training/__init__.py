"""The training parts the trainers delegate to (docs/architecture.md): rollout collection for every family,
advantages and sample selection, the derived sizes, the one update loop, evaluation, phase-timing hooks."""
