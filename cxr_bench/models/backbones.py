"""Backbones: classification networks cut at their last feature map (B, D, h, w).

Every backbone is the *native* network (torchvision's or timm's module tree, so its state-dict keys are
the keys of the published checkpoints) with its classifier removed, wrapped in :class:`Backbone`, which
says what a head and the weight loader need: ``num_features`` (D), the dotted path of the first
convolution, the RGB normalisation the pretrained weights expect, the checkpoint keys that were dropped
(classifier, auxiliary heads) and the file names of the official checkpoints.

Registered names (``BACKBONES``):

- ``mobilenet_v1``: timm ``mobilenetv1_100``, the original project's network.
- ``alexnet``, ``googlenet``, ``vgg16``, ``resnet50``: the four ImageNet baselines of Wang et al.
  (ChestX-ray8, CVPR 2017), here from torchvision. The paper used Caffe models; torchvision's weights are
  trained differently (and ResNet-50's first stride sits in the 3x3 conv, "ResNet v1.5"), so pretrained
  numbers are comparable in kind, not bit for bit.
- ``densenet121``: torchvision, the CheXNet reference.
- any timm model as ``timm:<name>`` (``timm:convnext_tiny``, ``timm:resnet50.a1_in1k``).

Adding a backbone is one function returning a :class:`Backbone`, decorated with :func:`register_backbone` (its
name and its ImageNet checkpoint, :class:`PretrainedCfg`); the tests pick it up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"

# The Inception-style normalisation x -> (x - 0.5) / 0.5 (see googlenet()).
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class CachedWeights:
    """One official checkpoint a backbone can be initialised from, as it sits in a local cache.

    ``hub_repo`` set: the file ``filename`` of that Hugging Face hub repo (timm's weights);
    otherwise the file ``filename`` in torch hub's ``checkpoints`` directory (torchvision's and timm's
    URL-hosted weights). Looking a file up never downloads it (see ``weights.py``).
    """

    source: str
    filename: str
    hub_repo: str | None = None
    url: str | None = None  # where it is published (for the "how to provide it" hint only)


class Backbone(nn.Module):
    """A native network ``net`` whose ``forward`` returns its last feature map (B, D, h, w).

    Attributes:
        net: the native module (torchvision / timm) without its classifier.
        name: the registry name (``resnet50``, ``timm:convnext_tiny``).
        num_features: D, the channels of the feature map.
        first_conv: dotted path of the first convolution inside ``net`` (for ``channels="stem"``).
        mean, std: RGB normalisation the pretrained weights were trained with.
        dropped_keys: keys of the native checkpoint that belong to removed parts (classifier,
            auxiliary heads); a weights file may contain them, they are ignored on load.
        cached_weights: the official checkpoints, in order of preference, for ``pretrained="cache"``.
        min_input_size: the smallest square input the architecture accepts.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        num_features: int,
        first_conv: str,
        mean: Iterable[float],
        std: Iterable[float],
        dropped_keys: Iterable[str] = (),
        cached_weights: Iterable[CachedWeights] = (),
        min_input_size: int = 32,
    ) -> None:
        super().__init__()
        # Any: the native torchvision / timm network is used through its own attribute names (``net.fc``,
        # ``net.forward_features``), which torch's stubs type as ``Tensor | Module``.
        self.net: Any = net
        self.name = name
        self.num_features = int(num_features)
        self.first_conv = first_conv
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.dropped_keys = frozenset(dropped_keys)
        self.cached_weights = tuple(cached_weights)
        self.min_input_size = int(min_input_size)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def remap_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename keys of an official checkpoint to the current module names (identity by default)."""
        return state_dict


BACKBONES: Registry[Callable[[], Backbone]] = Registry("backbone")


@dataclass(frozen=True)
class PretrainedCfg:
    """The one checkpoint ``pretrained="imagenet"`` means for a registered backbone, kept beside its
    registration (timm's ``pretrained_cfg``): :mod:`cxr_bench.models.weights` fetches it, the README's table
    lists it (a test holds the two together)."""

    source: str  # torchvision's weights enum member or timm's pretrained tag, as CachedWeights.source
    file: str  # the file the cache holds (torch hub: the URL's basename; Hugging Face hub: the repo's file)
    input_size: int  # the square side the checkpoint was trained at
    # Of that file: a full digest, or torchvision's published 8-hex prefix (the full digests cannot be looked
    # up offline; torchvision verifies the prefix itself). None: the hub's announced sha256 is checked (timm's
    # Hugging Face files) and each run's manifest records the file's digest.
    sha256: str | None = None


# Backbone name -> its ImageNet checkpoint; filled by :func:`register_backbone`. A ``timm:<name>`` backbone has
# none here: it takes timm's default tag for <name>.
PRETRAINED_CFGS: dict[str, PretrainedCfg] = {}


def register_backbone(name: str, pretrained: PretrainedCfg | None = None
                      ) -> Callable[[Callable[[], Backbone]], Callable[[], Backbone]]:
    """Register a backbone factory under ``name``, with the ImageNet checkpoint it is initialised from."""

    def register(factory: Callable[[], Backbone]) -> Callable[[], Backbone]:
        BACKBONES.register(name)(factory)
        if pretrained is not None:
            PRETRAINED_CFGS[name] = pretrained
        return factory

    return register


def build_backbone(name: str) -> Backbone:
    """A registered backbone by name, or any timm model as ``timm:<name>``; random initialisation."""
    if name.startswith(TIMM_PREFIX):
        return TimmBackbone(name[len(TIMM_PREFIX):])
    return BACKBONES.get(name)()


# ---------------------------------------------------------------------------------------------- helpers
def _strip(net: nn.Module, attrs: Iterable[str]) -> frozenset[str]:
    """Replace the modules ``attrs`` of ``net`` by ``Identity``; return the state-dict keys that went."""
    before = set(net.state_dict())
    for attr in attrs:
        setattr(net, attr, nn.Identity())
    return frozenset(before - set(net.state_dict()))


def _build_features_only(build: Callable[[], nn.Module], classifier: str,
                         init: Callable[[nn.Module], None]) -> tuple[nn.Module, frozenset[str]]:
    """Build ``build()`` without paying for its classifier.

    AlexNet's and VGG's fully connected layers hold 58M and 124M parameters that a feature extractor
    throws away; drawing their random init alone costs seconds. So the network is built on the meta device
    (shapes only), the classifier is removed, the rest is allocated on the current default device and
    initialised with ``init``, the same rule torchvision's constructor applies to those layers.
    """
    with torch.device("meta"):
        net = build()
    dropped = _strip(net, [classifier])
    net = net.to_empty(device=torch.empty(0).device)
    init(net)
    return net, dropped


def _reset_default(net: nn.Module) -> None:
    # torchvision's AlexNet has no init of its own: every layer keeps PyTorch's default.
    for m in net.modules():
        reset = getattr(m, "reset_parameters", None)
        if m is not net and callable(reset):
            reset()


def _init_vgg(net: nn.Module) -> None:
    # torchvision VGG.__init__'s rule for its convolutions (the only layers kept).
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _torchvision_weights(enum: type[tvm.WeightsEnum]) -> list[CachedWeights]:
    # torch.hub saves a checkpoint under the basename of its URL; the enum lists them oldest first
    # (IMAGENET1K_V1 before V2), which is also our preference: the V1 recipes are the paper-era ones.
    return [CachedWeights(source=f"torchvision:{enum.__name__}.{w.name}", filename=w.url.rsplit("/", 1)[-1],
                          url=w.url) for w in enum]


# ---------------------------------------------------------------------------------------------- torchvision
class ConvFeaturesBackbone(Backbone):
    """AlexNet / VGG: ``net.features`` is the whole convolutional trunk.

    The adaptive average pool that follows in torchvision (to 6x6 / 7x7 for the classifier) is not part
    of the features: heads pool for themselves, and the map keeps its true resolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)


class ResNetBackbone(Backbone):
    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class DenseNetBackbone(Backbone):
    # Checkpoints written before torchvision renamed 'norm.1' to 'norm1' (the official ones) use dotted
    # names inside dense layers; torchvision's own loader renames them with this pattern.
    _OLD_KEY = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )

    def forward(self, x: Tensor) -> Tensor:
        # torchvision applies this ReLU in DenseNet.forward, after features' last BatchNorm.
        return F.relu(self.net.features(x))

    def remap_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for key, value in state_dict.items():
            m = self._OLD_KEY.match(key)
            out[m.group(1) + m.group(2) if m else key] = value
        return out


class GoogLeNetBackbone(Backbone):
    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool1(n.conv1(x))
        x = n.maxpool2(n.conv3(n.conv2(x)))
        x = n.maxpool3(n.inception3b(n.inception3a(x)))
        x = n.inception4a(x)
        x = n.inception4e(n.inception4d(n.inception4c(n.inception4b(x))))
        x = n.maxpool4(x)
        return n.inception5b(n.inception5a(x))


# The V1 recipes of torchvision are the paper-era ones.
@register_backbone("mobilenet_v1", PretrainedCfg("timm:mobilenetv1_100.ra4_e3600_r224_in1k", "model.safetensors", 224))
def mobilenet_v1() -> Backbone:
    """MobileNetV1 width 1.0 (timm ``mobilenetv1_100``, 1024 x H/32 x W/32), the original project's network."""
    return TimmBackbone("mobilenetv1_100", name="mobilenet_v1")


def _torchvision(cls: type[Backbone], net: nn.Module, dropped: frozenset[str], *, name: str, num_features: int,
                 first_conv: str, weights: type[tvm.WeightsEnum], mean: Iterable[float] = IMAGENET_DEFAULT_MEAN,
                 std: Iterable[float] = IMAGENET_DEFAULT_STD, min_input_size: int = 32) -> Backbone:
    return cls(net, name=name, num_features=num_features, first_conv=first_conv, mean=mean, std=std,
               dropped_keys=dropped, cached_weights=_torchvision_weights(weights), min_input_size=min_input_size)


@register_backbone("alexnet", PretrainedCfg("torchvision:AlexNet_Weights.IMAGENET1K_V1", "alexnet-owt-7be5be79.pth",
                                            224, sha256="7be5be79"))
def alexnet() -> Backbone:
    """AlexNet (torchvision, 256 x h x w). Needs at least 63 px: three stride-2 max pools after a stride-4 conv."""
    net, dropped = _build_features_only(tvm.alexnet, "classifier", _reset_default)
    return _torchvision(ConvFeaturesBackbone, net, dropped, name="alexnet", num_features=256,
                        first_conv="features.0", weights=tvm.AlexNet_Weights, min_input_size=63)


@register_backbone("vgg16", PretrainedCfg("torchvision:VGG16_Weights.IMAGENET1K_V1", "vgg16-397923af.pth", 224,
                                          sha256="397923af"))
def vgg16() -> Backbone:
    """VGG-16 without batch norm (torchvision, 512 x H/32 x W/32), as in Wang et al."""
    net, dropped = _build_features_only(tvm.vgg16, "classifier", _init_vgg)
    return _torchvision(ConvFeaturesBackbone, net, dropped, name="vgg16", num_features=512,
                        first_conv="features.0", weights=tvm.VGG16_Weights)


@register_backbone("googlenet", PretrainedCfg("torchvision:GoogLeNet_Weights.IMAGENET1K_V1", "googlenet-1378be20.pth",
                                              224, sha256="1378be20"))
def googlenet() -> Backbone:
    """GoogLeNet / Inception v1 (torchvision, 1024 x H/32 x W/32), without auxiliary classifiers.

    Built with ``aux_logits=True`` only to learn the auxiliary heads' checkpoint keys (the official file
    holds them), then the heads are removed: no auxiliary outputs, in training or evaluation.
    ``init_weights=True`` is explicit (torchvision warns otherwise).

    ``transform_input=False``: torchvision's pretrained GoogLeNet was ported from TensorFlow and expects
    ``(x - 0.5) / 0.5``; with ``transform_input=True`` it converts ImageNet-normalised input to that.
    Here the model's own normalisation does it directly, so this backbone declares mean = std = 0.5.
    """
    net = tvm.googlenet(weights=None, aux_logits=True, transform_input=False, init_weights=True)
    dropped = _strip(net, ["aux1", "aux2", "fc"])
    net.aux1 = net.aux2 = None
    net.aux_logits = False
    return _torchvision(GoogLeNetBackbone, net, dropped, name="googlenet", num_features=1024,
                        first_conv="conv1.conv", weights=tvm.GoogLeNet_Weights, mean=HALF_MEAN, std=HALF_STD)


@register_backbone("resnet50", PretrainedCfg("torchvision:ResNet50_Weights.IMAGENET1K_V1", "resnet50-0676ba61.pth",
                                             224, sha256="0676ba61"))
def resnet50() -> Backbone:
    """ResNet-50 (torchvision, 2048 x H/32 x W/32). Wang et al.'s best; their heatmaps are 32x32 at 1024 px."""
    net = tvm.resnet50(weights=None)
    return _torchvision(ResNetBackbone, net, _strip(net, ["fc"]), name="resnet50", num_features=2048,
                        first_conv="conv1", weights=tvm.ResNet50_Weights)


@register_backbone("densenet121", PretrainedCfg("torchvision:DenseNet121_Weights.IMAGENET1K_V1",
                                                "densenet121-a639ec97.pth", 224, sha256="a639ec97"))
def densenet121() -> Backbone:
    """DenseNet-121 (torchvision, 1024 x H/32 x W/32), the CheXNet network (Rajpurkar et al. 2017)."""
    net = tvm.densenet121(weights=None)
    return _torchvision(DenseNetBackbone, net, _strip(net, ["classifier"]), name="densenet121", num_features=1024,
                        first_conv="features.conv0", weights=tvm.DenseNet121_Weights)


# ---------------------------------------------------------------------------------------------- timm
class TimmBackbone(Backbone):
    """Any timm model, cut with timm's own feature-extraction API.

    ``prune_intermediate_layers(prune_head=True)`` removes everything after the last stage (classifier,
    and the layers only ``forward_head`` uses, such as MobileNetV3's ``conv_head``), so no parameter is
    left without a gradient (which DistributedDataParallel would reject) and ``forward_intermediates``
    returns the last stage as (B, D, h, w), token models (ViT) included. Models without that API fall back
    to ``reset_classifier(0)`` + ``forward_features``.
    """

    def __init__(self, timm_name: str, *, name: str | None = None) -> None:
        if not timm.is_model(timm_name):
            raise ConfigError(
                f"unknown timm model {timm_name!r}; list candidates with "
                f"cxr_bench.models.list_models('timm:*{timm_name.split('.')[0][:8]}*')"
            )
        try:
            net: Any = timm.create_model(timm_name, pretrained=False)
        except RuntimeError as e:  # e.g. an unknown pretrained tag after the dot
            raise ConfigError(f"timm cannot build {timm_name!r}: {e}") from None
        cfg = dict(net.pretrained_cfg)
        before = set(net.state_dict())
        try:
            net.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)
            use_intermediates = True
        except (NotImplementedError, AttributeError):
            log.warning("timm model %s has no forward_intermediates; using forward_features. Layers only its "
                        "forward_head uses stay in the model without gradients (DDP needs "
                        "find_unused_parameters)", timm_name)
            net.reset_classifier(0)
            use_intermediates = False
        info = getattr(net, "feature_info", None)
        num_features = info[-1]["num_chs"] if use_intermediates and info else net.num_features
        first_conv = cfg.get("first_conv")
        super().__init__(
            net,
            name=name or TIMM_PREFIX + timm_name,
            num_features=num_features,
            first_conv=first_conv if isinstance(first_conv, str) else "",
            mean=cfg.get("mean", IMAGENET_DEFAULT_MEAN),
            std=cfg.get("std", IMAGENET_DEFAULT_STD),
            dropped_keys=before - set(net.state_dict()),
            cached_weights=_timm_weights(timm_name, cfg),
        )
        self.timm_name = timm_name
        self._intermediates = use_intermediates

    def forward(self, x: Tensor) -> Tensor:
        if self._intermediates:
            return self.net.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[-1]
        out = self.net.forward_features(x)
        if out.ndim != 4:
            raise ConfigError(
                f"timm model {self.timm_name!r} returns features of shape {tuple(out.shape)}, not a "
                "(B, D, h, w) map, and has no forward_intermediates; pick a convolutional model"
            )
        return out


def _timm_weights(timm_name: str, cfg: dict) -> list[CachedWeights]:
    source = f"timm:{cfg.get('architecture', timm_name)}" + (f".{cfg['tag']}" if cfg.get("tag") else "")
    refs = []
    if cfg.get("hf_hub_id"):
        repo = cfg["hf_hub_id"]
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        refs += [CachedWeights(source=source, filename=f, hub_repo=repo) for f in names]
    if cfg.get("url"):
        refs.append(CachedWeights(source=source, filename=cfg["url"].rsplit("/", 1)[-1], url=cfg["url"]))
    return refs
