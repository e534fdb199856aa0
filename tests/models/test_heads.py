"""Heads and pooling: shapes, heatmaps that add up to the logits, LSE limits and stability."""

from __future__ import annotations

import math

import pytest
import torch

from cxr_bench.errors import ConfigError
from cxr_bench.models.heads import HEADS, AttentionHead, build_head
from cxr_bench.models.pooling import GlobalPool, lse_pool

torch.set_num_threads(1)


def _feat(b: int = 2, d: int = 8, h: int = 3, w: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- LSE
def test_lse_tends_to_average_as_r_goes_to_zero():
    x = _feat(d=5, h=7, w=7)
    avg = x.mean(dim=(2, 3))
    errors = [(lse_pool(x, r) - avg).abs().max().item() for r in (1.0, 1e-1, 1e-2, 1e-4, 1e-6)]
    assert errors == sorted(errors, reverse=True)
    # The naive logsumexp form loses r * mean(x) to rounding here; the expm1/log1p form does not.
    assert errors[-1] < 1e-5


def test_lse_tends_to_max_as_r_grows_without_overflow():
    x = _feat(d=5, h=7, w=7) * 50  # exp(r * x) overflows float32 for r * x > 88
    mx = x.amax(dim=(2, 3))
    prev = None
    for r in (1.0, 10.0, 100.0, 1e4, 1e8):
        y = lse_pool(x, r)
        assert torch.isfinite(y).all()
        gap = (mx - y).min().item()
        assert gap >= -1e-3  # never above the maximum (up to rounding)
        if prev is not None:
            assert (mx - y).max().item() <= prev + 1e-4
        prev = (mx - y).max().item()
    # Gap to the max is at most log(S) / r (all mass elsewhere); at r = 1e8 that is ~4e-8.
    assert prev < 1e-4


def test_lse_matches_the_papers_formula_and_has_finite_gradients():
    x = _feat(d=3, h=4, w=4).double()
    for r in (0.1, 0.5, 1.0, 5.0, 10.0):
        naive = torch.log(torch.exp(r * x.flatten(2)).mean(dim=2)) / r
        torch.testing.assert_close(lse_pool(x, r), naive)
    big = (_feat(d=3, h=4, w=4) * 100).requires_grad_(True)
    lse_pool(big, 1e3).sum().backward()
    assert torch.isfinite(big.grad).all()
    # At large r the gradient concentrates on the arg-max: it sums to 1 per channel.
    torch.testing.assert_close(big.grad.sum(dim=(2, 3)), torch.ones(2, 3))


def test_lse_lies_between_average_and_max():
    x = _feat(b=4, d=6, h=5, w=5, seed=3)
    for r in (0.3, 3.0, 30.0):
        y = lse_pool(x, r)
        assert (y >= x.mean(dim=(2, 3)) - 1e-5).all() and (y <= x.amax(dim=(2, 3)) + 1e-5).all()


@pytest.mark.parametrize("r", [0.0, -1.0, math.inf, math.nan])
def test_lse_rejects_bad_r(r):
    with pytest.raises(ConfigError, match="r > 0"):
        GlobalPool("lse", r)


def test_unknown_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="avg, max, lse"):
        GlobalPool("median")


# ---------------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("name", HEADS.names())
def test_head_shapes_and_gradients(name):
    head = build_head(name, 8, 5)
    feat = _feat().requires_grad_(True)
    logits = head(feat)
    assert logits.shape == (2, 5)
    assert head.heatmap(feat).shape == (2, 5, 3, 4)
    logits.sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("name,kwargs", [("gap", {}), ("attention", {}), ("wang2017", {"pool": "avg"})])
def test_heatmap_mean_is_the_logit(name, kwargs):
    head = build_head(name, 8, 5, head_kwargs=kwargs).eval()
    feat = _feat()
    torch.testing.assert_close(head.heatmap(feat).mean(dim=(2, 3)), head(feat), rtol=1e-4, atol=1e-5)


def test_wang2017_options():
    head = build_head("wang2017", 8, 5, head_kwargs={"transition_channels": 16, "pool": "max", "kernel_size": 1})
    assert head.transition.out_channels == 16 and head.transition.kernel_size == (1, 1)
    assert head.pool.kind == "max" and head.fc.in_features == 16
    assert build_head("wang2017", 8, 5).transition.out_channels == 1024  # the paper's D
    feat = _feat()
    # Max pooling: the logit is the prediction layer applied to the per-channel maximum of the transition.
    expected = head.fc(head.transition(feat).amax(dim=(2, 3)))
    torch.testing.assert_close(head(feat), expected)
    with pytest.raises(ConfigError, match="odd"):
        build_head("wang2017", 8, 5, head_kwargs={"kernel_size": 2})


def test_attention_head_pools_with_the_normalised_mask():
    head = build_head("attention", 8, 3, head_kwargs={"hidden": (4, 2)}).eval()
    assert isinstance(head, AttentionHead)
    assert [m.out_channels for m in head.attention if isinstance(m, torch.nn.Conv2d)] == [4, 2, 1]
    feat = _feat()
    mask = head.mask(feat)
    assert mask.shape == (2, 1, 3, 4) and ((mask > 0) & (mask < 1)).all()
    pooled = (feat * mask).mean(dim=(2, 3)) / (mask.mean(dim=(2, 3)) + head.eps)
    torch.testing.assert_close(head(feat), head.fc(pooled))


def test_unknown_head_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="known: .*attention"):
        build_head("nope", 8, 2)
    with pytest.raises(ConfigError, match="'rr'.*options: transition_channels, kernel_size, pool, r"):
        build_head("wang2017", 8, 2, head_kwargs={"pool": "lse", "rr": 3})
