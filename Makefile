# Each target does all the set-up on a fresh machine; the README's two commands are the first and the last:
#   make demo      - the main job (CPU, ~8-14 min): DiffusionNFT on the shapes world, 112 epochs, before/after under logs/
#   make toy-demo  - Flow-GRPO on the toy worlds (~2 min)
#   make test      - the test suite (CPU; its budget: 12 minutes of pytest on a 2-core machine, docs/testing.md)
#   make test-fast - the unit tests without training runs or subprocesses (about 2 minutes), for the edit-test loop
#   make coverage  - the suite under coverage.py (subprocesses included): a per-file table, logs/coverage.json
#   make mutations - the mutation spot check (scripts/check_mutations.py): ten one-line bugs, each must be caught
# Each creates .venv (override with VENV=...), installs torch 2.13.0 (CPU wheel) when the venv has no torch,
# then this package with the versions pinned in constraints.txt.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flow_grpo-installed

.PHONY: demo toy-demo test test-fast coverage mutations install clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/shapes_demo.py

toy-demo: $(STAMP)
	$(PY) scripts/toy_demo.py

test: $(STAMP)
	$(PY) -m pytest -q --durations=25 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=10 tests

COVERAGE := COVERAGE_ROOT=$(CURDIR) COVERAGE_RCFILE=$(CURDIR)/.coveragerc $(VENV)/bin/coverage
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	$(COVERAGE) run -m pytest -q tests
	$(COVERAGE) combine -q 2>/dev/null || true
	mkdir -p logs
	$(COVERAGE) report
	$(COVERAGE) json -q -o logs/coverage.json

mutations: $(STAMP)
	$(PY) scripts/check_mutations.py

clean:
	rm -rf $(VENV) logs .pytest_cache .coverage .coverage.*
