"""Heads and pooling: shapes, heatmaps that add up to the logits, LSE limits and stability."""

from __future__ import annotations

import math

import pytest
import torch

from cxr_bench.errors import ConfigError
from cxr_bench.models.heads import HEADS, AttentionHead, FanOut, KerasSameAvgPool2x2, build_head, head_options
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


@pytest.mark.parametrize("name,kwargs", [("gap", {}), ("attention", {}), ("simple", {}),
                                         ("wang2017", {"pool": "avg"})])
def test_heatmap_mean_is_the_logit(name, kwargs):
    head = build_head(name, 8, 5, head_kwargs=kwargs).eval()
    feat = _feat()
    torch.testing.assert_close(head.heatmap(feat).mean(dim=(2, 3)), head(feat), rtol=1e-4, atol=1e-5)


def test_wang2017_options_and_per_backbone_d():
    options = {"transition_channels": 16, "pool": "max", "kernel_size": 1}
    head = build_head("wang2017", 8, 5, head_kwargs=options)
    assert head.transition.out_channels == 16 and head.transition.kernel_size == (1, 1)
    assert head.pool.kind == "max" and head.fc.in_features == 16
    # Default D: the feature channels it is built on (the paper's 1024 on GoogLeNet, 2048 on ResNet-50).
    assert build_head("wang2017", 8, 5).transition.out_channels == 8
    assert head_options("wang2017", 2048)["transition_channels"] == 2048
    assert head_options("wang2017", 2048, {"transition_channels": 64})["transition_channels"] == 64
    feat = _feat()
    # Max pooling: the logit is the prediction layer applied to the per-channel maximum of the transition.
    expected = head.fc(head.transition(feat).amax(dim=(2, 3)))
    torch.testing.assert_close(head(feat), expected)
    with pytest.raises(ConfigError, match="odd"):
        build_head("wang2017", 8, 5, head_kwargs={"kernel_size": 2})
    with pytest.raises(ConfigError, match="positive integer"):
        build_head("wang2017", 8, 5, head_kwargs={"transition_channels": 0})


# ------------------------------------------------------------------------- the original project's heads
# The Keras model of paloukari/NIH-Chest-X-rays-Classification, src/train.py, _create_attention_model
# (commit 14eda69e53ed9d4abf4ad0ce9817013593f7bfc8), written out layer by layer for D = 1024 MobileNetV1
# feature channels and L = 14 labels: (layer, input channels, output channels).
KERAS_ATTENTION_LAYERS = [
    ("BatchNormalization", 1024, 1024),
    ("Conv2D 1x1 + elu", 1024, 128),
    ("Conv2D 1x1 + elu", 128, 32),
    ("Conv2D 1x1 + elu", 32, 16),
    ("AvgPool2D 2x2 stride 1 same", 16, 16),
    ("Conv2D 1x1 + sigmoid", 16, 1),
    ("Conv2D 1x1 ones, not trainable", 1, 1024),
    ("Dropout 0.5", 1024, 1024),
    ("Dense + elu", 1024, 128),
    ("Dropout 0.5", 128, 128),
    ("Dense", 128, 14),
]


def _describe(head: torch.nn.Module) -> list[tuple[str, int, int]]:
    """The head's leaf modules, in order, in the vocabulary of KERAS_ATTENTION_LAYERS."""
    out: list[tuple[str, int, int]] = []
    chans = head.in_features
    for m in head.modules():
        if list(m.children()):
            continue
        if isinstance(m, torch.nn.BatchNorm2d):
            out.append(("BatchNormalization", m.num_features, m.num_features))
        elif isinstance(m, torch.nn.Conv2d):
            assert m.kernel_size == (1, 1)
            out.append(("Conv2D 1x1", m.in_channels, m.out_channels))
            chans = m.out_channels
        elif isinstance(m, (torch.nn.ELU, torch.nn.Sigmoid)):
            name, i, o = out.pop()
            out.append((f"{name} + {'elu' if isinstance(m, torch.nn.ELU) else 'sigmoid'}", i, o))
        elif isinstance(m, KerasSameAvgPool2x2):
            out.append(("AvgPool2D 2x2 stride 1 same", chans, chans))
        elif isinstance(m, FanOut):
            out.append(("Conv2D 1x1 ones, not trainable", 1, m.weight.shape[0]))
            chans = m.weight.shape[0]
        elif isinstance(m, torch.nn.Dropout):
            out.append((f"Dropout {m.p}", chans, chans))
        elif isinstance(m, torch.nn.Linear):
            out.append(("Dense", m.in_features, m.out_features))
            chans = m.out_features
        else:  # pragma: no cover - a new layer must be named here
            raise AssertionError(f"unexpected layer {m}")
    return out


def test_attention_head_is_the_keras_model_layer_for_layer():
    head = build_head("attention", 1024, 14)
    assert isinstance(head, AttentionHead)
    assert _describe(head) == KERAS_ATTENTION_LAYERS
    assert (head.bn.eps, head.bn.momentum) == (1e-3, 0.01)  # Keras: epsilon=1e-3, momentum=0.99
    # Trainable parameters, counted from the Keras code by hand:
    #   BatchNormalization gamma + beta            2 * 1024          =   2,048
    #   Conv2D 1024 -> 128 (+ bias)                1024 * 128 + 128  = 131,200
    #   Conv2D 128 -> 32                           128 * 32 + 32     =   4,128
    #   Conv2D 32 -> 16                            32 * 16 + 16      =     528
    #   Conv2D 16 -> 1                             16 + 1            =      17
    #   Dense 1024 -> 128                          1024 * 128 + 128  = 131,200
    #   Dense 128 -> 14                            128 * 14 + 14     =   1,806
    #                                                          total = 270,927
    # Not trainable: BN moving mean + variance (2 * 1024) and the fan-out's 1024 ones = 3,072.
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert trainable == 2048 + 131200 + 4128 + 528 + 17 + 131200 + 1806 == 270927
    fixed = sum(b.numel() for n, b in head.named_buffers() if not n.endswith("num_batches_tracked"))
    assert fixed == 2 * 1024 + 1024 == 3072
    head.requires_grad_(True)  # the fan-out is a buffer: nothing can make it trainable
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 270927
    assert "fan_out.weight" not in head.state_dict()
    # Keras's initialisers: Glorot-uniform kernels (|w| <= sqrt(6 / (fan_in + fan_out))), zero biases.
    assert head.dense.weight.abs().max() <= math.sqrt(6 / (1024 + 128)) and not head.dense.bias.any()


def _keras_same_pool_brute_force(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow 'same' for a 2x2 window at stride 1: the window starting at (i, j), cut at the border,
    # averaged over the cells it really covers.
    out = torch.empty_like(x)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            out[:, :, i, j] = x[:, :, i:i + 2, j:j + 2].mean(dim=(2, 3))
    return out


def test_keras_same_average_pool():
    x = _feat(d=3, h=4, w=5)
    torch.testing.assert_close(KerasSameAvgPool2x2()(x), _keras_same_pool_brute_force(x))
    one = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    torch.testing.assert_close(KerasSameAvgPool2x2()(one), torch.tensor([[[[1.5, 2.0], [2.5, 3.0]]]]))


def test_attention_forward_equals_the_keras_graph_written_out():
    head = build_head("attention", 8, 3).eval()
    with torch.no_grad():
        head.bn.running_mean.normal_(generator=torch.Generator().manual_seed(1))
        head.bn.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
        head.bn.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
    feat = _feat(d=8, h=5, w=6)
    p = dict(head.named_parameters())
    def per_channel(v: torch.Tensor) -> torch.Tensor:
        return v[None, :, None, None]

    f = (feat - per_channel(head.bn.running_mean)) / per_channel(torch.sqrt(head.bn.running_var + 1e-3))
    f = f * per_channel(p["bn.weight"]) + per_channel(p["bn.bias"])
    a = f
    for k in (0, 2, 4):  # three 1x1 convolutions with ELU, as einsums over channels
        a = torch.nn.functional.elu(torch.einsum("bchw,oc->bohw", a, p[f"attention.{k}.weight"][:, :, 0, 0])
                                    + p[f"attention.{k}.bias"][None, :, None, None])
    a = _keras_same_pool_brute_force(a)
    mask = torch.sigmoid(torch.einsum("bchw,oc->bohw", a, p["attention.7.weight"][:, :, 0, 0])
                         + p["attention.7.bias"][None, :, None, None])
    fanned = mask.expand(-1, 8, -1, -1)
    gap = (fanned * f).mean(dim=(2, 3)) / fanned.mean(dim=(2, 3))  # Keras's RescaleGAP
    hidden = torch.nn.functional.elu(gap @ p["dense.weight"].T + p["dense.bias"])
    expected = hidden @ p["fc.weight"].T + p["fc.bias"]
    with torch.no_grad():
        torch.testing.assert_close(head(feat), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(head.mask(feat), mask, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(head.pooled(feat), gap, rtol=1e-5, atol=1e-6)


def test_attention_heatmap_is_the_first_order_expansion():
    # Direction by direction, the map's deviation from the logit is the Jacobian-vector product of the
    # classifier at the pooled vector: checked against autograd.
    head = build_head("attention", 8, 3).eval()
    feat = _feat(d=8)
    x, g = head._weighted(feat)
    classifier = lambda v: head.fc(head.elu(head.dense(v)))  # noqa: E731 - eval mode: dropout is identity
    heat = head.heatmap(feat)
    for i, j in ((0, 0), (1, 2), (2, 3)):
        _, jvp = torch.autograd.functional.jvp(classifier, g, x[:, :, i, j] - g)
        torch.testing.assert_close(heat[:, :, i, j], classifier(g) + jvp, rtol=1e-4, atol=1e-5)


def test_simple_head_is_the_keras_create_simple_model():
    head = build_head("simple", 1024, 13)
    layers = [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None),
               getattr(m, "p", None)) for m in head.children()]
    assert layers == [("Dropout", None, None, 0.5), ("Linear", 1024, 512, None), ("Dropout", None, None, 0.5),
                      ("Linear", 512, 13, None)]
    # Keras summary of the MobileNet simple model's head: Dense(512) 1024 * 512 + 512 = 524,800 and
    # Dense(13) 512 * 13 + 13 = 6,669 trainable parameters.
    assert sum(p.numel() for p in head.parameters()) == 524800 + 6669
    feat = _feat(d=1024).abs()
    head.eval()
    with torch.no_grad():
        expected = head.fc(head.dense(feat.mean(dim=(2, 3))))  # Dense(512) has no activation
        torch.testing.assert_close(head(feat), expected)


@pytest.mark.parametrize("name", ["attention", "simple"])
def test_keras_heads_own_their_dropout(name):
    assert all(m.p == 0.25 for m in build_head(name, 8, 2, head_kwargs={"dropout": 0.25}).modules()
               if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ConfigError, match="model.head_kwargs.dropout"):
        build_head(name, 8, 2, drop_rate=0.2)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        build_head(name, 8, 2, head_kwargs={"dropout": 1.0})


def test_attention_mask_is_finite_when_it_saturates():
    head = build_head("attention", 8, 3).eval()
    with torch.no_grad():
        head.attention[7].bias.fill_(-1e4)  # sigmoid underflows to exactly 0 everywhere
        out = head(_feat(d=8))
    assert torch.isfinite(out).all()


def test_unknown_head_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="known: .*attention"):
        build_head("nope", 8, 2)
    with pytest.raises(ConfigError, match="'rr'.*options: transition_channels, kernel_size, pool, r"):
        build_head("wang2017", 8, 2, head_kwargs={"pool": "lse", "rr": 3})
    with pytest.raises(ConfigError, match="'hidden'"):
        head_options("attention", 8, {"hidden": (4, 2)})
