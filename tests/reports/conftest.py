from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def run_store(tmp_path_factory):
    """(root, ids): the run store of tests/results/runstore_factory.py (two suites, one failed run)."""
    path = Path(__file__).parents[1] / "results" / "conftest.py"
    spec = importlib.util.spec_from_file_location("cxr_bench_test_results_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = tmp_path_factory.mktemp("runstore") / "runs"
    return root, mod.load_factory().make_run_store(root)
