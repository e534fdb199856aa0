from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FACTORY = "cxr_bench_test_runstore_factory"


def load_factory() -> ModuleType:
    """tests/results/runstore_factory.py as a module (the suite runs with --import-mode=importlib, so test
    folders are not on sys.path); tests/reports loads it the same way."""
    if FACTORY not in sys.modules:
        spec = importlib.util.spec_from_file_location(FACTORY, Path(__file__).with_name("runstore_factory.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[FACTORY] = mod
        spec.loader.exec_module(mod)
    return sys.modules[FACTORY]


@pytest.fixture(scope="session")
def store_factory() -> ModuleType:
    return load_factory()


@pytest.fixture(scope="session")
def run_store(tmp_path_factory, store_factory):
    """(root, ids): a run store with two suites, six completed runs and one failed run."""
    root = tmp_path_factory.mktemp("runstore") / "runs"
    return root, store_factory.make_run_store(root)
