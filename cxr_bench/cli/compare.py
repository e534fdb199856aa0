"""``cxr-bench compare``: two leaderboards, a leaderboard against a paper, or the paired ablations of a store."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..results.references import REFERENCES

    p = subparsers.add_parser(
        "compare", help="compare two leaderboards, a leaderboard with a paper, or paired ablations",
        description="Three modes. (1) `compare A.csv B.csv`: per run key, B - A of the mean and per-label AUC, "
                    "and the runs found in only one (key = suite, backbone, head, label_set, split, grayscale, "
                    "channels, loss, image_size, seed; or --key run_id). (2) `compare LEADERBOARD.csv --reference "
                    "wang2017`: per label ours vs the paper, the delta and whether the paper's value lies inside "
                    "our 95%% CI (the CIs are leaderboard columns). (3) `compare --ablations --runs DIR`: runs of "
                    "one suite that differ in exactly one factor, with per-label DeLong p-values and paired "
                    "patient-bootstrap CIs from the saved test predictions.",
    )
    p.add_argument("leaderboards", nargs="*", metavar="CSV", help="one or two leaderboard CSVs")
    p.add_argument("--reference", choices=REFERENCES.names(), default=None,
                   help="compare one leaderboard with a paper's table")
    p.add_argument("--key", choices=("config", "run_id"), default="config", help="how rows of A and B are matched")
    p.add_argument("--ablations", action="store_true", help="paired ablations of a run store (needs --runs)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store for --ablations (default runs)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only this suite (--ablations)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (--ablations)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the full result as CSV")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..reports.tables import text_table
    from ..results import compare
    from ..results.leaderboard import read_leaderboard
    from ..results.runs import load_runs
    from ..utils.io import atomic_write_text

    n = len(args.leaderboards)
    if args.ablations:
        if n:
            raise ConfigError("compare --ablations reads the run store (--runs), not leaderboard CSVs")
        table = compare.ablation_table(load_runs(args.runs, args.suite), n_bootstrap=args.bootstrap)
        shown = compare.pair_summary(table)
    elif args.reference:
        if n != 1:
            raise ConfigError(f"compare --reference takes one leaderboard CSV, got {n}")
        table = compare.compare_reference(read_leaderboard(args.leaderboards[0]), args.reference)
        shown = table[["run_id", "backbone", "label_set", "setting", "label", "ours", "ours_ci_lo", "ours_ci_hi",
                       "paper", "delta", "paper_in_ci"]]
    else:
        if n != 2:
            raise ConfigError(f"compare takes two leaderboard CSVs (A B), got {n}; or use --reference / --ablations")
        table = compare.compare_leaderboards(read_leaderboard(args.leaderboards[0]),
                                             read_leaderboard(args.leaderboards[1]), key=args.key)
        shown = table[[c for c in table.columns if not c.startswith("delta_auc_")]]
    print(text_table(shown))
    if args.out:
        atomic_write_text(args.out, table.to_csv(index=False, lineterminator="\n", float_format="%.6g"))
        print(f"wrote {args.out} ({len(table)} rows)")
    return 0
