"""Heads: from a backbone's feature map (B, D, h, w) to label logits (B, L) and per-label heatmaps.

Registered names (``HEADS``); every head is built as ``Head(in_features, num_labels, drop_rate=..., **kw)``:

- ``gap``: global average pool, dropout, linear: the usual fine-tuning head.
- ``wang2017``: Wang et al. (ChestX-ray8, CVPR 2017): a transition layer (convolution to D channels at
  the S x S feature size), global pooling (``avg`` | ``max`` | ``lse`` with sharpness ``r``) and one
  prediction layer. The paper trained only these two layers on a frozen ImageNet backbone; see
  ``create_model(freeze_backbone=True)``.
- ``attention``: the spatial-attention head of the original Keras MobileNet project: a stack of 1x1
  convolutions ending in a sigmoid mask, features x mask, global average pool divided by the mask's
  average, dropout, linear.

``heatmap(feat)`` returns (B, L, h, w) class activation maps (Zhou et al. 2016): the classifier's weights
applied at every position of the map it pools. For ``gap``, ``attention`` and ``wang2017`` with average
pooling the spatial mean of the heatmap equals the logit, so a heatmap is the logit spread over the image.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

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


def build_head(name: str, in_features: int, num_labels: int, *, drop_rate: float = 0.0,
               head_kwargs: dict | None = None) -> Head:
    """Build head ``name``; unknown ``head_kwargs`` are a ConfigError listing the accepted ones."""
    cls = HEADS.get(name)
    kwargs = dict(head_kwargs or {})
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "in_features", "num_labels", "drop_rate")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"head {name!r} has no option {unknown[0]!r}; its options: {', '.join(accepted) or '(none)'}")
    return cls(in_features, num_labels, drop_rate=drop_rate, **kwargs)


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
    """Transition layer, global pooling, prediction layer (Wang et al., CVPR 2017, Fig. 3).

    Args:
        transition_channels: D of the transition layer's S x S x D output; the paper used 1024.
        kernel_size: of the transition convolution (the paper does not state it; 3 with same padding keeps
            S, the backbone's feature size: 32 at 1024 px for the stride-32 backbones).
        pool: ``avg`` | ``max`` | ``lse``. The paper found LSE best.
        r: LSE sharpness; the paper tried {0.1, 0.5, 1, 5, 8, 10, 12} and kept 10.
        drop_rate: dropout before the prediction layer (the paper has none; default 0).
    """

    def __init__(self, in_features: int, num_labels: int, *, transition_channels: int = 1024,
                 kernel_size: int = 3, pool: str = "lse", r: float = 10.0, drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_labels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"wang2017 head: kernel_size must be odd and >= 1 (keeps S), got {kernel_size}")
        self.transition = nn.Conv2d(in_features, transition_channels, kernel_size, padding=kernel_size // 2)
        self.pool = GlobalPool(pool, r)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(transition_channels, num_labels)

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(self.drop(self.pool(self.transition(feat))))

    def heatmap(self, feat: Tensor) -> Tensor:
        # The paper's heatmap: transition activations weighted by the prediction layer's weights.
        return class_activation_map(self.transition(feat), self.fc)


@HEADS.register("attention")
class AttentionHead(Head):
    """Spatial attention: mask = sigmoid(1x1-conv stack); logits = fc(GAP(feat * mask) / GAP(mask)).

    Dividing by the mask's average makes the pooled vector a mask-weighted *mean* of the features, so the
    mask chooses where to look without also scaling the evidence (a small mask would otherwise shrink
    every logit towards the bias).

    Args:
        hidden: channels of the 1x1 convolutions before the 1-channel mask (ReLU after each).
        drop_rate: dropout before the classifier.
    """

    eps = 1e-6  # keeps the division finite if the mask saturates to 0 everywhere

    def __init__(self, in_features: int, num_labels: int, *, hidden: Sequence[int] = (64, 16, 8),
                 drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_labels)
        layers: list[nn.Module] = []
        chans = [in_features, *hidden]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(chans[-1], 1, 1), nn.Sigmoid()]
        self.attention = nn.Sequential(*layers)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_labels)

    def mask(self, feat: Tensor) -> Tensor:
        """The attention mask (B, 1, h, w) in (0, 1)."""
        return self.attention(feat)

    def _weighted(self, feat: Tensor) -> Tensor:
        # feat * mask / mean(mask): its spatial mean is the pooled vector the classifier sees.
        m = self.mask(feat)
        return feat * m / (m.mean(dim=(2, 3), keepdim=True) + self.eps)

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(self.drop(self._weighted(feat).mean(dim=(2, 3))))

    def heatmap(self, feat: Tensor) -> Tensor:
        return class_activation_map(self._weighted(feat), self.fc)
