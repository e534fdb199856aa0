"""``cxr-bench leaderboard``: one flat CSV row per completed run of a run store, and its companions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard", help="write the leaderboard CSVs of a run store (one row per completed run)",
        description="Read every run under --runs and write one flat row per completed run: status (a run whose "
                    "saved predictions no longer match its metrics.json is listed as damaged), every config "
                    "factor that can differ between runs, mean test AUC with its 95%% CI, one AUC per label, "
                    "cost, provenance, AUC against the Google 2019 expert labels, localization, calibration "
                    "and per-label CIs. Beside it: <name>_agg.csv (one row per configuration over its seeds: "
                    "mean, sd and MLPerf trimmed mean) and <name>_subgroups.csv (AUC by sex, age band and "
                    "view). Without --out, each suite's files go where `cxr-bench run` writes them: "
                    "<runs>/<suite>/leaderboard.csv. Column order, row order and number format are fixed, "
                    "so two leaderboards diff cleanly. Runs that failed or are unfinished are listed on stderr.",
    )
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="run store, or one suite's directory (the --runs of `cxr-bench run`; default runs)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only this suite")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="one CSV for every run found (default: <runs>/<suite>/leaderboard.csv per suite)")
    p.add_argument("--no-expert", action="store_true", help="skip the expert-label columns (left empty)")
    p.add_argument("--json", action="store_true",
                   help="print the runs, the seed aggregate and the files written as JSON instead of a table")
    p.add_argument("--format", choices=("markdown", "latex"), default=None,
                   help="print a table for a paper instead (one row per configuration: mean AUC over seeds [CI], "
                        "seeds; GitHub Markdown, or LaTeX with booktabs)")
    p.set_defaults(func=run)


def _targets(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """(directory to read, file to write) pairs: one per suite directory unless --out names one file."""
    from ..errors import RunStoreError
    from ..results.runs import suite_dirs

    root = Path(args.runs)
    if not root.is_dir():
        raise RunStoreError(f"run store {root} does not exist; pass --runs DIR (the --runs of `cxr-bench run`)")
    if args.out is not None:
        return [(root, args.out)]
    if (root / "config.json").is_file():
        raise RunStoreError(f"{root} is one run's directory; pass --out FILE to write its leaderboard")
    dirs = suite_dirs(root)
    if args.suite is not None:
        dirs = [d for d in dirs if d.name == args.suite or (d == root and len(dirs) == 1)]
    return [(d, str(d / "leaderboard.csv")) for d in dirs]


def _records(df: Any) -> list[dict[str, Any]]:
    import math

    import numpy as np

    def plain(v: Any) -> Any:
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return None
        return v

    return [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def run(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from ..results.leaderboard import build_leaderboard, generalization_path, output_paths, write_leaderboard
    from ..utils.text import text_table

    boards = [(build_leaderboard(src, args.suite, expert=not args.no_expert), out) for src, out in _targets(args)]
    boards = [(lb, out) for lb, out in boards if len(lb.table) or len(lb.failed)]
    not_done = [lb.failed for lb, _ in boards if len(lb.failed)]
    failed = pd.concat(not_done, ignore_index=True) if not_done else None
    if not any(len(lb.table) for lb, _ in boards):
        where = f"{args.runs}" + (f" (suite {args.suite})" if args.suite else "")
        print(f"cxr-bench: warning: no completed run under {where}; nothing written. Run a suite first "
              "(`cxr-bench run --suite NAME`) or point --runs at the store it used", file=sys.stderr)
        if failed is not None and len(failed):
            print(text_table(failed[["suite", "run_id", "status", "error"]], max_colwidth=80), file=sys.stderr)
        if args.json:
            print(json.dumps({"files": [], "runs": [], "aggregate": [], "subgroups": [],
                              "not_completed": _records(failed) if failed is not None else []}, indent=1))
        return 1
    boards = [(lb, out) for lb, out in boards if len(lb.table)]
    written = [(write_leaderboard(lb, out, named=args.out is not None), lb) for lb, out in boards]
    tables = [lb for lb, _ in boards]
    if args.json:
        gen = [str(generalization_path(path)) for path, lb in written
               if lb.generalization is not None and len(lb.generalization)]
        doc = {"files": [str(p) for path, _ in written for p in output_paths(path).values()] + gen,
               "runs": [r for lb in tables for r in _records(lb.table)],
               "aggregate": [r for lb in tables for r in _records(lb.aggregate)],
               "subgroups": [r for lb in tables for r in _records(lb.subgroups)],
               "not_completed": _records(failed) if failed is not None else []}
        print(json.dumps(doc, indent=1))
    elif args.format:
        from ..results.paper_table import leaderboard_tables, render

        print(render([t for lb in tables for t in leaderboard_tables(lb.table)], args.format), end="")
        for path, lb in written:
            print(f"wrote {path} ({len(lb.table)} runs)", file=sys.stderr)
    else:
        for path, lb in written:
            show = lb.table[["suite", "run_id", "status", "run_name", "backbone", "head", "label_set",
                             "freeze_backbone", "seed", "mean_auc", "mean_auc_ci_lo", "mean_auc_ci_hi"]]
            print(text_table(show))
            paths = output_paths(path)
            print(f"wrote {path} ({len(lb.table)} runs), {paths['aggregate'].name} ({len(lb.aggregate)} "
                  f"configurations), {paths['subgroups'].name} ({len(lb.subgroups)} rows)")
            if lb.generalization is not None and len(lb.generalization):
                print(f"wrote {generalization_path(path).name} ({len(lb.generalization)} rows: NIH vs external "
                      "AUC per run, set and label)")
    damaged = pd.concat([lb.damaged for lb in tables if len(lb.damaged)] or [tables[0].damaged])
    if len(damaged):
        print(f"{len(damaged)} damaged run(s), listed without metrics; `cxr-bench run` re-evaluates them:",
              file=sys.stderr)
        print(text_table(damaged[["suite", "run_id", "problem"]], max_colwidth=100), file=sys.stderr)
    if failed is not None and len(failed):
        print(f"{len(failed)} run(s) not completed:", file=sys.stderr)
        print(text_table(failed[["suite", "run_id", "status", "error"]], max_colwidth=80), file=sys.stderr)
    return 0
