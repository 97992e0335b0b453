# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job (CPU): Flow-GRPO on the toy worlds, before/after table and plots under logs/
#   make test   - the test suite (CPU)
# Both create .venv (override with VENV=...), install torch 2.13.0 (CPU wheel) when the venv has no torch,
# then this package with the versions pinned in constraints.txt.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flow_grpo-installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/toy_demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) logs .pytest_cache
