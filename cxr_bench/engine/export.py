"""A trained run's model in the forms devices run: ONNX (ONNX Runtime, TensorRT, Core ML converters) and
TorchScript (PyTorch Mobile / C++), each checked against PyTorch on the run's own test images.

Files, beside each other in ``<run_dir>/export/`` (or where ``out`` says):

- ``model.onnx`` or ``model.ts``: the whole :class:`~cxr_bench.models.CxrModel`, input adaptation included,
  so the contract is simple: a float32 batch ``(B, 1, H, W)`` of gray pixels divided by 255, in [0, 1];
  logits ``(B, L)`` out, one column per label in the run's label order (sigmoid gives probabilities);
- ``model.onnx.json`` / ``model.ts.json``: that input contract (size, channels, normalisation applied inside,
  label order, how the run decoded and resized its images), the check (max |logit difference| on a batch of
  test images and the tolerance it passed), the file's sha256, and for ONNX its ONNX Runtime CPU latency,
  measured like a run's PyTorch cost (engine/cost.py).

The tolerance: fp32 kernels of two runtimes sum in different orders, so logits agree to about 1e-5 relative;
``atol = 1e-4 + 1e-4 * max|logit|`` is the stated bound, and an export outside it is refused (deleted).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, TrainingError
from ..utils.io import atomic_write_json, sha256_file
from .cost import CostSettings, cpu_model_name, latency_summary, time_passes

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "ExportResult", "export_model", "export_run", "onnx_latency", "tolerance"]

FORMATS: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts"}
OPSET = 17


def tolerance(reference: np.ndarray) -> float:
    """The largest |difference| of logits accepted between PyTorch and an export (see the module docstring)."""
    return 1e-4 + 1e-4 * float(np.max(np.abs(reference))) if reference.size else 1e-4


@dataclass
class ExportResult:
    path: Path
    contract_path: Path
    max_abs_diff: float
    atol: float
    n_checked: int
    latency: dict[str, Any] | None


def _expm1(g: Any, x: Any) -> Any:
    # ONNX has no Expm1: exp(x) - 1. The LSE pooling of the wang2017 head uses expm1 on non-positive inputs,
    # where the two agree to float32 rounding; the check against PyTorch below holds the export to that.
    return g.op("Sub", g.op("Exp", x), g.op("Constant", value_t=torch.tensor(1.0, dtype=torch.float32)))


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    # The TorchScript-based exporter needs no extra package (the dynamo exporter needs onnxscript) and
    # handles every registered backbone; its deprecation warnings are about the future, not this file.
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET)


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated upstream; the file format is not
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def _require_onnx() -> None:
    """One line, before any work, when the ``export`` extra is not installed."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"an ONNX export needs {' and '.join(missing)}: pip install 'cxr-bench[export]'")


def _onnx_session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError("checking an ONNX export needs onnxruntime: pip install 'cxr-bench[export]'") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _run_export(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        return np.asarray(_onnx_session(path).run(["logits"], {"image": x})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated upstream, like trace
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(torch.from_numpy(x)).numpy()


def onnx_latency(path: str | os.PathLike, image_size: int, settings: CostSettings | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Batch-1 latency of an ONNX file under ONNX Runtime's CPU provider (median, p90), as engine/cost.py."""
    settings = settings or CostSettings()
    sess = _onnx_session(Path(path))
    x = np.random.default_rng(seed).random((1, 1, image_size, image_size), dtype=np.float32)
    lat = latency_summary(time_passes(lambda: sess.run(["logits"], {"image": x}), settings))
    import onnxruntime as ort

    return {"batch1_latency_ms": lat["median_ms"], "batch1_latency_p90_ms": lat["p90_ms"], "n_timed": lat["n_timed"],
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "threads": sess.get_session_options().intra_op_num_threads or os.cpu_count(),
            "cpu_model": cpu_model_name()}


def export_model(model: torch.nn.Module, fmt: str, path: str | os.PathLike, images: torch.Tensor,
                 *, contract: dict[str, Any], measure: bool = True,
                 settings: CostSettings | None = None) -> ExportResult:
    """Export ``model`` (eval mode, CPU) to ``path`` and check it on ``images`` ((B, 1, H, W) in [0, 1]).

    Writes ``<path>.json`` with ``contract`` plus the check, sha256 and latency. An export whose outputs
    differ from PyTorch's beyond :func:`tolerance` is deleted and raises :class:`TrainingError`.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        _require_onnx()
    model = model.to("cpu").float().eval()
    x = images.to("cpu", torch.float32).contiguous()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        (_export_onnx if fmt == "onnx" else _export_torchscript)(model, x[:1], tmp)
        with torch.inference_mode():
            ref = model(x).numpy()
        got = _run_export(fmt, tmp, x.numpy())
    except (RuntimeError, ValueError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"exporting {path.name} failed ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    atol = tolerance(ref)
    if got.shape != ref.shape or not np.isfinite(diff) or diff > atol:
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"{fmt} export of {path.name} disagrees with PyTorch: max |logit difference| {diff:.3g} "
                            f"> {atol:.3g} on {len(x)} test images; the file was not kept")
    os.replace(tmp, path)
    latency = onnx_latency(path, int(x.shape[-1]), settings) if (measure and fmt == "onnx") else None
    info = {**contract, "format": fmt, "file": path.name, "sha256": sha256_file(path), "opset": OPSET if fmt == "onnx"
            else None, "check": {"n_images": int(len(x)), "max_abs_logit_diff": diff, "atol": atol,
                                 "rule": "atol = 1e-4 + 1e-4 * max|logit|"},
            "latency_cpu": latency, "torch": torch.__version__}
    contract_path = path.with_name(path.name + ".json")
    atomic_write_json(contract_path, info)
    log.debug("%s: max |logit difference| %.2g on %d test images (tolerance %.2g)", path, diff, len(x), atol)
    return ExportResult(path, contract_path, diff, atol, int(len(x)), latency)


def _test_batch(cfg: Any, n: int) -> torch.Tensor:
    """The first ``n`` images of the run's test split, through the run's own decoding and cache, in [0, 1]."""
    from .trainer import load_run_data

    data = load_run_data(cfg, progress=False)
    ds = data.test
    k = min(n, len(ds))
    if k == 0:
        raise ConfigError("the run's test split has no images to check an export on")
    items = [ds[i] for i in range(k)]
    return torch.stack([img for img, _t, _r in items]).float().div_(255.0)


def export_run(run_dir: str | os.PathLike, fmt: str = "onnx", *, out: str | os.PathLike | None = None,
               checkpoint: str = "auto", n_check: int = 16, measure: bool = True,
               settings: CostSettings | None = None) -> ExportResult:
    """Export a finished run's model (``best.pt`` by default) and check it on ``n_check`` of its test images."""
    from .localize import load_run_model

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    cfg, model, ckpt = load_run_model(run_dir, checkpoint=checkpoint, device="cpu")
    images = _test_batch(cfg, n_check)
    d = cfg.data
    labels = list(getattr(model, "targets", None) or [])
    contract = {
        "run_id": run_dir.name, "checkpoint": ckpt.name, "backbone": cfg.model.backbone, "head": cfg.model.head,
        "input": {"shape": ["batch", 1, d.image_size, d.image_size], "dtype": "float32",
                  "pixels": "gray uint8 / 255, in [0, 1]", "image_size": d.image_size, "resize": d.resize,
                  "grayscale": d.grayscale, "channels_inside": d.channels,
                  "normalisation_inside": {k: getattr(model, "input_config", {}).get(k) for k in ("mean", "std")}},
        "output": {"name": "logits", "shape": ["batch", len(labels)], "labels": labels,
                   "probabilities": "sigmoid(logits)"},
    }
    target = Path(out) if out is not None else run_dir / "export" / FORMATS[fmt]
    return export_model(model, fmt, target, images, contract=contract, measure=measure, settings=settings)
