"""Heads: from a backbone's feature map (B, D, h, w) to label logits (B, L) and per-label heatmaps.

Registered names (``HEADS``); every head is built as ``Head(in_features, num_labels, drop_rate=..., **kw)``:

- ``gap``: global average pool, dropout, linear: the usual fine-tuning head.
- ``wang2017``: Wang et al. (ChestX-ray8, CVPR 2017): a transition layer (convolution to D channels at
  the S x S feature size), global pooling (``avg`` | ``max`` | ``lse`` with sharpness ``r``) and one
  prediction layer. D defaults to the backbone's own feature channels, which gives the two values the
  paper states (GoogLeNet 1024, ResNet-50 2048); see ``replication/wang2017_protocol.md``.
- ``attention``: the spatial-attention head of the original Keras MobileNet project
  (``_create_attention_model``), layer for layer; see :class:`AttentionHead`.
- ``simple``: the same project's ``create_simple_model`` head (GAP, dropout, 512-unit linear layer,
  dropout, classifier): the head of its published per-label AUCs (suite ``paloukari2018``).

``heatmap(feat)`` returns (B, L, h, w) maps whose spatial mean is exactly the logit (for ``wang2017`` with
average pooling; LSE and max pool differently), so a heatmap is the logit spread over the image. For the
linear heads it is the class activation map (Zhou et al. 2016); for ``attention``, whose classifier is not
linear, it is the classifier's first-order expansion at every position (see :meth:`AttentionHead.heatmap`).
Heatmaps never apply dropout; they describe the model as evaluated (localization calls them in eval mode).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry
from .pooling import GlobalPool

HEADS: Registry[type[Head]] = Registry("head")


def class_activation_map(feat: Tensor, classifier: nn.Linear) -> Tensor:
    """Apply a linear classifier at every position: (B, D, h, w) -> (B, L, h, w), bias included."""
    return F.conv2d(feat, classifier.weight[:, :, None, None], classifier.bias)


class Head(nn.Module):
    """Base class: ``forward(feat) -> logits (B, L)``, ``heatmap(feat) -> (B, L, h, w)``."""

    def __init__(self, in_features: int, num_labels: int) -> None:
        super().__init__()
        if in_features < 1 or num_labels < 1:
            raise ConfigError(f"{type(self).__name__}: in_features and num_labels must be >= 1, "
                              f"got {in_features}, {num_labels}")
        self.in_features = in_features
        self.num_labels = num_labels

    def heatmap(self, feat: Tensor) -> Tensor:  # pragma: no cover - every head overrides it
        raise NotImplementedError

    @classmethod
    def resolve_options(cls, in_features: int, options: dict) -> dict:
        """The options as built on ``in_features`` channels: a head whose default depends on the
        backbone (``wang2017``'s D) fills it in here, so a listing can show the value a run will use."""
        return options


def head_options(name: str, in_features: int, head_kwargs: dict | None = None) -> dict:
    """Every option of head ``name`` with the value it takes on ``in_features`` channels: its defaults,
    overridden by ``head_kwargs``, backbone-dependent defaults resolved. ``drop_rate`` is left out (it is
    ``model.drop_rate``, not a head option)."""
    cls = HEADS.get(name)
    params = inspect.signature(cls.__init__).parameters
    options = {k: p.default for k, p in params.items()
               if k not in ("self", "in_features", "num_labels", "drop_rate")}
    unknown = sorted(set(head_kwargs or {}) - set(options))
    if unknown:
        raise ConfigError(f"head {name!r} has no option {unknown[0]!r}; "
                          f"its options: {', '.join(options) or '(none)'}")
    return cls.resolve_options(in_features, {**options, **(head_kwargs or {})})


def build_head(name: str, in_features: int, num_labels: int, *, drop_rate: float = 0.0,
               head_kwargs: dict | None = None) -> Head:
    """Build head ``name``; unknown ``head_kwargs`` are a ConfigError listing the accepted ones."""
    cls: Any = HEADS.get(name)  # every registered head takes drop_rate; the base class does not
    kwargs = dict(head_kwargs or {})
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "in_features", "num_labels", "drop_rate")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"head {name!r} has no option {unknown[0]!r}; "
                          f"its options: {', '.join(accepted) or '(none)'}")
    return cls(in_features, num_labels, drop_rate=drop_rate, **kwargs)


def _keras_init(*modules: nn.Conv2d | nn.Linear) -> None:
    """Keras's defaults for Conv2D and Dense: Glorot-uniform weights, zero biases.

    ``xavier_uniform_`` computes fan-in/out as Keras does for convolutions too (channels x kernel area).
    """
    for m in modules:
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _fixed_dropout(head: str, drop_rate: float, dropout: float) -> float:
    # The Keras heads carry their own two Dropout(0.5) layers; the generic model.drop_rate (one dropout
    # before the classifier) has no place in them, and silently adding or replacing one would stop the
    # head from being the original's.
    if drop_rate:
        raise ConfigError(f"head {head!r} has the original project's own dropout layers; set "
                          f"model.head_kwargs.dropout (default {dropout}) instead of "
                          f"model.drop_rate={drop_rate}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"head {head!r}: dropout must be in [0, 1), got {dropout!r}")
    return dropout


@HEADS.register("gap")
class GapHead(Head):
    """Global average pool, dropout, linear."""

    def __init__(self, in_features: int, num_labels: int, *, drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_labels)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_labels)

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(self.drop(feat.mean(dim=(2, 3))))

    def heatmap(self, feat: Tensor) -> Tensor:
        return class_activation_map(feat, self.fc)


@HEADS.register("wang2017")
class Wang2017Head(Head):
    """Transition layer, global pooling, prediction layer (Wang et al., CVPR 2017, Fig. 4 of arXiv v5).

    Args:
        transition_channels: D of the transition layer's S x S x D output. None (default): D equals the
            backbone's feature channels. The paper states D = 1024 for GoogLeNet and D = 2048 for ResNet,
            exactly those backbones' channels; for AlexNet (256), VGG-16 (512) and MobileNetV1 (1024) the
            paper is silent and the same rule is our documented choice.
        kernel_size: of the transition convolution (not stated; 3 with same padding keeps S, the
            backbone's feature size: 32 at 1024 px for the stride-32 backbones).
        pool: ``avg`` | ``max`` | ``lse``. The paper found LSE best.
        r: LSE sharpness; the paper tried {0.1, 0.5, 1, 5, 8, 10, 12} and kept 10.
        drop_rate: dropout before the prediction layer (the paper has none; default 0).
    """

    def __init__(self, in_features: int, num_labels: int, *, transition_channels: int | None = None,
                 kernel_size: int = 3, pool: str = "lse", r: float = 10.0, drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_labels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"wang2017 head: kernel_size must be odd and >= 1 (keeps S), got {kernel_size}")
        d = in_features if transition_channels is None else transition_channels
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(f"wang2017 head: transition_channels must be a positive integer, got {d!r}")
        self.transition = nn.Conv2d(in_features, d, kernel_size, padding=kernel_size // 2)
        self.pool = GlobalPool(pool, r)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(d, num_labels)

    @classmethod
    def resolve_options(cls, in_features: int, options: dict) -> dict:
        if options.get("transition_channels") is None:
            options = {**options, "transition_channels": in_features}
        return options

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(self.drop(self.pool(self.transition(feat))))

    def heatmap(self, feat: Tensor) -> Tensor:
        # The paper's heatmap: transition activations weighted by the prediction layer's weights.
        return class_activation_map(self.transition(feat), self.fc)


class KerasSameAvgPool2x2(nn.Module):
    """Keras ``AvgPool2D((2, 2), strides=(1, 1), padding='same')`` on (B, C, H, W), TensorFlow semantics.

    'same' keeps H x W by padding one row and one column, both after the data (TensorFlow puts the odd
    pad at the bottom/right), and the average counts only real cells: the last row and column average
    2 cells, the corner 1. ``F.avg_pool2d`` pads symmetrically, hence the explicit pad and count.
    """

    def forward(self, x: Tensor) -> Tensor:
        pad = (0, 1, 0, 1)
        total = F.avg_pool2d(F.pad(x, pad), 2, stride=1)
        count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), 2, stride=1)
        return total / count


class FanOut(nn.Module):
    """Keras's fixed 1x1 convolution of ones (``use_bias=False``, ``trainable=False``): (B, 1, h, w) ->
    (B, C, h, w), the mask copied to every channel. A buffer, not a parameter, so no optimizer, weight
    decay or ``requires_grad_(True)`` can ever train it; not saved either (it is all ones by definition)."""

    weight: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(channels, 1, 1, 1), persistent=False)

    def forward(self, mask: Tensor) -> Tensor:
        return F.conv2d(mask, self.weight)

    def extra_repr(self) -> str:
        return f"1 -> {self.weight.shape[0]}, fixed ones"


@HEADS.register("attention")
class AttentionHead(Head):
    """The attention head of the original MobileNet project, layer for layer.

    Source: github.com/paloukari/NIH-Chest-X-rays-Classification, ``src/train.py``,
    ``_create_attention_model`` (identical at commits 7007dc4c6f14dffc67007a8ede52bcc5268ff84c and
    14eda69e53ed9d4abf4ad0ce9817013593f7bfc8). Keras layer (TensorFlow backend) -> module here:

    - ``BatchNormalization()`` on the backbone features -> ``bn`` (eps 1e-3, momentum 0.01: Keras's
      epsilon 1e-3 and momentum 0.99 in PyTorch's convention);
    - ``Conv2D(128 / 32 / 16, (1, 1), padding='same', activation='elu')`` -> ``attention`` (no dropout
      inside the attention branch in the Keras code);
    - ``AvgPool2D((2, 2), strides=(1, 1), padding='same')`` -> :class:`KerasSameAvgPool2x2`;
    - ``Conv2D(1, (1, 1), padding='valid', activation='sigmoid')`` -> the last convolution and a sigmoid
      (the four convolutions, their activations and the pool are ``attention``, in Keras's order);
    - ``Conv2D(D, (1, 1), use_bias=False)`` with weights of ones and ``trainable = False`` -> ``fan_out``;
    - ``multiply([mask, bn_features])``, ``GlobalAveragePooling2D`` of it and of the mask, ``x[0] / x[1]``
      (``RescaleGAP``) -> :meth:`pooled`;
    - ``Dropout(0.5)``, ``Dense(128, activation='elu')``, ``Dropout(0.5)`` -> ``drop1``, ``dense`` and
      ``elu``, ``drop2``;
    - ``Dense(L, activation='sigmoid')`` -> ``fc`` (logits: the sigmoid is the loss's).

    Differences, none of which changes the function: logits instead of sigmoid outputs (the loss applies
    it); the division ``GAP(f*m)/GAP(m)`` is guarded against a mask that underflows to exactly 0 (only
    there does it differ from Keras, which would return NaN); weights start from Keras's Glorot-uniform /
    zero-bias defaults. The dropout rate is the head option ``dropout`` (0.5, both layers, as in Keras).
    The generic ``model.drop_rate`` is rejected (see :func:`_fixed_dropout`).

    Trainable parameters for D feature channels and L labels (the Keras summary's "trainable" count):
    ``2D`` (BN gamma, beta) ``+ 128(D+1) + 32(128+1) + 16(32+1) + (16+1) + 128(D+1) + L(128+1)``;
    BN's moving mean/variance and the fan-out's D ones are not trainable.
    """

    def __init__(self, in_features: int, num_labels: int, *, dropout: float = 0.5,
                 drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_labels)
        p = _fixed_dropout("attention", drop_rate, dropout)
        self.bn = nn.BatchNorm2d(in_features, eps=1e-3, momentum=0.01)
        convs = [nn.Conv2d(a, b, 1) for a, b in ((in_features, 128), (128, 32), (32, 16), (16, 1))]
        self.attention = nn.Sequential(convs[0], nn.ELU(), convs[1], nn.ELU(), convs[2], nn.ELU(),
                                       KerasSameAvgPool2x2(), convs[3], nn.Sigmoid())
        self.fan_out = FanOut(in_features)
        self.drop1 = nn.Dropout(p)
        self.dense = nn.Linear(in_features, 128)
        self.elu = nn.ELU()
        self.drop2 = nn.Dropout(p)
        self.fc = nn.Linear(128, num_labels)
        _keras_init(*convs, self.dense, self.fc)

    def mask(self, feat: Tensor) -> Tensor:
        """The attention mask (B, 1, h, w) in (0, 1), the map the original project plotted."""
        return self.attention(self.bn(feat))

    def _weighted(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """(features x mask / GAP(mask), pooled vector): the pooled vector is the first's spatial mean."""
        f = self.bn(feat)
        m = self.fan_out(self.attention(f))
        # Keras divides by GAP(mask) as is; a sigmoid mean is > 0 unless every cell underflows to 0, where
        # Keras gives NaN and this gives the features' mask-weighted sum over a tiny number instead.
        gap_mask = m.mean(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
        weighted = f * m / gap_mask
        return weighted, weighted.mean(dim=(2, 3))

    def pooled(self, feat: Tensor) -> Tensor:
        """``GAP(features * mask) / GAP(mask)`` (B, D), Keras's ``RescaleGAP`` output."""
        return self._weighted(feat)[1]

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(self.drop2(self.elu(self.dense(self.drop1(self.pooled(feat))))))

    def heatmap(self, feat: Tensor) -> Tensor:
        """The classifier's first-order expansion around the pooled vector g, at every position.

        With x_ij = f_ij m_ij / GAP(m) (whose spatial mean is g) and the classifier c(g) = W2 elu(W1 g + b1)
        + b2, the map is ``c(g) + J(g) (x_ij - g)`` with J = W2 diag(elu'(W1 g + b1)) W1. Its spatial mean
        is exactly the logit c(g) (the x_ij - g average to 0); for a linear classifier it would be exactly
        the class activation map of the linear heads. Positions count by how far their masked evidence
        moves the logit from the image's average, so the mask's off-regions (x_ij ~ 0) and the features
        both shape it.
        """
        x, g = self._weighted(feat)
        z = self.dense(g)
        logit = self.fc(self.elu(z))
        slope = torch.where(z > 0, torch.ones_like(z), torch.exp(z))  # elu'(z), alpha = 1
        delta = F.conv2d(x - g[:, :, None, None], self.dense.weight[:, :, None, None])
        spread = F.conv2d(delta * slope[:, :, None, None], self.fc.weight[:, :, None, None])
        return spread + logit[:, :, None, None]


@HEADS.register("simple")
class SimpleHead(Head):
    """The original MobileNet project's ``create_simple_model`` head, the one behind its published AUCs.

    Source: github.com/paloukari/NIH-Chest-X-rays-Classification, ``src/train.py`` ``create_simple_model``
    and ``MakeMobileNetModel`` in ``tx2/inference.ipynb`` (commit 3287534d85b3aec7ad7800a98a108a79b798360f):
    ``GlobalAveragePooling2D(), Dropout(0.5), Dense(512), Dropout(0.5), Dense(L, activation='sigmoid')``.
    ``Dense(512)`` has no activation, so in eval mode the head is one affine map and its heatmap is the
    class activation map of the composed weights. Logits out; Glorot-uniform / zero-bias init as Keras.
    """

    def __init__(self, in_features: int, num_labels: int, *, hidden: int = 512, dropout: float = 0.5,
                 drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_labels)
        p = _fixed_dropout("simple", drop_rate, dropout)
        self.drop1 = nn.Dropout(p)
        self.dense = nn.Linear(in_features, hidden)
        self.drop2 = nn.Dropout(p)
        self.fc = nn.Linear(hidden, num_labels)
        _keras_init(self.dense, self.fc)

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(self.drop2(self.dense(self.drop1(feat.mean(dim=(2, 3))))))

    def heatmap(self, feat: Tensor) -> Tensor:
        w = self.fc.weight @ self.dense.weight
        b = self.fc.weight @ self.dense.bias + self.fc.bias
        return F.conv2d(feat, w[:, :, None, None], b)
