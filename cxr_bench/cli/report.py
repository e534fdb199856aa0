"""``cxr-bench report``: render the report notebooks of a run store to .ipynb and HTML."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..reports.names import DEFAULT_CELL_TIMEOUT, OPTIONAL_TEMPLATES, TEMPLATES

    p = subparsers.add_parser(
        "report", help="render the replication, ablation and leaderboard reports as HTML",
        description="Execute the report templates (reports/*.ipynb) with papermill on a kernel pinned to "
                    "this Python, check every cell succeeded, and export HTML with the code hidden. A "
                    "failing cell fails the command and is named. The notebooks only read saved artifacts. "
                    "Without --out-dir, each suite's reports go where `cxr-bench run` writes them: "
                    "<runs>/<suite>/reports/. A store without a completed run is a warning, exit status 1.",
    )
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="run store, or one suite's directory (the --runs of `cxr-bench run`; default runs)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only this suite (default: every suite)")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="one output folder for every run found (default: <runs>/<suite>/reports/ per suite)")
    p.add_argument("--template", action="append", choices=TEMPLATES + OPTIONAL_TEMPLATES, default=None,
                   help="render only this report template (repeatable; default: all that apply)")
    p.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT, metavar="S", help="per-cell timeout")
    p.add_argument("--force", action="store_true",
                   help="render even the reports whose inputs (template, run store files) are unchanged")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..reports.render import TEMPLATES, render_reports, report_targets
    from ..results.runs import load_runs

    targets = report_targets(args.runs, args.suite, args.out_dir)
    if not targets:
        where = f"{args.runs}" + (f" (suite {args.suite})" if args.suite else "")
        unfinished = len(load_runs(args.runs, args.suite, include_incomplete=True))
        print(f"cxr-bench: warning: no completed run under {where}"
              + (f" ({unfinished} run(s) failed or unfinished)" if unfinished else "")
              + "; no report written. Run a suite first (`cxr-bench run --suite NAME`) or point --runs at "
                "the store it used", file=sys.stderr)
        return 1
    for t in targets:
        for r in render_reports(t.runs_dir, t.out_dir, suite=t.suite, names=tuple(args.template or TEMPLATES),
                                timeout=args.timeout, force=args.force):
            print(f"{r.name}: {r.html}")
    return 0
