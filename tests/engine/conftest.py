"""Engine test fixtures: a run config factory over phantom releases, and a larger phantom for learning tests.

Runs here are ``tests/helpers/small_run.py``'s small run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from small_run import SMALL_RUN  # tests/helpers is on pytest's pythonpath

from cxr_bench.config import RunConfig, deep_merge
from cxr_bench.data.phantoms import make_phantom_release


@pytest.fixture
def run_config() -> Callable[..., RunConfig]:
    """``run_config(root, **sections)`` -> a small CPU RunConfig on the release at ``root``."""

    def make(root: Path, **sections: Any) -> RunConfig:
        d = deep_merge(SMALL_RUN, sections)
        d = deep_merge(d, {"data": {"root": str(root)}})
        return RunConfig.from_dict(d)

    return make


@pytest.fixture(scope="session")
def learning_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 images (150 patients) at 64 px: enough positives per label for a meaningful val/test AUC."""
    return make_phantom_release(tmp_path_factory.mktemp("learning") / "nih", n_patients=150,
                                images_per_patient=2, size=64, seed=0)
