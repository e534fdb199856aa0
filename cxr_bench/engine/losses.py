"""Multi-label losses, computed from logits (never from probabilities) for numerical stability.

Registry :data:`LOSSES` maps a name to a factory ``factory(train_labels, **kwargs) -> nn.Module``; the
module is called as ``loss(logits (B, L), targets (B, L) in {0, 1}) -> scalar``. ``train_labels`` is the
training split's (N, L) label matrix, which dataset-level losses (``bce_pos_weight``) need.

All losses here are **means over the B x L elements** of a batch, so the gradient scale does not depend
on the batch size or the number of labels and learning rates carry over between losses and label sets.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

log = logging.getLogger(__name__)

LossFactory = Callable[..., nn.Module]
LOSSES: Registry[LossFactory] = Registry("loss")

__all__ = ["LOSSES", "build_loss", "BCELoss", "WeightedCELoss", "PosWeightBCELoss", "positive_weights"]


class BCELoss(nn.Module):
    """Unweighted binary cross-entropy, mean over all elements."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


class WeightedCELoss(nn.Module):
    r"""Wang et al. (CVPR 2017) weighted cross-entropy, "W-CEL".

    .. math::
        L = \beta_P \sum_{y=1} -\ln f(x) + \beta_N \sum_{y=0} -\ln(1 - f(x)),\quad
        \beta_P = \frac{|P| + |N|}{|P|},\ \beta_N = \frac{|P| + |N|}{|N|}

    with ``|P|`` and ``|N|`` the numbers of ones and zeros in the **current batch's whole label matrix**
    (not per label), as in the paper. Choices the paper leaves open, made here:

    - Normalisation: the weighted sum is divided by the number of elements ``B * L`` (a mean), so the
      loss is comparable across batch sizes; the paper's sum is ``B * L`` times this value.
      Since ``beta_P |P| + beta_N |N| = 2 (|P| + |N|)``, the average weight per element is exactly 2.
    - A batch with no positives (``|P| = 0``) has no positive terms, so ``beta_P`` multiplies nothing;
      ``beta_N`` is then 1 and the loss is plain BCE. Symmetrically for ``|N| = 0``. This is done by
      counting with ``max(count, 1)``, which changes no term that exists.
    - ``ln f(x)`` and ``ln(1 - f(x))`` are ``logsigmoid(z)`` and ``logsigmoid(-z)``: finite for any
      finite logit, where ``log(sigmoid(z))`` underflows to ``-inf`` near ``|z| > 100`` in float32.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        y = targets.to(z.dtype)
        n_total = y.numel()
        n_pos = y.sum()
        n_neg = n_total - n_pos
        beta_p = n_total / n_pos.clamp(min=1.0)
        beta_n = n_total / n_neg.clamp(min=1.0)
        pos_term = -(y * F.logsigmoid(z)).sum()
        neg_term = -((1.0 - y) * F.logsigmoid(-z)).sum()
        return (beta_p * pos_term + beta_n * neg_term) / n_total


def positive_weights(train_labels: np.ndarray) -> np.ndarray:
    """Per-label ``N_neg / N_pos`` over the training labels; 1.0 (unweighted) where a label has no positives."""
    y = np.asarray(train_labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ConfigError(f"bce_pos_weight needs a non-empty (N, L) training label matrix, got shape {y.shape}")
    n_pos = y.sum(axis=0)
    n_neg = y.shape[0] - n_pos
    w = np.ones(y.shape[1], dtype=np.float64)
    has_pos = n_pos > 0
    w[has_pos] = n_neg[has_pos] / n_pos[has_pos]
    if not has_pos.all():
        log.warning("bce_pos_weight: label columns %s have no positive training image; weight 1.0 used",
                    np.flatnonzero(~has_pos).tolist())
    return w.astype(np.float32)


class PosWeightBCELoss(nn.Module):
    """BCE with a fixed per-label positive weight (dataset-level class balancing)."""

    def __init__(self, pos_weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight.float())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), pos_weight=typing.cast(torch.Tensor, self.pos_weight).to(logits.dtype)
        )


@LOSSES.register("bce")
def _bce(train_labels: np.ndarray | None = None) -> nn.Module:
    return BCELoss()


@LOSSES.register("wcel")
def _wcel(train_labels: np.ndarray | None = None) -> nn.Module:
    return WeightedCELoss()


@LOSSES.register("bce_pos_weight")
def _bce_pos_weight(train_labels: np.ndarray | None = None, max_weight: float | None = None) -> nn.Module:
    if train_labels is None:
        raise ConfigError("loss 'bce_pos_weight' needs the training labels to compute its weights")
    w = positive_weights(train_labels)
    if max_weight is not None:
        w = np.minimum(w, float(max_weight))
    return PosWeightBCELoss(torch.from_numpy(w))


def build_loss(loss_cfg: Any, train_labels: np.ndarray | None = None) -> nn.Module:
    """The loss named by ``loss_cfg.name`` with ``loss_cfg.kwargs`` (a :class:`cxr_bench.config.LossConfig`)."""
    factory = LOSSES.get(loss_cfg.name)
    kwargs = dict(loss_cfg.kwargs or {})
    try:
        inspect.signature(factory).bind(train_labels, **kwargs)
    except TypeError as e:
        raise ConfigError(f"loss {loss_cfg.name!r}: bad loss.kwargs {kwargs!r} ({e})") from None
    return factory(train_labels, **kwargs)
