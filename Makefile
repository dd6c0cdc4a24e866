# `make test` and `make demo` bootstrap their own virtual environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "easeml-ci needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to its CPU wheel: the gpu extra's torch>=2.4 is then already satisfied
	# (an unpinned torch would download a multi-GB CUDA build).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,automl,gpu]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider tests

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/plan_labels.py

clean:
	rm -rf $(VENV) build *.egg-info .demo
