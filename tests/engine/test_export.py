"""`cxr-bench export`: a trained run's model as ONNX and TorchScript, checked against PyTorch on its own test
images, with the input contract beside it."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cxr_bench.cli import main as cli_main
from cxr_bench.engine.export import FORMATS, export_model, export_run, tolerance
from cxr_bench.engine.localize import load_run_model
from cxr_bench.engine.trainer import load_run_data, train_run
from cxr_bench.errors import TrainingError
from cxr_bench.runner.store import ONNX_EXPORT_INFO, read_export_info
from cxr_bench.utils.io import atomic_write_json, sha256_file


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, phantom_root):
    from cxr_bench.config import RunConfig

    d = tmp_path_factory.mktemp("export") / "run"
    cfg = RunConfig.from_dict({
        "data": {"root": str(phantom_root), "label_set": "chestxray8", "image_size": 32, "augment": "none",
                 "workers": 0, "val_fraction": 0.25},
        "model": {"backbone": "timm:test_resnet", "head": "attention"},
        "optim": {"epochs": 1, "batch_size": 8},
        "eval": {"bootstrap": 10, "cost_repeats": 3},
        "device": "cpu",
    })
    train_run(cfg, d, progress=False)
    atomic_write_json(d / "config.json", cfg.to_dict())  # what the runner writes
    return d


def _test_images(run_dir, n):
    cfg, _model, _ = load_run_model(run_dir)
    ds = load_run_data(cfg, progress=False).test
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))]).float() / 255


def test_onnx_export_matches_pytorch_and_writes_its_contract(run_dir, capsys):
    assert cli_main(["export", "--run-dir", str(run_dir), "--check-images", "6"]) == 0
    onnx_path = run_dir / "export" / "model.onnx"
    info = read_export_info(run_dir)
    assert ONNX_EXPORT_INFO == f"export/{FORMATS['onnx']}.json"  # the store reads what the export writes
    assert info is not None and onnx_path.is_file()
    assert info["sha256"] == sha256_file(onnx_path)
    assert info["output"]["labels"][:2] == ["Atelectasis", "Cardiomegaly"] and len(info["output"]["labels"]) == 8
    assert info["input"]["shape"] == ["batch", 1, 32, 32] and info["input"]["channels_inside"] == "replicate"
    assert info["check"]["n_images"] == 6 and info["check"]["max_abs_logit_diff"] <= info["check"]["atol"]
    assert info["latency_cpu"]["batch1_latency_ms"] > 0
    assert "max |logit difference|" in capsys.readouterr().out

    # Independently of the tool's own check: ONNX Runtime on test images against the checkpoint's model,
    # at a batch size the export never saw (the batch axis is dynamic).
    _cfg, model, _ = load_run_model(run_dir)
    x = _test_images(run_dir, 9)
    with torch.inference_mode():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=tolerance(ref), rtol=0)
    # The contract's label order is the model's output order.
    assert info["output"]["labels"] == list(model.targets)


def test_torchscript_export(run_dir):
    res = export_run(run_dir, "torchscript", n_check=4)
    assert res.path.name == "model.ts" and res.latency is None and res.max_abs_diff <= res.atol
    with pytest.warns(FutureWarning):  # deprecated upstream; the file format is what a device loads
        loaded = torch.jit.load(str(res.path))
    _cfg, model, _ = load_run_model(run_dir)
    x = _test_images(run_dir, 3)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), atol=res.atol, rtol=0)
    assert json.loads(res.contract_path.read_text())["format"] == "torchscript"


def test_an_export_that_disagrees_is_not_kept(tmp_path):
    class Flaky(torch.nn.Module):
        """Returns its input's mean plus noise drawn at trace time: the traced graph freezes other noise."""

        def forward(self, x):
            return x.mean(dim=(2, 3)) + torch.rand(x.shape[0], 1)

    path = tmp_path / "model.ts"
    with pytest.raises(TrainingError, match="disagrees with PyTorch"):
        export_model(Flaky(), "torchscript", path, torch.rand(4, 1, 8, 8), contract={}, measure=False)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_export_cli_refuses_bad_input(tmp_path, run_dir, capsys):
    assert cli_main(["export", "--run-dir", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    user = tmp_path / "mine.onnx"
    user.write_text("not ours")
    assert cli_main(["export", "--run-dir", str(run_dir), "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and err.count("\n") == 1
    assert user.read_text() == "not ours"


def test_the_wang2017_heads_lse_pooling_exports(tmp_path):
    """LSE pooling uses expm1, which ONNX lacks: exported as exp(x) - 1 and held to PyTorch's outputs."""
    from cxr_bench.models import create_model

    torch.manual_seed(0)
    model = create_model("timm:test_resnet", head="wang2017", num_labels=3).eval()
    res = export_model(model, "onnx", tmp_path / "m.onnx", torch.rand(5, 1, 64, 64), contract={}, measure=False)
    assert res.max_abs_diff <= res.atol and res.n_checked == 5
