from __future__ import annotations

from types import ModuleType

import pytest
import runstore_factory  # tests/helpers is on pytest's pythonpath


@pytest.fixture(scope="session")
def store_factory() -> ModuleType:
    return runstore_factory


@pytest.fixture(scope="session")
def run_store(tmp_path_factory, store_factory):
    """(root, ids): a run store with two suites, six completed runs and one failed run."""
    root = tmp_path_factory.mktemp("runstore") / "runs"
    return root, store_factory.make_run_store(root)
