from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _factory() -> ModuleType:
    """tests/results/runstore_factory.py, through tests/results/conftest.py's loader (one module object)."""
    path = Path(__file__).parents[1] / "results" / "conftest.py"
    spec = importlib.util.spec_from_file_location("cxr_bench_test_results_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_factory()


@pytest.fixture(scope="session")
def store_factory() -> ModuleType:
    return _factory()


@pytest.fixture(scope="session")
def run_store(tmp_path_factory, store_factory):
    """(root, ids): the run store of tests/results/runstore_factory.py (two suites, one failed run)."""
    root = tmp_path_factory.mktemp("runstore") / "runs"
    return root, store_factory.make_run_store(root)
