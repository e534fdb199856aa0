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
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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
