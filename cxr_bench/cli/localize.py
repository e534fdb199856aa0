"""``cxr-bench localize``: heatmaps of a trained run -> boxes -> accuracy and AFP beside Wang et al. Table 4."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "localize",
        help="score a trained run's heatmaps against BBox_List_2017 (Wang et al. 2017, Table 4)",
        description="Weakly-supervised localization of one finished run: per-label heatmaps on the images "
                    "with ground-truth boxes, boxes at thresholds 60/180 of the [0,255] map, accuracy and "
                    "average false positives at T(IoBB) and T(IoU). Writes RUN_DIR/localization.csv, "
                    "localization.json, localization_boxes.csv and figures/localization.png.",
    )
    p.add_argument("--run-dir", required=True, metavar="DIR", help="a run directory (<out>/<suite>/<run_id>/)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="NIH release folder (default: the run's data.root; the bundled sample if it had none)")
    p.add_argument("--out", default=None, metavar="FILE", help="table path (default RUN_DIR/localization.csv)")
    p.add_argument("--checkpoint", default="auto",
                   help="auto (best.pt, else last.pt), a file name in RUN_DIR/checkpoints/, or a path")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's eval.batch_size")
    p.add_argument("--figure-images", type=int, default=4, metavar="N", help="images in the figure (0: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..engine.localize import localize_run
    from ..errors import ConfigError, RunStoreError
    from ..results.localization import localization_report_table
    from ..runner.store import writer_lock

    if not (Path(args.run_dir) / "config.json").is_file():
        raise RunStoreError(f"{args.run_dir}: not a run folder (no config.json); pass --run-dir <runs>/<suite>/<run_id>")
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() == ".json":
            raise ConfigError(f"--out {out}: the table is a CSV; its summary is written beside it as {out.stem}.json")
        for extra in (out.with_suffix(".json"), out.with_name(f"{out.stem}_boxes.csv")):
            if extra.exists() or extra.is_symlink():
                raise RunStoreError(f"{extra} exists: --out {out.name} also writes {extra.name}, and a file the user "
                                    "did not name is never replaced; move it away or choose another --out")
    # The figure always goes into the run's own folder: take its lock like every writer of a run.
    with writer_lock(args.run_dir, "cxr-bench localize"):
        res = localize_run(args.run_dir, data_root=args.data_root, out=args.out, checkpoint=args.checkpoint,
                           device=args.device, batch_size=args.batch_size, n_figure=args.figure_images,
                           progress=False if args.no_progress else None)
    s = res.summary
    print(f"{s['backbone']}/{s['head']} ({s['run_id']}): {s['n_boxes']} boxes on {s['n_images']} images")
    wide = localization_report_table(res.csv_path.parent) if args.out is None else None
    if wide is not None:
        print("accuracy at T(IoBB), ours beside Wang et al. 2017 Table 4 (ResNet-50):")
        print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    for key in ("table", "detections", "figure"):
        if s.get(key):
            print(f"{key}: {s[key]}")
    return 0
