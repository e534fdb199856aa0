"""``cxr-bench suites``: the shipped suites and how many runs each expands to per profile."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("suites", help="list the shipped suites and their run counts per profile",
                              description=__doc__)
    p.add_argument("suite", nargs="?", help="show one suite (a shipped name or a .toml path) in detail")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list: per suite its file, blocks, and per profile the runs and seeds")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..runner.suite import load_suite, shipped_suites
    from ..utils.text import format_table

    suites = [load_suite(name) for name in ([args.suite] if args.suite else shipped_suites())]
    if args.json:
        print(json.dumps([s.describe() for s in suites], indent=2))
        return 0
    rows = []
    for suite in suites:
        info = suite.describe()
        counts = "; ".join(f"{p['name'] or '-'}: {p['runs']}" for p in info["profiles"])
        blocks = ", ".join(f"{b['name']} ({b['grid_points']})" for b in info["blocks"])
        rows.append([suite.name, counts, blocks, suite.description])
    print(format_table(["suite", "runs per profile", "blocks (grid points)", "description"], rows))
    if args.suite:
        (suite,) = suites
        print(f"\nfile: {suite.path}")
        if suite.imports:
            print(f"imports: {', '.join(suite.imports)}")
        for prof in suite.describe()["profiles"]:
            if prof["name"] is None:
                continue
            data = "needs --data-root" if prof["needs_data_root"] else "bundled sample or --data-root"
            seeds = f", seeds {', '.join(map(str, prof['seeds']))}" if prof["seeds"] else ""
            print(f"profile {prof['name']} ({data}{seeds}): {prof['description']}")
    return 0
