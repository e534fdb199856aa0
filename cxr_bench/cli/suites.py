"""``cxr-bench suites``: the shipped suites and how many runs each expands to per profile."""

from __future__ import annotations

import argparse

from ..runner.sweep import format_table
from ..runner.suite import load_suite, shipped_suites


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("suites", help="list the shipped suites and their run counts per profile",
                              description=__doc__)
    p.add_argument("suite", nargs="?", help="show one suite (a shipped name or a .toml path) in detail")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    names = [args.suite] if args.suite else shipped_suites()
    rows = []
    for name in names:
        suite = load_suite(name)
        counts = [f"{p}: {len(suite.expand(p))}" for p in suite.profiles] or [f"-: {len(suite.expand(None))}"]
        blocks = ", ".join(f"{b.name} ({len(b.points())})" for b in suite.blocks)
        rows.append([suite.name, "; ".join(counts), blocks, suite.description])
    print(format_table(["suite", "runs per profile", "blocks (grid points)", "description"], rows))
    if args.suite:
        suite = load_suite(args.suite)
        print(f"\nfile: {suite.path}")
        for prof in suite.profiles.values():
            data = "needs --data-root" if prof.needs_data_root else "bundled sample or --data-root"
            print(f"profile {prof.name} ({data}): {prof.description}")
    return 0
