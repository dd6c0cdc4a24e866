# `make test` and `make demo` bootstrap their own virtual environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test test-slow test-all demo bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "easeml-ci needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to its CPU wheel: the gpu extra's torch>=2.4 is then already satisfied
	# (an unpinned torch would download a multi-GB CUDA build).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,automl,gpu,dashboard]'
	@touch $(STAMP)

# `make test` leaves out the tests marked slow (the Monte Carlo runs through the CLI, whose rates
# the decision-function tests measure with ten times the runs); `make test-slow` runs just those,
# `make test-all` both. .ci/run runs `make test` and `make test-slow`. Hypothesis runs 100
# examples a property here and 1,000 under CI=true (tests/conftest.py).
PYTEST_FLAGS := -q -n 2 -p no:cacheprovider
# Bytecode (and pytest's rewritten test modules) cached in the git-ignored __pycache__/ folders,
# as the CLI's own subprocesses in the tests already do: with PYTHONDONTWRITEBYTECODE=1 in the
# shell, each xdist worker would compile and rewrite every test module again, every run (~5 s of
# CPU a worker).
PYTEST_ENV := PYTHONDONTWRITEBYTECODE=

test: $(STAMP)
	$(PYTEST_ENV) $(BIN)/python -m pytest $(PYTEST_FLAGS) -m "not slow" tests

test-slow: $(STAMP)
	$(PYTEST_ENV) $(BIN)/python -m pytest $(PYTEST_FLAGS) -m slow tests

test-all: $(STAMP)
	$(PYTEST_ENV) $(BIN)/python -m pytest $(PYTEST_FLAGS) tests

# The same tests with every direct dependency at the lowest version pyproject.toml allows, so the
# floors stay true. Rebuilt from scratch each run with uv; uv is bootstrapped from PyPI into
# .venv-uv when it is not on PATH. LOWEST_PYTHON=python3.10 also tests the lowest Python.
.PHONY: test-lowest
LOWEST        := .venv-lowest
LOWEST_PYTHON ?= $(PYTHON)
UV_BOOT       := .venv-uv
UV            := $(or $(shell command -v uv 2>/dev/null),$(UV_BOOT)/bin/uv)

$(UV_BOOT)/bin/uv:
	$(PYTHON) -m venv $(UV_BOOT)
	$(UV_BOOT)/bin/python -m pip install -q uv

test-lowest: $(UV)
	@$(LOWEST_PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "easeml-ci needs Python >= 3.10"'
	rm -rf $(LOWEST)
	$(UV) venv -q -p $(LOWEST_PYTHON) $(LOWEST)
	$(UV) pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[test,automl,dashboard]'
	$(UV) pip list --python $(LOWEST)/bin/python
	# The gpu extra (torch, xgboost, onnxmltools) is left out here: torch's lowest release is a
	# multi-GB CUDA download; `make test` runs those tests with the CPU wheel of torch.
	# Not the slow tests: they exercise no dependency the others leave out.
	$(PYTEST_ENV) $(LOWEST)/bin/python -m pytest $(PYTEST_FLAGS) -m "not slow" tests \
	  --ignore tests/automl_runner/test_automl_gpu_candidates.py

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/plan_labels.py

clean:
	rm -rf $(VENV) $(LOWEST) $(UV_BOOT) build *.egg-info .demo
