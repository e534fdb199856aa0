"""Whole-model weights (backbone + head) from the two layouts ``cxr-bench evaluate --weights`` accepts.

The expected logits come from the plain torchvision network itself (replicated gray input normalised with
the ImageNet statistics, the input a CxrModel feeds its backbone), never from cxr-bench code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from cxr_bench.errors import WeightsError
from cxr_bench.models import create_model
from cxr_bench.models.model_weights import load_model_weights

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _torchvision_resnet18(n: int = 5) -> torch.nn.Module:
    torch.manual_seed(3)
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Linear(512, n)
    return net.eval()


def test_native_torchvision_state_dict_gives_the_networks_logits(tmp_path: Path):
    net = _torchvision_resnet18()
    path = tmp_path / "tv.pt"
    torch.save(net.state_dict(), path)
    model = create_model("timm:resnet18", head="gap", num_labels=5)
    info = load_model_weights(model, path)
    assert info["layout"] == "native" and len(info["sha256"]) == 64
    x = torch.rand(2, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net((x.expand(-1, 3, -1, -1) - MEAN) / STD)
        assert torch.allclose(model.eval()(x), expected, atol=1e-5)


def test_cxr_bench_layout_any_head(tmp_path: Path):
    torch.manual_seed(0)
    src = create_model("timm:test_resnet", head="wang2017", num_labels=3).eval()
    path = tmp_path / "whole.pt"
    torch.save({"model": src.state_dict()}, path)  # a wrapped save, as a run's best.pt holds it
    torch.manual_seed(1)
    dst = create_model("timm:test_resnet", head="wang2017", num_labels=3).eval()
    assert load_model_weights(dst, path)["layout"] == "cxr-bench"
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize("case, needle", [
    ("head", "maps onto the 'gap' head only"),
    ("labels", "classifier fc.weight has shape (5, 512)"),
    ("no_classifier", "expected one linear classifier"),
    ("extra_key", "belong to neither"),
])
def test_native_mismatches_are_one_line(tmp_path: Path, case: str, needle: str):
    sd = _torchvision_resnet18().state_dict()
    head, n = "gap", 5
    if case == "head":
        head = "wang2017"
    elif case == "labels":
        n = 14
    elif case == "no_classifier":
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    else:
        sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "tv.pt"
    torch.save(sd, path)
    model = create_model("timm:resnet18", head=head, num_labels=n)
    with pytest.raises(WeightsError) as e:
        load_model_weights(model, path)
    assert needle in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_cxr_bench_layout_with_another_head_is_refused(tmp_path: Path):
    path = tmp_path / "whole.pt"
    torch.save(create_model("timm:test_resnet", head="wang2017", num_labels=3).state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit timm:test_resnet \\+ head 'gap'.*unexpected key"):
        load_model_weights(create_model("timm:test_resnet", head="gap", num_labels=3), path)
