"""Global pooling of a feature map to one value per channel: average, max and log-sum-exp (LSE).

LSE is the pooling Wang et al. (ChestX-ray8, CVPR 2017) found best for weakly supervised localization:

    x_p = (1 / r) * log[ (1 / S) * sum_ij exp(r * x_ij) ]

over the S spatial positions. r interpolates between average pooling (r -> 0) and max pooling
(r -> infinity); the paper tried r in {0.1, 0.5, 1, 5, 8, 10, 12} and kept r = 10.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError

POOL_KINDS = ("avg", "max", "lse")


def _check_r(r: float) -> None:
    if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
        raise ConfigError(f"LSE pooling needs a finite r > 0, got r={r!r} (use pool='avg' for the r -> 0 limit)")


def lse_pool(x: Tensor, r: float) -> Tensor:
    """LSE pooling of ``x`` (B, C, H, W) -> (B, C), stable for every r > 0.

    Written as ``m + log1p(mean(expm1(r * (x - m)))) / r`` with m the per-channel maximum, which equals
    the paper's formula exactly for any constant m. Why this form and not ``logsumexp(r x) - log S``:
    subtracting the maximum keeps ``exp`` from overflowing at large r (every exponent is <= 0), and
    ``expm1``/``log1p`` keep the small differences that carry the answer when r is small (the naive form
    computes ``log S + r * mean(x) - log S`` and loses ``r * mean(x)`` to rounding when r is 1e-3).
    m is detached: the identity holds for any constant, so its gradient is exactly zero anyway.
    """
    _check_r(r)
    flat = x.flatten(2)
    m = flat.amax(dim=2, keepdim=True).detach()
    # expm1 of a non-positive number lies in (-1, 0]; the maximum contributes 0, so the mean is > -1
    # and log1p stays finite however large r is.
    inner = torch.expm1(r * (flat - m)).mean(dim=2)
    return m.squeeze(2) + torch.log1p(inner) / r


class GlobalPool(nn.Module):
    """``avg`` | ``max`` | ``lse`` (with sharpness ``r``) over the spatial axes: (B, C, H, W) -> (B, C)."""

    def __init__(self, kind: str = "avg", r: float = 10.0) -> None:
        super().__init__()
        if kind not in POOL_KINDS:
            raise ConfigError(f"unknown pooling {kind!r}; known: {', '.join(POOL_KINDS)}")
        if kind == "lse":
            _check_r(r)
        self.kind = kind
        self.r = float(r)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "avg":
            return x.mean(dim=(2, 3))
        if self.kind == "max":
            return x.amax(dim=(2, 3))
        return lse_pool(x, self.r)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", r={self.r}" if self.kind == "lse" else "")
