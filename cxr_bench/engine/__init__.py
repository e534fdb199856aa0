"""Training engine: losses, optimizers and schedules, the resumable training loop, checkpoints,
distributed (torchrun) support and evaluation. The entry point is :func:`train_run`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> submodule, imported on first use: a torch-free submodule (artifacts.py) is importable without torch.
_LAZY = {"LOSSES": "losses", "build_loss": "losses", "OPTIMIZERS": "optim", "SCHEDULERS": "optim",
         "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "train_run": "trainer"}

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULERS", "build_loss", "load_checkpoint", "save_checkpoint", "train_run"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
