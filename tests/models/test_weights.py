"""Offline pretrained weights: files the test writes, fake-but-real caches, and the errors."""

from __future__ import annotations

import pathlib

import pytest
import timm
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from cxr_bench.errors import WeightsError
from cxr_bench.models import BACKBONES, create_model
from cxr_bench.models.backbones import build_backbone
from cxr_bench.utils.io import sha256_file

torch.set_num_threads(1)


def _native_checkpoint(name: str) -> dict[str, torch.Tensor]:
    """What a published checkpoint of backbone ``name`` holds: its trunk plus the dropped classifier keys."""
    torch.manual_seed(1)
    backbone = build_backbone(name)
    sd = {k: v.clone() for k, v in backbone.net.state_dict().items()}
    sd.update({k: torch.zeros(2) for k in backbone.dropped_keys})  # shapes irrelevant: they are ignored
    return sd


def _stem_key(name: str) -> str:
    return f"{build_backbone(name).first_conv}.weight"


@pytest.mark.parametrize("name", BACKBONES.names())
def test_roundtrip_from_a_safetensors_file_with_summed_stem(name, tmp_path):
    sd = _native_checkpoint(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(sd, str(path))
    model = create_model(name, channels="stem", pretrained=path)
    loaded = model.backbone.net.state_dict()
    stem_key = f"{model.backbone.first_conv}.weight"
    for key, value in loaded.items():
        if key == stem_key:
            assert value.shape[1] == 1
            torch.testing.assert_close(value, sd[key].sum(dim=1, keepdim=True))
        else:
            assert torch.equal(value, sd[key]), key
    assert model.pretrained_info == {"path": str(path.resolve()), "sha256": sha256_file(path), "source": "file"}


def test_stem_and_replicate_agree_after_loading_the_same_file(tmp_path):
    path = tmp_path / "densenet.pt"
    torch.save(_native_checkpoint("densenet121"), path)
    rep = create_model("densenet121", num_labels=2, pretrained=path).eval()
    stem = create_model("densenet121", num_labels=2, pretrained=path, channels="stem").eval()
    stem.head.load_state_dict(rep.head.state_dict())
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(stem(x), rep(x), rtol=1e-4, atol=1e-5)


def test_wrapped_ddp_checkpoint_and_frozen_backbone(tmp_path, recwarn):
    sd = _native_checkpoint("mobilenet_v1")
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    model = create_model("mobilenet_v1", pretrained=path, freeze_backbone=True)
    assert not [w for w in recwarn if "randomly initialised" in str(w.message)]  # weights given: no warning
    assert torch.equal(model.backbone.net.conv_stem.weight, sd["conv_stem.weight"])
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_a_cxr_bench_stem_checkpoint_loads_into_a_stem_model_only(tmp_path):
    torch.manual_seed(0)
    trained = create_model("mobilenet_v1", channels="stem", num_labels=3)
    path = tmp_path / "last.pt"
    torch.save({"model": trained.state_dict(), "epoch": 1}, path)
    again = create_model("mobilenet_v1", channels="stem", num_labels=5, pretrained=path)
    for key, value in again.backbone.state_dict().items():
        assert torch.equal(value, trained.backbone.state_dict()[key]), key
    with pytest.raises(WeightsError, match="1 input channel.*channels='stem'"):
        create_model("mobilenet_v1", pretrained=path)


def test_old_densenet_key_names_are_renamed(tmp_path):
    # Like the official file: pre-0.4.1 names ('norm.1.') and no BatchNorm num_batches_tracked counters.
    sd = _native_checkpoint("densenet121")
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in sd.items()
           if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(old, path)
    model = create_model("densenet121", pretrained=path)
    assert torch.equal(model.backbone.net.features.denseblock1.denselayer1.norm1.weight,
                       sd["features.denseblock1.denselayer1.norm1.weight"])


def test_torchvision_cache_with_the_official_file_name(tmp_path):
    # A real torchvision GoogLeNet checkpoint layout: aux1/aux2/fc keys included, saved under the URL's name.
    torch.manual_seed(2)
    native = tvm.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    hub = tmp_path / "torch-hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(native, hub / "checkpoints" / "googlenet-1378be20.pth")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        model = create_model("googlenet", pretrained="cache")
    finally:
        torch.hub.set_dir(old)
    assert model.pretrained_info["source"] == "torchvision:GoogLeNet_Weights.IMAGENET1K_V1"
    assert model.pretrained_info["path"].endswith("checkpoints/googlenet-1378be20.pth")
    assert torch.equal(model.backbone.net.inception5b.branch1.conv.weight, native["inception5b.branch1.conv.weight"])
    assert model.backbone.net.aux1 is None and model.backbone.net.aux2 is None


def test_timm_hugging_face_cache(tmp_path, monkeypatch):
    torch.manual_seed(3)
    native = timm.create_model("mobilenetv1_100").state_dict()  # includes classifier.*
    repo = "timm/mobilenetv1_100.ra4_e3600_r224_in1k"
    folder = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snap = folder / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in native.items()}, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = create_model("mobilenet_v1", pretrained="cache", channels="stem")
    assert model.pretrained_info["source"] == "timm:mobilenetv1_100.ra4_e3600_r224_in1k"
    torch.testing.assert_close(model.backbone.net.conv_stem.weight, native["conv_stem.weight"].sum(1, keepdim=True))


def test_missing_cache_names_every_file_and_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "th"))
    try:
        with pytest.raises(WeightsError) as err:
            create_model("resnet50", pretrained="cache")
        with pytest.raises(WeightsError) as err_timm:
            create_model("mobilenet_v1", pretrained="cache")
    finally:
        torch.hub.set_dir(old)
    msg = str(err.value)
    for expected in ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", str(tmp_path / "th" / "checkpoints"),
                     "https://download.pytorch.org/models/resnet50-0676ba61.pth", "pretrained=<path"):
        assert expected in msg
    msg = str(err_timm.value)
    for expected in ("model.safetensors", "timm/mobilenetv1_100.ra4_e3600_r224_in1k",
                     str(tmp_path / "hf" / "models--timm--mobilenetv1_100.ra4_e3600_r224_in1k"), "HF_HUB_CACHE"):
        assert expected in msg


def test_missing_file_gives_the_path_and_what_to_do(tmp_path):
    missing = tmp_path / "nope" / "resnet50.pth"
    with pytest.raises(WeightsError, match=f"{missing} does not exist.*pretrained='cache'"):
        create_model("alexnet", pretrained=missing)


class _Payload:
    """An object whose unpickling would create a file: what a malicious checkpoint could do."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickled_object_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="evil.pth: refused .*never arbitrary pickled objects") as err:
        create_model("alexnet", pretrained=path)
    assert not marker.exists()
    assert "Unsupported global" in str(err.value) and "weights_only` set to `False`" not in str(err.value)


def test_wrong_architecture_lists_the_mismatch(tmp_path):
    path = tmp_path / "alexnet.safetensors"
    save_file(_native_checkpoint("alexnet"), str(path))
    with pytest.raises(WeightsError, match=r"does not match backbone 'vgg16'.*missing key.*shape mismatch"):
        create_model("vgg16", pretrained=path)
    sd = _native_checkpoint("alexnet")
    sd["features.0.extra"] = torch.zeros(1)
    save_file(sd, str(path))
    with pytest.raises(WeightsError, match="1 unexpected key.*features.0.extra"):
        create_model("alexnet", pretrained=path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        create_model("alexnet", pretrained=path)
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(WeightsError, match="top-level keys: 'epoch', 'optimizer'"):
        create_model("alexnet", pretrained=path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="broken.safetensors: not a readable safetensors file"):
        create_model("alexnet", pretrained=broken)
