"""``cxr-bench compare``: two leaderboards, a leaderboard against a paper, or the paired ablations of a store."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..results.references import REFERENCES

    p = subparsers.add_parser(
        "compare", help="compare two leaderboards, a leaderboard with a paper, or paired ablations",
        description="Three modes. (1) `compare A.csv B.csv`: per configuration (suite + every factor column; "
                    "or --key run_id), B - A of the mean and per-label AUC, and the runs found in only one. "
                    "(2) `compare LEADERBOARD.csv --reference wang2017`: runs differing only in seed form one "
                    "configuration; per label ours (seed mean) minus the paper with an interval that includes "
                    "seed variance (no verdict with 1 seed), and `comparable` only when profile, head, loss, "
                    "split, label set, image size and weights all match the paper's (else `why_not`). "
                    "(3) `compare --ablations --runs DIR`: configurations of one suite that differ in exactly "
                    "one factor, per label: paired patient-bootstrap CI and p, Obuchowski's clustered p, both "
                    "Holm-adjusted across labels, a verdict from the adjusted bootstrap p, and image-level DeLong "
                    "for contrast. Tables from the bundled sample carry a not-comparable banner, also in --out.",
    )
    p.add_argument("leaderboards", nargs="*", metavar="CSV", help="one or two leaderboard CSVs")
    p.add_argument("--reference", choices=REFERENCES.names(), default=None,
                   help="compare one leaderboard with a paper's table")
    p.add_argument("--key", choices=("config", "run_id"), default="config", help="how rows of A and B are matched")
    p.add_argument("--ablations", action="store_true", help="paired ablations of a run store (needs --runs)")
    p.add_argument("--pair", nargs=2, metavar=("A", "B"), default=None,
                   help="two runs of --runs scored on the same test images (run id, suite/run_id, or a run name: "
                        "all its seeds): B - A per label, paired by patient, as for --ablations")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store for --ablations and --pair (default runs)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only this suite (--ablations)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (--ablations)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (--ablations; default 0)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise error rate of the Holm-adjusted verdicts (--ablations; default 0.05)")
    p.add_argument("--multiplicity", choices=("pair", "holm", "bh"), default="pair",
                   help="--ablations: which tests one error rate covers: pair (Holm over each pair's labels; "
                        "default), holm (Holm over every label of every pair: suite-wide family-wise error rate) "
                        "or bh (Benjamini-Hochberg over the same: suite-wide false discovery rate)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the full result as CSV (banner included)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of tables")
    p.add_argument("--format", choices=("markdown", "latex"), default=None,
                   help="print a table for a paper instead (--reference: per label ours [CI], paper, difference "
                        "[CI], seeds, not-comparable reasons as footnotes; --pair / --ablations: one row per pair)")
    p.set_defaults(func=_run)


ABLATION_SHOWN = ("factor", "value_a", "value_b", "seeds_a", "seeds_b", "label", "delta", "ci_lo", "ci_hi",
                  "p_bootstrap", "p_bootstrap_holm", "p_clustered", "p_clustered_holm", "p_delong_image_level",
                  "p_suite", "family", "verdict")
REFERENCE_SHOWN = ("run_id", "n_seeds", "backbone", "label_set", "setting", "label", "ours", "ours_ci_lo",
                   "ours_ci_hi", "paper", "delta", "delta_ci_lo", "delta_ci_hi", "verdict", "comparable")


def _run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..results import compare
    from ..results.leaderboard import read_leaderboard
    from ..results.runs import load_runs
    from ..utils.text import text_table

    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.bootstrap < 2:
        raise ConfigError(f"--bootstrap must be at least 2, got {args.bootstrap}")
    n = len(args.leaderboards)
    extra: dict[str, object] = {}
    if args.pair:
        if n or args.ablations or args.reference:
            raise ConfigError("compare --pair A B reads two runs of the run store (--runs), nothing else")
        table = compare.paired_runs(load_runs(args.runs, args.suite), *args.pair, n_bootstrap=args.bootstrap,
                                    seed=args.seed, alpha=args.alpha)
        summary = compare.pair_summary(table)
        shown = [("pair (mean AUC over labels)", summary), ("per label", table[list(ABLATION_SHOWN)])]
        extra = {"summary": summary}
    elif args.ablations:
        if n:
            raise ConfigError("compare --ablations reads the run store (--runs), not leaderboard CSVs")
        table = compare.ablation_table(load_runs(args.runs, args.suite), n_bootstrap=args.bootstrap, seed=args.seed,
                                       alpha=args.alpha, multiplicity=args.multiplicity)
        summary = compare.pair_summary(table)
        shown = [("pairs (mean AUC over labels)", summary), ("per label", table[list(ABLATION_SHOWN)])]
        extra = {"summary": summary}
    elif args.reference:
        if n != 1:
            raise ConfigError(f"compare --reference takes one leaderboard CSV, got {n}")
        table = compare.compare_reference(read_leaderboard(args.leaderboards[0]), args.reference)
        why = table.drop_duplicates("run_id")[["run_id", "comparable", "why_not"]]
        shown = [("ours vs paper", table[list(REFERENCE_SHOWN)]), ("protocol", why)]
    else:
        if n != 2:
            raise ConfigError(f"compare takes two leaderboard CSVs (A B), got {n}; or use --reference / --ablations")
        table = compare.compare_leaderboards(read_leaderboard(args.leaderboards[0]),
                                             read_leaderboard(args.leaderboards[1]), key=args.key)
        shown = [("", table[[c for c in table.columns if not c.startswith("delta_auc_")]])]
    if args.format:
        from ..results import paper_table

        if args.reference:
            tables = paper_table.reference_tables(table)
        elif "summary" in extra:
            tables = paper_table.pair_tables(extra["summary"])
        else:
            raise ConfigError("--format makes a paper table of --reference, --pair or --ablations, not of A B")
        print(paper_table.render(tables, args.format), end="")
    elif args.json:
        print(compare.comparison_json({"table": table, **extra}), end="")
    else:
        for line in compare.banner(table):
            print(f"# {line}")
        for title, df in shown:
            if title:
                print(f"\n{title}:")
            print(text_table(df))
    if args.out:
        compare.write_comparison_csv(table, args.out)
        if not args.json and not args.format:
            print(f"wrote {args.out} ({len(table)} rows)")
    return 0
