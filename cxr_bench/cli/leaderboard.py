"""``cxr-bench leaderboard``: one flat CSV row per completed run of a run store."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard", help="write the leaderboard CSV of a run store (one row per completed run)",
        description="Read every run under --runs and write one flat row per completed run: the run's factors, "
                    "mean test AUC with its 95%% CI, one AUC per label, cost, provenance, AUC against the Google "
                    "2019 expert labels, and per-label CIs. Column order, row order and number format are fixed, "
                    "so two leaderboards diff cleanly. Runs that failed or are unfinished are listed on stderr.",
    )
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store (the --out of `cxr-bench run`; default runs)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only this suite")
    p.add_argument("--out", default="leaderboard.csv", metavar="FILE", help="CSV to write (default leaderboard.csv)")
    p.add_argument("--no-expert", action="store_true", help="skip the expert-label columns (left empty)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from ..reports.tables import text_table
    from ..results.leaderboard import build_leaderboard, write_leaderboard

    lb = build_leaderboard(args.runs, args.suite, expert=not args.no_expert)
    path = write_leaderboard(lb.table, args.out)
    show = lb.table[["suite", "run_id", "backbone", "head", "label_set", "grayscale", "mean_auc",
                     "mean_auc_ci_lo", "mean_auc_ci_hi"]]
    print(text_table(show))
    print(f"wrote {path} ({len(lb.table)} runs)")
    if len(lb.failed):
        print(f"{len(lb.failed)} run(s) not completed:", file=sys.stderr)
        print(text_table(lb.failed[["suite", "run_id", "status", "error"]], max_colwidth=80), file=sys.stderr)
    return 0
