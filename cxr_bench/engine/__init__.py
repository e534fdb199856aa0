"""Training engine: losses, optimizers and schedules, the resumable training loop, checkpoints,
distributed (torchrun) support and evaluation. The entry point is :func:`train_run`.
"""

from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint
from .losses import LOSSES, build_loss
from .optim import OPTIMIZERS, SCHEDULERS
from .trainer import train_run

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULERS", "build_loss", "load_checkpoint", "save_checkpoint", "train_run"]
