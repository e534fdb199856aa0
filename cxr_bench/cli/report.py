"""``cxr-bench report``: render the report notebooks of a run store to .ipynb and HTML."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..reports.render import DEFAULT_CELL_TIMEOUT, TEMPLATES

    p = subparsers.add_parser(
        "report", help="render the replication, ablation and leaderboard reports as HTML",
        description="Execute the report templates (reports/*.ipynb) with papermill on a kernel pinned to this "
                    "Python, check every cell succeeded, and export HTML with the code hidden. A failing cell "
                    "fails the command and is named. The notebooks only read saved artifacts.",
    )
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store (default runs)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only this suite (default: all)")
    p.add_argument("--out", default="report", metavar="DIR", help="output folder (default report)")
    p.add_argument("--only", action="append", choices=TEMPLATES, default=None, help="render only this report")
    p.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT, metavar="S", help="per-cell timeout")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..reports.render import TEMPLATES, render_reports

    done = render_reports(args.runs, args.out, suite=args.suite, names=tuple(args.only or TEMPLATES),
                          timeout=args.timeout)
    for r in done:
        print(f"{r.name}: {r.html}")
    return 0
