"""create_model: every backbone x head x channel mode trains; input handling; complexity."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import Normalize

from cxr_bench.errors import ConfigError
from cxr_bench.models import (
    BACKBONES,
    CHANNEL_MODES,
    HEADS,
    create_model,
    list_heads,
    list_models,
    model_complexity,
    resolved_head_kwargs,
)
from cxr_bench.models.factory import _COMPLEXITY_CACHE

torch.set_num_threads(1)

SIZE = 64  # every registered backbone accepts it (AlexNet needs >= 63)
LABELS = 3
# Smaller-than-default options where a default only adds seconds (the paper's 2048-channel transition layer
# on ResNet-50 has 38M weights); a head not named here is tested with its defaults.
FAST_HEAD_KWARGS = {"wang2017": {"transition_channels": 64}}


def _batch(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", CHANNEL_MODES)
@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_every_backbone_head_and_channel_mode_trains(backbone, head, channels):
    torch.manual_seed(0)  # the test's own seed for the random init; library code never seeds
    model = create_model(backbone, head=head, num_labels=LABELS, channels=channels,
                         head_kwargs=FAST_HEAD_KWARGS.get(head)).train()
    stem = model.backbone.net.get_submodule(model.backbone.first_conv)
    assert stem.in_channels == (3 if channels == "replicate" else 1)
    # The smallest multiple of 32 the architecture takes (32 px, 64 for AlexNet): keeps 36 cases fast.
    size = -(-model.backbone.min_input_size // 32) * 32
    feat = model.features(_batch(size=size))
    logits = model.head(feat)
    heat = model.head.heatmap(feat)
    assert feat.shape[:2] == (2, model.backbone.num_features)
    assert logits.shape == (2, LABELS) and torch.isfinite(logits).all()
    assert heat.shape == (2, LABELS, *feat.shape[2:])
    (logits.sum() + heat.mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.head.parameters() if p.grad is not None)
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0  # reaches the first layer
    # Every parameter takes part (DistributedDataParallel rejects unused ones).
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_freeze_backbone_trains_only_the_head_and_warns_without_weights():
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = create_model("mobilenet_v1", head="wang2017", num_labels=LABELS, freeze_backbone=True)
    model.train()
    assert model.training and model.head.training and not model.backbone.training  # BN statistics stay
    model(_batch()).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


# torchvision's ImageNet statistics (the normalisation its ImageNet weights were trained with).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_input_config_and_metadata():
    rep = create_model("resnet50", num_labels=2, targets=["Atelectasis", "Effusion"])
    assert rep.targets == ("Atelectasis", "Effusion")
    assert rep.backbone_name == "resnet50" and rep.head_name == "gap" and rep.pretrained_info is None
    cfg = rep.input_config
    assert cfg["in_chans"] == 1 and cfg["channels"] == "replicate" and cfg["stem_chans"] == 3
    # Replicated: each copy gets its own channel's statistics; a 1-channel stem gets their means.
    assert cfg["mean"] == pytest.approx(IMAGENET_MEAN) and cfg["std"] == pytest.approx(IMAGENET_STD)
    with torch.device("meta"):  # shapes only: the statistics do not need weights
        stem = create_model("resnet50", channels="stem").input_config
    assert stem["mean"] == pytest.approx([sum(IMAGENET_MEAN) / 3]) and stem["std"] == pytest.approx([0.226])
    googlenet = create_model("googlenet", channels="stem")
    # torchvision's GoogLeNet weights expect (x - 0.5) / 0.5 (see backbones.googlenet).
    assert googlenet.input_config["stem_chans"] == 1 and googlenet.input_config["mean"] == [0.5]


def test_normalisation_is_per_channel_when_replicated_and_uint8_input():
    model = create_model("alexnet", num_labels=LABELS).eval()
    gen = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (2, 1, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    gray = img.float() / 255
    # What torchvision's own preprocessing gives a gray photograph saved as RGB.
    expected = Normalize(IMAGENET_MEAN, IMAGENET_STD)(gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(model.adapter(gray), expected)
    torch.testing.assert_close(model.adapter(img), expected)
    stem = create_model("alexnet", num_labels=LABELS, channels="stem").eval()
    torch.testing.assert_close(stem.adapter(gray), (gray - sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3))
    with torch.no_grad():
        torch.testing.assert_close(model(img), model(gray))
        # The replicated model is the RGB network on that torchvision input, nothing else in between.
        torch.testing.assert_close(model(gray), model.head(model.backbone(expected)))
        heat = model.heatmaps(img)
    assert heat.shape == (2, LABELS, 1, 1)  # AlexNet at 64 px: a 1 x 1 map


def test_bad_inputs_and_arguments():
    model = create_model("alexnet", num_labels=LABELS)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="at least 63x63"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="channels='replicate'"):
        create_model("alexnet", in_chans=3)
    with pytest.raises(ConfigError, match="known: replicate, stem"):
        create_model("alexnet", channels="rgb")
    with pytest.raises(ConfigError, match="2 targets given for num_labels=14"):
        create_model("alexnet", targets=["a", "b"])
    with pytest.raises(ConfigError, match="unknown backbone 'resnet5'; known: .*resnet50"):
        create_model("resnet5")
    with pytest.raises(ConfigError, match="head 'gap' has no option 'pool'"):
        create_model("alexnet", head_kwargs={"pool": "max"})


def _stem_from_replicate(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    rep = create_model(name, num_labels=LABELS).eval()
    stem = create_model(name, num_labels=LABELS, channels="stem").eval()
    key = f"backbone.net.{rep.backbone.first_conv}.weight"
    sd = dict(rep.state_dict())
    sd[key] = sd[key].sum(dim=1, keepdim=True)
    stem.load_state_dict(sd)
    return rep, stem


def test_stem_and_replicate_compute_the_same_function_where_the_statistics_are_equal():
    # GoogLeNet's (and timm MobileNetV1's) three channels share (0.5, 0.5): summed weights on one channel
    # are the RGB network.
    rep, stem = _stem_from_replicate("googlenet")
    x = _batch()
    with torch.no_grad():
        torch.testing.assert_close(stem(x), rep(x), rtol=1e-4, atol=1e-5)


def test_stem_and_replicate_differ_only_by_the_per_channel_offsets():
    # With ImageNet's statistics the stem sees (x - mean(m)) / mean(s) through the summed filter; the
    # replicated network sees (x - m_c) / s_c per channel. Feeding the stem model's adapter output,
    # replicated, to the RGB trunk reproduces the stem model exactly.
    rep, stem = _stem_from_replicate("alexnet")
    x = _batch()
    with torch.no_grad():
        same = rep.head(rep.backbone(stem.adapter(x).repeat(1, 3, 1, 1)))
        torch.testing.assert_close(stem(x), same, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(stem.features(x), rep.features(x), rtol=1e-4, atol=1e-5)


def test_list_models_and_heads():
    names = list_models()
    assert names[0] == "mobilenet_v1"
    assert {"alexnet", "googlenet", "vgg16", "resnet50", "densenet121"} <= set(names)
    assert list_models("*net*") == [n for n in names if "net" in n]
    assert "timm:mobilenetv1_100" in list_models("timm:mobilenetv1*")
    assert list_heads() == ["gap", "wang2017", "attention", "simple"]


# D of the Wang et al. transition layer: the paper states 1024 for GoogLeNet and 2048 for ResNet; for the
# others (the paper is silent) the documented choice is the backbone's feature channels, which are
# AlexNet conv5 256, VGG-16 conv5_3 512, MobileNetV1 and DenseNet-121 1024.
WANG2017_D = {"googlenet": 1024, "resnet50": 2048, "alexnet": 256, "vgg16": 512, "mobilenet_v1": 1024,
              "densenet121": 1024}


@pytest.mark.parametrize("backbone", sorted(WANG2017_D))
def test_wang2017_transition_dimension_per_backbone(backbone):
    with torch.device("meta"):
        model = create_model(backbone, head="wang2017")
    assert model.head.transition.out_channels == WANG2017_D[backbone] == model.head.fc.in_features
    assert resolved_head_kwargs(backbone, "wang2017")["transition_channels"] == WANG2017_D[backbone]
    with torch.device("meta"):
        small = create_model(backbone, head="wang2017", head_kwargs={"transition_channels": 64})
    assert small.head.transition.out_channels == 64  # model.head_kwargs still overrides
    assert resolved_head_kwargs(backbone, "wang2017", {"transition_channels": 64}) == {
        "transition_channels": 64, "kernel_size": 3, "pool": "lse", "r": 10.0}


def test_model_complexity_counts_and_caches():
    a = model_complexity("mobilenet_v1", 224)
    # timm's MobileNetV1-100: 3.2M parameters with a 14-label head, 0.57 GMACs at 224 px.
    assert 3.0e6 < a["params"] < 3.4e6 and 0.5 < a["gmacs"] < 0.65
    key = ("mobilenet_v1", 224, "{}")
    assert key in _COMPLEXITY_CACHE
    _COMPLEXITY_CACHE[key] = {"params": -1, "gmacs": -1.0}
    try:
        assert model_complexity("mobilenet_v1", 224)["params"] == -1  # served from the cache
    finally:
        del _COMPLEXITY_CACHE[key]
    big = model_complexity("mobilenet_v1", 448)  # every map exactly twice as wide: 4x the MACs
    assert big["params"] == a["params"] and big["gmacs"] == pytest.approx(4 * a["gmacs"], rel=1e-3)
    stem = model_complexity("mobilenet_v1", 224, channels="stem")
    assert stem["gmacs"] < a["gmacs"] and stem["params"] == a["params"] - 2 * 32 * 9
    # A model instance is measured where it lives, and agrees with the meta-device count.
    instance = model_complexity(create_model("mobilenet_v1"), 224)
    assert instance == pytest.approx(a)
