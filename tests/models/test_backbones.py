"""Backbones: the feature map each promises, smallest inputs, dropped keys, timm models by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr_bench.errors import ConfigError
from cxr_bench.models import BACKBONES, create_model
from cxr_bench.models.backbones import Backbone, build_backbone

torch.set_num_threads(1)

# Official checkpoint names (URL basenames) that pretrained="cache" must look for.
EXPECTED_FILES = {
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg16": "vgg16-397923af.pth",
    "googlenet": "googlenet-1378be20.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "densenet121": "densenet121-a639ec97.pth",
    "mobilenet_v1": "model.safetensors",
}


@pytest.fixture(scope="module")
def built() -> dict[str, Backbone]:
    """Each registered backbone built once for this module (random init)."""
    torch.manual_seed(0)
    return {name: build_backbone(name) for name in BACKBONES.names()}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_contract(name, built):
    bb = built[name]
    assert bb.name == name
    conv = bb.net.get_submodule(bb.first_conv)
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 3
    assert len(bb.mean) == len(bb.std) == 3
    # The classifier is gone from the module but known, so a published checkpoint still loads strictly.
    assert bb.dropped_keys and not (bb.dropped_keys & set(bb.net.state_dict()))
    assert EXPECTED_FILES[name] in [ref.filename for ref in bb.cached_weights]
    with torch.no_grad():
        x = torch.rand(1, 3, bb.min_input_size, bb.min_input_size)
        smallest = bb.eval()(x)
        at64 = bb(torch.rand(1, 3, 64, 64))
    assert smallest.ndim == 4 and smallest.shape[1] == bb.num_features and smallest.shape[2:] == (1, 1)
    assert at64.shape[1] == bb.num_features
    # Stride 32 (AlexNet: the last max pool of a 64 px input leaves 1 x 1).
    assert at64.shape[2:] == ((1, 1) if name == "alexnet" else (2, 2))


def test_classifier_keys_are_the_dropped_ones(built):
    assert built["resnet50"].dropped_keys == {"fc.weight", "fc.bias"}
    assert {k.split(".")[0] for k in built["googlenet"].dropped_keys} == {"aux1", "aux2", "fc"}
    assert {k.split(".")[0] for k in built["vgg16"].dropped_keys} == {"classifier"}
    assert built["mobilenet_v1"].dropped_keys == {"classifier.weight", "classifier.bias"}


def test_googlenet_has_no_auxiliary_outputs(built):
    net = built["googlenet"].net
    assert net.aux1 is None and net.aux2 is None and not net.aux_logits and not net.transform_input
    model = create_model("googlenet", num_labels=2).train()
    out = model(torch.rand(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2)  # not GoogLeNetOutputs, even in train mode


def test_alexnet_and_vgg_features_skip_the_adaptive_pool(built):
    # torchvision pools AlexNet to 6x6 for its classifier; the features keep their true resolution.
    with torch.no_grad():
        assert built["alexnet"].eval()(torch.rand(1, 3, 127, 127)).shape == (1, 256, 3, 3)
        assert built["vgg16"].eval()(torch.rand(1, 3, 96, 96)).shape == (1, 512, 3, 3)


@pytest.mark.parametrize("timm_name", ["test_convnext", "test_vit", "mobilenetv3_small_050"])
def test_any_timm_model_by_name(timm_name):
    torch.manual_seed(0)
    model = create_model(f"timm:{timm_name}", head="attention", num_labels=2, channels="stem")
    assert model.backbone_name == f"timm:{timm_name}"
    feat = model.features(torch.rand(2, 1, 64, 64))
    assert feat.ndim == 4 and feat.shape[1] == model.backbone.num_features  # token models give a map too
    model(torch.rand(2, 1, 64, 64)).sum().backward()
    # Head layers only timm's forward_head uses (MobileNetV3's conv_head) are pruned: every parameter
    # gets a gradient, as DistributedDataParallel requires.
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'"):
        build_backbone("timm:no_such_net")
    with pytest.raises(ConfigError, match="unknown backbone 'vgg19'"):
        build_backbone("vgg19")
