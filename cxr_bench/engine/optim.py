"""Optimizers and learning-rate schedules, built from :class:`cxr_bench.config.OptimConfig`.

Registries :data:`OPTIMIZERS` (``sgd``, ``adamw``) and :data:`SCHEDULERS` (``cosine``, ``plateau``,
``none``). Every schedule is wrapped in :class:`LRSchedule`, which gives the trainer one interface
(``step_batch()`` after each optimizer step, ``step_epoch(val_metric)`` after each epoch, state dict) so
the loop does not branch on the schedule kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_schedule", "LRSchedule", "param_groups"]

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULERS: Registry[Callable[..., LRSchedule]] = Registry("scheduler")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weight decay on weights (ndim > 1) only.

    Decaying biases and normalisation scales pulls them towards zero for no regularisation benefit
    (the timm / "bag of tricks" convention). Frozen parameters are left out, so a frozen backbone costs
    no optimizer state.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    if not decay and not no_decay:
        raise ConfigError("the model has no trainable parameters (is freeze_backbone set on a head-less model?)")
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    nesterov = cfg.nesterov
    if nesterov and cfg.momentum <= 0:
        raise ConfigError(f"optim.nesterov needs optim.momentum > 0, got {cfg.momentum}")
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the model's trainable parameters (see :func:`param_groups`)."""
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.lr}")
    return OPTIMIZERS.get(cfg.optimizer)(param_groups(model, cfg.weight_decay), cfg)


class LRSchedule:
    """One interface over per-step (cosine), per-epoch (plateau) and constant schedules."""

    def __init__(self, optimizer: torch.optim.Optimizer,
                 per_step: torch.optim.lr_scheduler.LRScheduler | None = None,
                 plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None) -> None:
        self.optimizer = optimizer
        self.per_step = per_step
        self.plateau = plateau

    def step_batch(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def step_epoch(self, val_metric: float | None) -> None:
        # A NaN metric (no label with positives in val) must not count as "no improvement" forever.
        if self.plateau is not None and val_metric is not None and math.isfinite(val_metric):
            self.plateau.step(val_metric)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_step": self.per_step.state_dict() if self.per_step is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.per_step is not None and state.get("per_step") is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


def cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer step ``step``: linear warmup to 1, then half a cosine to ``min_ratio``.

    Warmup uses ``(step + 1) / warmup_steps`` so the very first update is not taken at lr 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULERS.register("cosine")
def _cosine(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int) -> LRSchedule:
    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total)
    min_ratio = cfg.min_lr_ratio

    # LambdaLR's state dict keeps the step count, not the function, so a closure checkpoints fine.
    def factor(step: int) -> float:
        return cosine_factor(step, total, warmup, min_ratio)

    return LRSchedule(optimizer, per_step=torch.optim.lr_scheduler.LambdaLR(optimizer, factor))


@SCHEDULERS.register("plateau")
def _plateau(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int) -> LRSchedule:
    if cfg.warmup_epochs:
        raise ConfigError("optim.warmup_epochs is only supported with optim.scheduler = 'cosine'")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
    )
    return LRSchedule(optimizer, plateau=sched)


@SCHEDULERS.register("none")
def _none(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int) -> LRSchedule:
    if cfg.warmup_epochs:
        raise ConfigError("optim.warmup_epochs is only supported with optim.scheduler = 'cosine'")
    return LRSchedule(optimizer)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int) -> LRSchedule:
    """``cfg.scheduler`` for a run of ``cfg.epochs`` epochs of ``steps_per_epoch`` optimizer steps."""
    return SCHEDULERS.get(cfg.scheduler)(optimizer, cfg, steps_per_epoch)
