# Quickstart: `make demo` and `make test` work on a fresh clone with nothing but Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# What `make demo` needs (the package), and what the tests and linters need on top (the dev extra).
RUN_STAMP = $(VENV)/.cxr-bench-installed
DEV_STAMP = $(VENV)/.cxr-bench-dev-installed

.PHONY: venv demo test test-fast lint smoke bench clean-venv

venv: $(DEV_STAMP)

# Re-install whenever the project's declared dependencies change.
$(RUN_STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/cxr-bench run --suite wang2017

# Two workers: the suite runs in about 6 minutes on the 2-core machine instead of 12.
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n 2

# Everything but the end-to-end tests marked slow.
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

lint: $(DEV_STAMP)
	$(BIN)/ruff check cxr_bench tests benchmarks
	$(BIN)/mypy

# The one-minute install check: the smoke suite end to end into a fresh, throw-away store.
smoke: $(RUN_STAMP)
	out=$$(mktemp -d) && $(BIN)/cxr-bench run --suite smoke --runs "$$out" && rm -rf "$$out"

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean-venv:
	rm -rf $(VENV)
