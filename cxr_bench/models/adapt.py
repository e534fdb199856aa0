"""Input adaptation: how a 1-channel radiograph in [0, 1] reaches a backbone pretrained on RGB.

Two modes (``channels=``), chosen per run and recorded in the model's ``input_config``:

- ``"replicate"``: the normalised gray channel is repeated to 3 channels for the unmodified RGB stem.
- ``"stem"``: the first convolution is rebuilt with 1 input channel whose weights are the SUM of its RGB
  weights (timm's ``adapt_input_conv`` rule for ``in_chans=1``).

Why the sum: a gray image replicated to RGB through the 3-channel convolution gives
``sum_c W_c * x = (sum_c W_c) * x``, i.e. exactly the 1-channel convolution with summed weights.

Normalisation follows the channels the backbone sees. ``"replicate"`` normalises each of the three copies
with the backbone's own per-channel mean and std, exactly what the pretrained RGB filters saw for a gray
photograph (three equal channels, each normalised by its statistic). ``"stem"`` has one channel, so it
takes the mean of the RGB means and the mean of the RGB stds: the single value nearest to all three.
Hence the two modes compute the same function when built only where a backbone's three statistics are
equal (GoogLeNet's (x - 0.5) / 0.5); with ImageNet's statistics they differ by the per-channel offsets
(means 0.485 / 0.456 / 0.406, stds 0.229 / 0.224 / 0.225). Under training they differ anyway: in
"replicate" each of the three weight slices gets its own gradient, so the effective (summed) filter
moves about three times as fast as the single "stem" filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError

CHANNEL_MODES = ("replicate", "stem")


def stem_channels(channels: str) -> int:
    """Number of input channels the backbone's first convolution has in mode ``channels``."""
    if channels not in CHANNEL_MODES:
        raise ConfigError(f"unknown channels mode {channels!r}; known: {', '.join(CHANNEL_MODES)}")
    return 3 if channels == "replicate" else 1


def gray_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """Reduce per-channel (RGB) normalisation statistics to one gray channel: the mean of each."""
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))


def sum_rgb_weights(weight: Tensor) -> Tensor:
    """(O, 3, kh, kw) -> (O, 1, kh, kw): sum over input channels (see the module docstring for why)."""
    if weight.ndim != 4:
        raise ConfigError(f"first convolution weight must be 4-D (O, I, kh, kw), got shape {tuple(weight.shape)}")
    return weight.sum(dim=1, keepdim=True)


def convert_first_conv_to_gray(net: nn.Module, path: str) -> None:
    """Turn the convolution at dotted ``path`` inside ``net`` into a 1-input-channel one, in place.

    The module object is kept (only its weight and ``in_channels`` change) so subclasses with their own
    forward (timm's ``Conv2dSame``, ``StdConv2d``...) keep working.
    """
    if not path:
        raise ConfigError(f"{type(net).__name__} does not declare its first convolution; use channels='replicate'")
    try:
        conv = net.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"{type(net).__name__} has no first convolution at {path!r}") from None
    if not isinstance(conv, nn.Conv2d):
        raise ConfigError(
            f"channels='stem' needs a Conv2d first layer, but {type(net).__name__}.{path} is "
            f"{type(conv).__name__}; use channels='replicate' for this backbone"
        )
    if conv.in_channels == 1:
        return
    if conv.groups != 1 or conv.in_channels != 3:
        raise ConfigError(
            f"channels='stem' expects a 3-channel, ungrouped first convolution; {path} has "
            f"in_channels={conv.in_channels}, groups={conv.groups}; use channels='replicate'"
        )
    with torch.no_grad():
        conv.weight = nn.Parameter(sum_rgb_weights(conv.weight.detach()), requires_grad=conv.weight.requires_grad)
    conv.in_channels = 1


class InputAdapter(nn.Module):
    """(B, 1, H, W) in [0, 1] (or uint8 in [0, 255]) -> normalised (B, C, H, W), C = 3 or 1.

    ``mean`` and ``std`` hold one value per output channel: the backbone's RGB statistics for C = 3
    (each replicated copy normalised by its own channel's), the reduced gray pair for C = 1.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], out_chans: int) -> None:
        super().__init__()
        if out_chans not in (1, 3):
            raise ConfigError(f"InputAdapter: out_chans must be 1 or 3, got {out_chans}")
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != out_chans or len(std) != out_chans:
            raise ConfigError(f"InputAdapter: {out_chans} output channel(s) need {out_chans} mean and std "
                              f"value(s), got {len(mean)} and {len(std)}")
        # Not persistent: they are derived from the backbone, so checkpoints stay free of them and a
        # checkpoint never disagrees with the code about them.
        self.register_buffer("mean", torch.tensor(mean).view(1, out_chans, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, out_chans, 1, 1), persistent=False)
        self.out_chans = out_chans
        self._stats = (tuple(mean), tuple(std))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(
                f"cxr-bench models take a gray image batch (B, 1, H, W) in [0, 1]; got shape {tuple(x.shape)}"
            )
        if x.dtype == torch.uint8:
            # Lets a loader ship uint8 to the device (4x less to copy) and convert there.
            x = x.to(self.mean.dtype) / 255.0
        # Broadcasting (B, 1) against (1, C) replicates the gray channel and normalises each copy with its
        # own statistics in one step.
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean, std = (", ".join(f"{v:.4f}" for v in t) for t in self._stats)
        return f"mean=({mean}), std=({std}), out_chans={self.out_chans}"


def input_stats(mean: Sequence[float], std: Sequence[float],
                channels: str) -> tuple[list[float], list[float]]:
    """Per-stem-channel normalisation for ``channels``: the RGB statistics for ``"replicate"``, their
    reduction to one gray pair (:func:`gray_stats`) for ``"stem"``."""
    if stem_channels(channels) == 3:
        return [float(v) for v in mean], [float(v) for v in std]
    m, s = gray_stats(mean, std)
    return [m], [s]
