"""``cxr-bench bench``: run the benchmarks of ``benchmarks/`` and write their CSVs and README table."""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..bench import BENCHMARKS

    names = ", ".join(BENCHMARKS.names())
    p = subparsers.add_parser(
        "bench",
        help="measure throughput, harness overhead and cost; write benchmarks/results/*.csv",
        description=f"Run the benchmark scripts of a source checkout's benchmarks/ ({names}) and write "
                    "their CSVs with the machine description, then refresh the table in benchmarks/README.md. "
                    "Arguments after `--` go to the one benchmark named by --only.",
    )
    p.add_argument("--quick", action="store_true", help="small batches, few iterations, fewer sizes")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default benchmarks/results)")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help=f"run only this benchmark (repeatable): {names}")
    p.add_argument("--benchmarks-dir", default=None, metavar="DIR", help="where the scripts are (default: "
                   "the checkout's benchmarks/)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..bench import run_benchmarks

    extra = list(args.script_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    elif extra:
        raise ConfigError(f"unexpected arguments {' '.join(extra)}; pass script arguments after `--`")
    outcomes = run_benchmarks(quick=args.quick, out_dir=args.out, only=args.only, bench_dir=args.benchmarks_dir,
                              extra_args=extra, readme=not args.no_readme)
    for o in outcomes:
        print(f"{o.name:8s} {o.status:8s} {o.seconds:7.1f} s  {o.message}")
    # A missing script is reported but is not a failure (an installed wheel has no benchmarks/).
    failed = any(o.status == "failed" for o in outcomes) or not any(o.status == "ok" for o in outcomes)
    return 1 if failed else 0
