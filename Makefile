# Quickstart: `make demo` and `make test` work on a fresh clone with nothing but Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.cxr-bench-installed

.PHONY: venv demo test test-fast lint smoke bench clean-venv

venv: $(STAMP)

# Re-install whenever the project's declared dependencies change.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cxr-bench run --suite wang2017

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Everything but the end-to-end tests marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check cxr_bench tests benchmarks
	$(BIN)/mypy

# The one-minute install check: the smoke suite end to end into a throw-away store.
smoke: $(STAMP)
	$(BIN)/cxr-bench run --suite smoke --out $${TMPDIR:-/tmp}/cxr-bench-smoke

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean-venv:
	rm -rf $(VENV)
