# Quickstart: `make demo` and `make test` work on a fresh clone with nothing but Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.cxr-bench-installed

.PHONY: venv demo test test-fast bench clean-venv

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

bench: $(STAMP)
	$(BIN)/cxr-bench bench --quick

clean-venv:
	rm -rf $(VENV)
