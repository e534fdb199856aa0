"""One factory for every model: ``create_model(backbone, head=..., channels=..., pretrained=...)``.

A :class:`CxrModel` is input adaptation (normalisation + channel handling) -> backbone -> head. It takes
the same input whatever the backbone, a gray batch (B, 1, H, W) in [0, 1], so data code never knows what it
feeds, and it records how its input was prepared (``input_config``) and which weights it started from
(``pretrained_info``) for the run manifest.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from .adapt import InputAdapter, convert_first_conv_to_gray, input_stats, stem_channels
from .backbones import BACKBONES, TIMM_PREFIX, Backbone, build_backbone
from .heads import HEADS, Head, build_head, head_options
from .weights import load_pretrained

log = logging.getLogger(__name__)


class CxrModel(nn.Module):
    """Input adaptation, backbone, head.

    - ``forward(x) -> logits (B, L)``; ``heatmaps(x) -> (B, L, h, w)``; ``features(x) -> (B, D, h, w)``.
    - ``x``: (B, 1, H, W) float in [0, 1] (uint8 in [0, 255] is accepted and scaled on the device).
    - ``targets``: label names (or None); ``input_config``: in_chans, channels, stem_chans, mean and std
      (one value per stem channel: the backbone's RGB statistics when replicated, their mean for a
      1-channel stem) and the backbone's rgb_mean / rgb_std;
      ``pretrained_info``: None or {"path", "sha256", "source"};
      ``backbone_name``, ``head_name``.

    With a frozen backbone, ``train()`` keeps the backbone in eval mode, so its BatchNorm statistics stay
    those of the pretrained weights, as in a backbone that is truly not trained.
    """

    def __init__(self, backbone: Backbone, head: Head, *, channels: str, head_name: str,
                 targets: Sequence[str] | None = None, pretrained_info: dict[str, str | None] | None = None,
                 freeze_backbone: bool = False) -> None:
        super().__init__()
        mean, std = input_stats(backbone.mean, backbone.std, channels)
        self.adapter = InputAdapter(mean, std, stem_channels(channels))
        self.backbone = backbone
        self.head = head
        self.targets = tuple(targets) if targets is not None else None
        self.backbone_name = backbone.name
        self.head_name = head_name
        self.pretrained_info = pretrained_info
        self.frozen_backbone = freeze_backbone
        self.input_config: dict[str, Any] = {
            "in_chans": 1,
            "channels": channels,
            "stem_chans": stem_channels(channels),
            "mean": mean,
            "std": std,
            "rgb_mean": list(backbone.mean),
            "rgb_std": list(backbone.std),
        }
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @property
    def num_labels(self) -> int:
        return self.head.num_labels

    def features(self, x: Tensor) -> Tensor:
        size = self.backbone.min_input_size
        if x.ndim == 4 and min(x.shape[-2:]) < size:
            raise ValueError(f"{self.backbone_name} needs inputs of at least {size}x{size} px, got {tuple(x.shape)}")
        return self.backbone(self.adapter(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def heatmaps(self, x: Tensor) -> Tensor:
        return self.head.heatmap(self.features(x))

    def train(self, mode: bool = True) -> CxrModel:
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self


def create_model(
    name: str,
    *,
    head: str = "gap",
    num_labels: int = 14,
    in_chans: int = 1,
    channels: str = "replicate",
    pretrained: str | os.PathLike | None = None,
    head_kwargs: dict[str, Any] | None = None,
    freeze_backbone: bool = False,
    drop_rate: float = 0.0,
    targets: Sequence[str] | None = None,
) -> CxrModel:
    """Build backbone ``name`` (a registered name or ``timm:<model>``) with head ``head``.

    Args:
        in_chans: channels of the *model input*; always 1 (a radiograph). How a 3-channel backbone sees it
            is ``channels``'s job, so the two never disagree: ``"replicate"`` gives the backbone a
            3-channel stem, ``"stem"`` a 1-channel one (``input_config["stem_chans"]``).
        channels: ``"replicate"`` | ``"stem"`` (see ``cxr_bench.models.adapt``).
        pretrained: None (random init), a weights file, or ``"cache"`` (the official checkpoint from a
            populated torchvision/timm cache; never downloaded). First-conv adaptation and the new head
            come after loading.
        head_kwargs: options of the head (``{"pool": "lse", "r": 10}`` for ``wang2017``).
        freeze_backbone: train only the head (Wang et al.'s setting). Pointless without pretrained
            weights, which is warned about.
        drop_rate: dropout before the head's classifier.
        targets: label names, in logit order; their number must equal ``num_labels``.
    """
    if in_chans != 1:
        raise ConfigError(
            f"in_chans={in_chans}: cxr-bench models take a 1-channel radiograph; choose how the backbone "
            f"sees it with channels='replicate' (3-channel stem) or channels='stem' (1-channel stem)"
        )
    stem = stem_channels(channels) == 1
    if targets is not None and len(targets) != num_labels:
        raise ConfigError(f"{len(targets)} targets given for num_labels={num_labels}; they must match")
    if isinstance(pretrained, bool):
        raise ConfigError("pretrained must be None, a weights file path or 'cache', not a bool")
    backbone = build_backbone(name)
    info = None
    if pretrained is not None:
        info = load_pretrained(backbone, pretrained, stem=stem)
    elif stem:
        convert_first_conv_to_gray(backbone.net, backbone.first_conv)
    if freeze_backbone and pretrained is None:
        warnings.warn(
            f"freeze_backbone=True with a randomly initialised {name} backbone: only the head will train, "
            f"on random features; pass pretrained='cache' or a weights file",
            UserWarning,
            stacklevel=2,
        )
    head_module = build_head(head, backbone.num_features, num_labels, drop_rate=drop_rate, head_kwargs=head_kwargs)
    log.debug("built %s + %s head, channels=%s, pretrained=%s", name, head, channels, info and info["source"])
    return CxrModel(backbone, head_module, channels=channels, head_name=head, targets=targets,
                    pretrained_info=info, freeze_backbone=freeze_backbone)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered backbone names matching ``pattern`` (fnmatch); ``"timm:<pattern>"`` lists timm models."""
    if pattern and pattern.startswith(TIMM_PREFIX):
        return [TIMM_PREFIX + n for n in timm.list_models(pattern[len(TIMM_PREFIX):])]
    names = BACKBONES.names()
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def list_heads() -> list[str]:
    return HEADS.names()


@functools.cache
def backbone_features(name: str) -> int:
    """D, the feature channels of backbone ``name``, from a shapes-only (meta device) build."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return build_backbone(name).num_features


def resolved_head_kwargs(backbone: str, head: str,
                         head_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options head ``head`` takes on ``backbone``, defaults and per-backbone values filled in.

    ``resolved_head_kwargs("resnet50", "wang2017")["transition_channels"] == 2048``: what a run of that
    config builds, for listings (``cxr-bench run --dry-run``) and manifests. Costs a meta-device build of
    the backbone once per name.
    """
    return head_options(head, backbone_features(backbone), head_kwargs)


# ---------------------------------------------------------------------------------------------- complexity
_COMPLEXITY_CACHE: dict[tuple[str, int, str], dict[str, float]] = {}


def model_complexity(model_or_name: nn.Module | str, img_size: int = 224, **create_kwargs: Any) -> dict[str, Any]:
    """Parameters and multiply-accumulates (GMACs = FLOPs / 2 / 1e9) of one (1, 1, S, S) forward pass.

    A name is built with ``create_model(name, **create_kwargs)`` on PyTorch's meta device (shapes only: no
    memory, no arithmetic, so even VGG-16 costs milliseconds) and the result is cached per
    (name, size, kwargs) for the process. A model instance is measured where it lives.
    """
    if not isinstance(model_or_name, str):
        return _count(model_or_name, img_size)
    key = (model_or_name, int(img_size), json.dumps(create_kwargs, sort_keys=True, default=str))
    if key not in _COMPLEXITY_CACHE:
        kwargs = {k: v for k, v in create_kwargs.items() if k != "pretrained"}  # weights change no count
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # e.g. the frozen-random-backbone warning: irrelevant to a count
            model = create_model(model_or_name, **kwargs)
        _COMPLEXITY_CACHE[key] = _count(model, img_size)
    return dict(_COMPLEXITY_CACHE[key])


def _count(model: nn.Module, img_size: int) -> dict[str, Any]:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        _, flops = _flops(model, torch.zeros(1, 1, img_size, img_size, device=device))
    finally:
        model.train(was_training)
    return {"params": _params(model), "gmacs": flops / 2e9}


def _params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _flops(fn: Any, x: Tensor) -> tuple[Tensor, int]:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = fn(x)
    return out, counter.get_total_flops()


def complexity_table(img_size: int = 224, *, backbones: Sequence[str] | None = None,
                     heads: Sequence[str] | None = None, num_labels: int = 14) -> list[dict[str, Any]]:
    """One row per backbone x head: feature map shape, parameters and GMACs at ``img_size``.

    Same numbers as ``model_complexity(backbone, img_size, head=head)``, computed with one pass through
    each backbone (costs add up: backbone + head), all on the meta device.
    """
    rows = []
    for name in backbones or list_models():
        with torch.device("meta"):
            model = create_model(name, num_labels=num_labels).eval()
            feat, trunk_flops = _flops(model.features, torch.zeros(1, 1, img_size, img_size))
            trunk_params = _params(model) - _params(model.head)
            for head in heads or list_heads():
                head_module = build_head(head, model.backbone.num_features, num_labels).eval()
                _, head_flops = _flops(head_module, feat)
                rows.append({"backbone": name, "head": head, "img_size": img_size,
                             "feature_shape": list(feat.shape[1:]),
                             "params": trunk_params + _params(head_module),
                             "gmacs": (trunk_flops + head_flops) / 2e9})
    return rows


# ``cxr-bench models`` at its defaults (224 px, 14 labels, every registered backbone and head) reads this file
# instead of importing torch and counting FLOPs for each model; a test keeps it equal to complexity_table().
SHIPPED_COMPLEXITY = Path(__file__).resolve().parents[1] / "bundled" / "complexity_224px_14labels.json"


def write_shipped_complexity(path: str | os.PathLike = SHIPPED_COMPLEXITY) -> Path:
    """Write :func:`complexity_table` at 224 px and 14 labels to the file the CLI ships
    (``python -c "from cxr_bench.models.factory import write_shipped_complexity as w; w()"``)."""
    from ..utils.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(complexity_table(224, num_labels=14), indent=1) + "\n")
    return path
