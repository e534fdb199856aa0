"""Losses: Wang et al.'s W-CEL against a hand-worked example, stability, pos-weight BCE, the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxr_bench.config import LossConfig
from cxr_bench.engine.losses import LOSSES, build_loss, positive_weights
from cxr_bench.errors import ConfigError


def softplus(z: float) -> float:
    """-ln(sigmoid(-z)) = ln(1 + e^z), by hand."""
    return math.log1p(math.exp(z))


def test_wcel_hand_example():
    # 2 images x 3 labels: |P| = 2 ones, |N| = 4 zeros over the whole matrix, 6 elements.
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    beta_p = (2 + 4) / 2  # 3.0
    beta_n = (2 + 4) / 4  # 1.5
    # -ln f(x) for the positives (logits 2.0 and -2.0): ln(1 + e^-z)
    pos = softplus(-2.0) + softplus(2.0)  # 0.126928 + 2.126928
    # -ln(1 - f(x)) for the negatives (logits -1.0, 0.5, 0.0, 3.0): ln(1 + e^z)
    neg = softplus(-1.0) + softplus(0.5) + softplus(0.0) + softplus(3.0)  # 0.313262 + 0.974077 + 0.693147 + 3.048587
    expected = (beta_p * pos + beta_n * neg) / 6  # mean over the 6 elements
    assert expected == pytest.approx(2.384196312, abs=1e-9)
    got = build_loss(LossConfig(name="wcel"))(logits, y)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_wcel_batch_without_positives_is_plain_bce():
    logits = torch.tensor([[1.0, -1.0]])
    y = torch.zeros(1, 2)
    # |P| = 0: no positive term; beta_N = 2/2 = 1 -> mean of ln(1 + e^z)
    expected = (softplus(1.0) + softplus(-1.0)) / 2
    assert build_loss(LossConfig(name="wcel"))(logits, y).item() == pytest.approx(expected, rel=1e-6)
    all_pos = build_loss(LossConfig(name="wcel"))(logits, torch.ones(1, 2)).item()
    assert all_pos == pytest.approx((softplus(-1.0) + softplus(1.0)) / 2, rel=1e-6)


def test_wcel_is_finite_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0], [-150.0, 150.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = build_loss(LossConfig(name="wcel"))(logits, y)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 100  # confidently wrong: large, not inf
    assert torch.isfinite(logits.grad).all()


def test_wcel_weights_rare_positives_up():
    # The paper's point: with 1 positive in 20 elements, missing it costs more than one false alarm.
    loss = build_loss(LossConfig(name="wcel"))
    y = torch.zeros(4, 5)
    y[0, 0] = 1.0
    missed_positive = torch.full((4, 5), -2.0)  # every element scored low, the positive too
    false_alarm = torch.full((4, 5), -2.0)
    false_alarm[0, 0] = 2.0  # positive found
    false_alarm[0, 1] = 2.0  # one negative scored high
    assert loss(missed_positive, y).item() > loss(false_alarm, y).item()
    bce = build_loss(LossConfig(name="bce"))  # unweighted: the two mistakes cost the same
    assert bce(missed_positive, y).item() == pytest.approx(bce(false_alarm, y).item(), rel=1e-6)


def test_bce_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g)
    y = (torch.rand(8, 5, generator=g) < 0.3).float()
    got = build_loss(LossConfig(name="bce"))(logits, y)
    assert got.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, y).item(), rel=1e-7)


def test_positive_weights_from_training_labels():
    labels = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float32)
    # label 0: 2 pos, 2 neg -> 1.0; label 1: no positives -> 1.0 (unweighted); label 2: 3 pos, 1 neg -> 1/3
    np.testing.assert_allclose(positive_weights(labels), [1.0, 1.0, 1 / 3], rtol=1e-6)
    loss = build_loss(LossConfig(name="bce_pos_weight"), labels)
    logits = torch.tensor([[0.3, -0.2, 1.0]])
    y = torch.tensor([[0.0, 0.0, 1.0]])
    # element-wise by hand: neg: ln(1+e^0.3), neg: ln(1+e^-0.2), pos with weight 1/3: (1/3) ln(1+e^-1)
    expected = (softplus(0.3) + softplus(-0.2) + softplus(-1.0) / 3) / 3
    assert loss(logits, y).item() == pytest.approx(expected, rel=1e-6)


def test_registry_and_errors():
    assert {"bce", "wcel", "bce_pos_weight"} <= set(LOSSES.names())
    with pytest.raises(ConfigError, match="unknown loss 'focal'"):
        build_loss(LossConfig(name="focal"))
    with pytest.raises(ConfigError, match="bad loss.kwargs"):
        build_loss(LossConfig(name="wcel", kwargs={"gamma": 2}))
    with pytest.raises(ConfigError, match="training labels"):
        build_loss(LossConfig(name="bce_pos_weight"))
