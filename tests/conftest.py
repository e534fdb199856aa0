"""Shared fixtures for the whole test suite.

- ``_isolated_cache`` (autouse, session): points ``$CXR_BENCH_CACHE`` at a temporary folder, so no test ever
  writes into ``~/.cache/cxr-bench`` (or reads a cache a previous run left there).
- ``cache_root``: a fresh, empty cache root per test (pass it as ``cache_dir=``).
- ``phantom_root``: a small phantom NIH release (20 patients x 2 images, 64 px, the default 6 phantom
  labels, flat ``images/`` layout, no faults), made once per session. Treat it as read-only; a test that
  alters files makes its own with :func:`make_phantom`.
- ``phantom_release``: ``NIHRelease.open(phantom_root)``.
- ``make_phantom``: factory ``make_phantom(**kwargs) -> Path`` writing a phantom release with the given
  :func:`~cxr_bench.data.phantoms.make_phantom_release` arguments into a new temporary folder.
- ``sample_root``: the bundled 1,673-image real sample (read-only).
- ``store_factory``: the module ``tests/helpers/runstore_factory.py`` (run directories with synthetic model
  outputs); ``run_store``: ``(root, ids)``, its store of two suites, six completed runs and one failed run,
  made once per session (read-only).
- ``caches``: empty torch hub and Hugging Face caches, and no weights mirror or offline switch from the
  environment (yields the temporary folder holding them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import runstore_factory  # tests/helpers is on pytest's pythonpath

from cxr_bench.data.phantoms import make_phantom_release

PHANTOM_KWARGS: dict[str, Any] = {"n_patients": 20, "images_per_patient": 2, "size": 64, "seed": 0}


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cxr-bench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXR_BENCH_CACHE", str(root))
        yield root


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_release(tmp_path_factory.mktemp("phantom") / "nih", **PHANTOM_KWARGS)


@pytest.fixture(scope="session")
def phantom_release(phantom_root: Path):
    from cxr_bench.data.release import NIHRelease

    return NIHRelease.open(phantom_root)


@pytest.fixture
def make_phantom(tmp_path: Path) -> Callable[..., Path]:
    counter = itertools.count()

    def make(**kwargs: Any) -> Path:
        return make_phantom_release(tmp_path / f"phantom{next(counter)}", **{**PHANTOM_KWARGS, **kwargs})

    return make


@pytest.fixture(scope="session")
def sample_root() -> Path:
    from cxr_bench.data.bundled import sample_root as bundled_sample_root

    return bundled_sample_root()


@pytest.fixture(scope="session")
def store_factory() -> ModuleType:
    return runstore_factory


@pytest.fixture(scope="session")
def run_store(tmp_path_factory: pytest.TempPathFactory, store_factory: ModuleType) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("runstore") / "runs"
    return root, store_factory.make_run_store(root)


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import torch

    from cxr_bench.models import weights as W

    for var in (W.MIRROR_ENV, W.OFFLINE_ENV, "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    W._published.cache_clear()
    yield tmp_path
    torch.hub.set_dir(old)
    W._published.cache_clear()
