"""``cxr-bench export``: a finished run's model as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a finished run's model to ONNX or TorchScript, checked on its test images",
        description="Export the model of one finished run (input adaptation included: a (B, 1, H, W) float "
                    "batch in [0, 1] in, logits out) to ONNX or TorchScript. The export's outputs on a batch of "
                    "the run's test images must equal PyTorch's within 1e-4 + 1e-4 * max|logit|, else nothing is "
                    "kept. The input contract (size, channels, normalisation, label order) is written beside the "
                    "file as FILE.json, with ONNX Runtime's batch-1 CPU latency for ONNX.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", dest="run", required=True, metavar="RUN_DIR", help="a finished run's folder (<runs>/<suite>/<run_id>)")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="export format")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write the model (default: RUN_DIR/export/model.onnx or model.ts)")
    p.add_argument("--checkpoint", default="auto",
                   help="auto (best.pt, else last.pt), a file name in RUN_DIR/checkpoints/, or a path")
    p.add_argument("--check-images", type=int, default=16, metavar="N",
                   help="test images the export is checked on")
    p.add_argument("--no-latency", action="store_true", help="skip ONNX Runtime's latency measurement")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..engine.export import export_run
    from ..errors import ConfigError, RunStoreError
    from ..runner.store import writer_lock

    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise RunStoreError(f"{run_dir}: not a run folder (no config.json); pass --run-dir <runs>/<suite>/<run_id>")
    if args.check_images < 1:
        raise ConfigError(f"--check-images must be at least 1, got {args.check_images}")
    out = Path(args.out) if args.out else None
    if out is not None:
        for p in (out, out.with_name(out.name + ".json")):
            if p.exists() or p.is_symlink():
                raise RunStoreError(f"{p} exists; name a new file (export never writes over a file it did not make)")
    # The run's lock: an export reads the checkpoint another process may be rewriting.
    with writer_lock(run_dir, "cxr-bench export"):
        res = export_run(run_dir, args.format, out=out, checkpoint=args.checkpoint, n_check=args.check_images,
                         measure=not args.no_latency)
    lat = f", ONNX Runtime batch-1 {res.latency['batch1_latency_ms']:.1f} ms" if res.latency else ""
    print(f"{res.path}: max |logit difference| {res.max_abs_diff:.2g} on {res.n_checked} test images "
          f"(tolerance {res.atol:.2g}){lat}")
    print(f"contract: {res.contract_path}")
    return 0
