"""CUDA tests: marked ``cuda`` and skipped where no GPU is usable (CI, laptops).

``benchmarks/gpu_check.sh`` runs them on a GPU machine (``pytest -m cuda tests/cuda``). The marker is
registered here as well as in pyproject.toml so ``--strict-markers`` accepts it either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from small_run import SMALL_RUN  # tests/helpers is on pytest's pythonpath

from cxr_bench.config import RunConfig, deep_merge

CUDA = torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")


@pytest.fixture(autouse=True)
def _fp32_reference_precision():
    """Plain fp32 references: TF32 matmuls and convolutions off (cuDNN's default is on), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# The engine tests' small run (tests/helpers/small_run.py), on the GPU at 64 px with a larger batch.
BASE: dict[str, Any] = deep_merge(SMALL_RUN, {"data": {"image_size": 64}, "optim": {"epochs": 3, "batch_size": 16},
                                              "eval": {"bootstrap": 20}, "device": "cuda"})


@pytest.fixture
def cuda_config() -> Callable[..., RunConfig]:
    def make(root: Path, **sections: Any) -> RunConfig:
        return RunConfig.from_dict(deep_merge(deep_merge(BASE, sections), {"data": {"root": str(root)}}))

    return make
