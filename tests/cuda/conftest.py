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


# The engine tests' small run (timm's 0.37 M-parameter test network at 64 px), on the GPU.
BASE: dict[str, Any] = {
    "data": {"label_set": "chestxray8", "image_size": 64, "val_fraction": 0.25, "workers": 0, "augment": "flip"},
    "model": {"backbone": "timm:test_resnet"},
    "optim": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "scheduler": "cosine"},
    "eval": {"bootstrap": 20, "batch_size": 16},
    "device": "cuda",
    "seed": 0,
}


@pytest.fixture
def cuda_config() -> Callable[..., RunConfig]:
    def make(root: Path, **sections: Any) -> RunConfig:
        return RunConfig.from_dict(deep_merge(deep_merge(BASE, sections), {"data": {"root": str(root)}}))

    return make
