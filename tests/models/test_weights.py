"""Pretrained weights: files the test writes, fake-but-real caches, ImageNet checkpoints fetched through a
mirror (a real HTTP server on 127.0.0.1), offline mode, and the errors."""

from __future__ import annotations

import hashlib
import io
import math
import pathlib
import re
import socket
import time

import pytest
import timm
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from cxr_bench.errors import WeightsError
from cxr_bench.models import BACKBONES, create_model
from cxr_bench.models import weights as W
from cxr_bench.models.backbones import PRETRAINED_CFGS, CachedWeights, alexnet, build_backbone
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
    assert model.pretrained_info == {"path": str(path.resolve()), "sha256": sha256_file(path), "source": "file",
                                     "url": None}


def test_stem_and_replicate_agree_after_loading_the_same_file(tmp_path):
    # GoogLeNet: its three normalisation statistics are equal, the case where the two modes are the same
    # function (see cxr_bench.models.adapt); the summed stem must therefore reproduce the 3-channel file.
    path = tmp_path / "googlenet.pt"
    torch.save(_native_checkpoint("googlenet"), path)
    rep = create_model("googlenet", num_labels=2, pretrained=path).eval()
    stem = create_model("googlenet", num_labels=2, pretrained=path, channels="stem").eval()
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


def test_torchvision_cache_with_the_official_file_name(tmp_path, monkeypatch):
    # A real torchvision GoogLeNet checkpoint layout: aux1/aux2/fc keys included, saved under the URL's name.
    torch.manual_seed(2)
    native = tvm.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    hub = tmp_path / "torch-hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(native, hub / "checkpoints" / "googlenet-1378be20.pth")
    source = "torchvision:GoogLeNet_Weights.IMAGENET1K_V1"
    # Not the published file, so its pin is refused (shown first); pinned to this file, it is taken.
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        with pytest.raises(WeightsError, match=r"googlenet: the checkpoint file is not .*GoogLeNet.*1378be20"):
            create_model("googlenet", pretrained="cache")
    finally:
        torch.hub.set_dir(old)
    assert (hub / "checkpoints" / "googlenet-1378be20.pth").is_file()  # a cached file found is not deleted
    from dataclasses import replace

    from cxr_bench.models.backbones import PRETRAINED_CFGS

    assert PRETRAINED_CFGS["googlenet"].source == source
    monkeypatch.setitem(PRETRAINED_CFGS, "googlenet", replace(PRETRAINED_CFGS["googlenet"], sha256=hashlib.sha256(
        (hub / "checkpoints" / "googlenet-1378be20.pth").read_bytes()).hexdigest()))
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


# ---------------------------------------------------------------------------------------------- first use
import range_server as rs  # noqa: E402 - tests/helpers is on pytest's pythonpath

MOBILENET_REPO = "timm/mobilenetv1_100.ra4_e3600_r224_in1k"


def _hub_site(data: bytes) -> object:
    """What the Hugging Face hub answers for timm's MobileNetV1 checkpoint (HEAD metadata, then the bytes)."""
    site = rs.Site()
    path = f"/{MOBILENET_REPO}/resolve/main/model.safetensors"
    site.files[path] = data
    site.headers[path] = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": "c" * 40}
    return site


def test_imagenet_weights_are_fetched_through_a_mirror_into_the_hf_cache_once(caches, monkeypatch):
    torch.manual_seed(4)
    native = timm.create_model("mobilenetv1_100").state_dict()
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in native.items()})
    site = _hub_site(data)
    with rs.serve(site) as base:
        monkeypatch.setenv(W.MIRROR_ENV, base)
        model = create_model("mobilenet_v1", pretrained="imagenet")
        info = model.pretrained_info
        assert info["source"] == "timm:mobilenetv1_100.ra4_e3600_r224_in1k"
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["url"] == f"https://huggingface.co/{MOBILENET_REPO}/resolve/main/model.safetensors"
        assert pathlib.Path(info["path"]).is_relative_to((caches / "hf").resolve())
        assert torch.equal(model.backbone.net.conv_stem.weight, native["conv_stem.weight"])
        n_requests = len(site.log)
        assert n_requests >= 1
        again = create_model("mobilenet_v1", pretrained="imagenet")
        assert len(site.log) == n_requests  # the second use reads the cache: no request at all
        assert again.pretrained_info == info
        # "cache" now finds the same file too.
        assert create_model("mobilenet_v1", pretrained="cache").pretrained_info["sha256"] == info["sha256"]


def test_hub_repos_with_pytorch_model_bin_only_are_fetched_too(caches):
    # timm's hub repos hold model.safetensors or, older ones, pytorch_model.bin: the second is tried next.
    torch.manual_seed(6)
    buf = io.BytesIO()
    torch.save(timm.create_model("mobilenetv1_100").state_dict(), buf)
    data = buf.getvalue()
    site = rs.Site()
    path = f"/{MOBILENET_REPO}/resolve/main/pytorch_model.bin"
    site.files[path] = data
    site.headers[path] = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": "d" * 40}
    with rs.serve(site) as base:
        rec = W.fetch_pretrained("mobilenet_v1", mirror=base)
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in site.log] == [
        ("HEAD", "model.safetensors"), ("HEAD", "pytorch_model.bin"), ("GET", "pytorch_model.bin")]
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["fetched"] is True
    assert rec["path"].endswith(f"snapshots/{'d' * 40}/pytorch_model.bin")


def test_torchvision_checkpoint_is_fetched_with_its_hash_checked(caches, monkeypatch):
    torch.manual_seed(5)
    native = _native_checkpoint("alexnet")
    buf = io.BytesIO()
    torch.save(native, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    name = f"alexnet-test-{digest[:8]}.pth"  # torch hub's naming: the hash prefix is part of the name
    ref = CachedWeights(source="torchvision:AlexNet_Weights.TEST", filename=name,
                        url=f"https://download.pytorch.org/models/{name}")

    def tv_test() -> object:
        backbone = alexnet()
        backbone.name, backbone.cached_weights = "tv_test", (ref,)
        return backbone

    monkeypatch.setitem(BACKBONES._entries, "tv_test", tv_test)
    site = rs.Site(files={f"/models/{name}": data})
    with rs.serve(site) as base:
        monkeypatch.setenv(W.MIRROR_ENV, base)
        model = create_model("tv_test", pretrained="imagenet")
        W._published.cache_clear()
        rec = W.fetch_pretrained("tv_test")
        assert site.gets(f"/models/{name}") == [None]  # fetched once, then read from the cache
    cached = caches / "torch-hub" / "checkpoints" / name
    assert cached.read_bytes() == data and rec["fetched"] is False
    assert model.pretrained_info == {"path": str(cached.resolve()), "sha256": digest, "source": ref.source,
                                     "url": ref.url}
    assert torch.equal(model.backbone.net.features[0].weight, native["features.0.weight"])
    W._published.cache_clear()


def test_a_mirror_serving_another_file_is_refused_and_nothing_is_cached(caches):
    site = rs.Site(files={"/models/alexnet-owt-7be5be79.pth": b"not the published checkpoint"})
    with rs.serve(site) as base:
        with pytest.raises(WeightsError, match=r"alexnet.*is not torchvision:AlexNet_Weights\.IMAGENET1K_V1.*7be5be79"):
            W.fetch_pretrained("alexnet", mirror=base)
    assert site.gets("/models/alexnet-owt-7be5be79.pth") == [None]
    folder = caches / "torch-hub" / "checkpoints"
    assert not folder.exists() or not list(folder.iterdir())


@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE", W.OFFLINE_ENV, "argument"])
def test_offline_fails_fast_naming_model_url_and_command(caches, monkeypatch, switch):
    site = rs.Site()
    with rs.serve(site) as base:
        monkeypatch.setenv(W.MIRROR_ENV, base)
        offline = None
        if switch == "argument":
            offline = True
        else:
            monkeypatch.setenv(switch, "1")
        start = time.monotonic()
        with torch.device("meta"):  # shapes only: the error comes before any weight is touched
            backbone = build_backbone("resnet50")
        with pytest.raises(WeightsError) as err:
            W.load_pretrained(backbone, "imagenet", stem=False, offline=offline)
        with pytest.raises(WeightsError) as err_timm:
            W.fetch_pretrained("mobilenet_v1", offline=offline, command="cxr-bench weights fetch --suite wang2017")
        assert time.monotonic() - start < 5
    assert site.log == []  # nothing was even asked
    msg = str(err.value)
    for needle in ("'resnet50'", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                   "`cxr-bench weights fetch resnet50`", "downloads are off",
                   "--offline" if switch == "argument" else switch):
        assert needle in msg, needle
    msg = str(err_timm.value)
    assert "'mobilenet_v1'" in msg and f"https://huggingface.co/{MOBILENET_REPO}/resolve/main/model.safetensors" in msg
    assert "`cxr-bench weights fetch --suite wang2017`" in msg


def test_no_network_fails_fast(caches):
    with socket.socket() as s:  # a port nothing listens on: connection refused, like a node without network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"'densenet121'.*no network: cannot connect to 127\.0\.0\.1.*"
                                           r"cxr-bench weights fetch densenet121"):
        W.fetch_pretrained("densenet121", mirror=f"http://127.0.0.1:{port}/")
    assert time.monotonic() - start < 5


def test_missing_weights_lists_each_once_with_one_fetch_command(caches, tmp_path):
    from cxr_bench.config import ModelConfig, RunConfig

    run = RunConfig()
    run.model.backbone, run.model.pretrained = "resnet50", "imagenet"
    configs = [run, run, ModelConfig(backbone="mobilenet_v1", pretrained="cache"), ("alexnet", None),
               ("vgg16", str(tmp_path / "nope.pt"))]
    missing = W.missing_weights(configs)
    assert [(m.backbone, m.pretrained) for m in missing] == [("resnet50", "imagenet"), ("mobilenet_v1", "cache"),
                                                            ("vgg16", str(tmp_path / "nope.pt"))]
    assert missing[0].url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert missing[2].url is None
    msg = W.format_missing_weights(missing, W.fetch_command(suite="wang2017", profile="paper"))
    assert "2 pretrained checkpoint(s)" in msg and "`cxr-bench weights fetch --suite wang2017 --profile paper`" in msg
    assert "nope.pt does not exist" in msg
    # A cached file satisfies the check (the V2 file for "cache"; "imagenet" means V1 only).
    folder = caches / "torch-hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "resnet50-11ad3fa6.pth").write_bytes(b"")
    assert W.missing_weights([("resnet50", "cache")]) == []
    assert [m.source for m in W.missing_weights([("resnet50", "imagenet")])] == [
        "torchvision:ResNet50_Weights.IMAGENET1K_V1"]


def test_each_registered_checkpoint_is_a_real_published_file():
    for name in BACKBONES.names():
        cfg = PRETRAINED_CFGS[name]
        refs = W.imagenet_weights(name, W._published(name))
        assert refs and {r.source for r in refs} == {cfg.source}
        assert cfg.file in {r.filename for r in refs}, name
    assert "mobilenetv1_100.ra4_e3600_r224_in1k" in timm.list_pretrained("mobilenetv1_100*")


def test_the_readme_table_is_the_registered_checkpoints():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]+)` \([^)]*\) \| `([^`]+)` \| (\d+) \|$", readme, re.M)
    table = {name: (source, file, int(size)) for name, source, file, size in rows}
    assert table == {n: (c.source, c.file, c.input_size) for n, c in PRETRAINED_CFGS.items()}


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_values_name_the_file_and_the_tensor(tmp_path, bad):
    sd = _native_checkpoint("alexnet")
    sd["features.3.weight"][0, 0, 0, 0] = bad
    path = tmp_path / "diverged.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"diverged\.pt: tensor 'features\.3\.weight' .* 1 non-finite value.*"
                                           r"whatever the learning rate"):
        create_model("alexnet", pretrained=path)
    # A NaN in a part the backbone drops (the classifier) is not loaded, so it does not matter.
    sd = _native_checkpoint("alexnet")
    sd["classifier.6.weight"] = torch.full((2,), math.nan)
    torch.save(sd, path)
    create_model("alexnet", pretrained=path)


@pytest.mark.parametrize("header", ["ETag", "X-Linked-Etag"])
def test_a_hub_file_that_is_not_the_announced_one_is_never_cached(caches, header):
    """A mirror announces the real checkpoint's sha256 and serves zeros of the same length: refused, and
    nothing stays in the cache to be found as fetched the next time."""
    from safetensors.torch import save

    torch.manual_seed(7)
    data = save({k: v.contiguous() for k, v in timm.create_model("mobilenetv1_100").state_dict().items()})
    site = rs.Site()
    path = f"/{MOBILENET_REPO}/resolve/main/model.safetensors"
    site.files[path] = bytes(len(data))
    site.headers[path] = {header: f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": "e" * 40,
                          "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
    with rs.serve(site) as base:
        with pytest.raises(WeightsError, match="the hub announced") as err:
            W.fetch_pretrained("mobilenet_v1", mirror=base)
        assert hashlib.sha256(bytes(len(data))).hexdigest() in str(err.value)
        assert [p for p in (caches / "hf").rglob("*") if p.is_file() or p.is_symlink()
                if "blobs" in p.parts or "snapshots" in p.parts] == []
        assert W.missing_weights([("mobilenet_v1", "imagenet")])  # still missing, not "cached"
        # The real file served next time is taken.
        site.files[path] = data
        rec = W.fetch_pretrained("mobilenet_v1", mirror=base)
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["fetched"] is True


def test_every_torchvision_checkpoint_the_suites_use_is_pinned_to_its_published_prefix():
    """The pins agree with the hash prefixes torchvision's own file names carry (independent source)."""
    import torchvision.models as tvm_models

    from cxr_bench.models.backbones import PRETRAINED_CFGS

    for enum in (tvm_models.AlexNet_Weights, tvm_models.GoogLeNet_Weights, tvm_models.VGG16_Weights,
                 tvm_models.ResNet50_Weights, tvm_models.DenseNet121_Weights):
        member = enum.IMAGENET1K_V1
        prefix = member.url.rsplit("-", 1)[-1].split(".")[0]
        pinned = {c.source: c.sha256 for c in PRETRAINED_CFGS.values()}
        assert pinned[f"torchvision:{enum.__name__}.IMAGENET1K_V1"] == prefix
    for name in ("alexnet", "googlenet", "vgg16", "resnet50", "densenet121"):
        ref = W.imagenet_weights(name, W._published(name))[0]
        assert W.expected_sha256(ref) is not None, name
