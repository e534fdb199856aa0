"""The ``cxr-bench`` command: thin. Each sub-command lives in its own module here and calls one library
function; a module registers itself with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import CxrBenchError

# Sub-command modules, in the order ``cxr-bench --help`` lists them. A module that is not there yet is
# skipped, so the CLI works while the project grows.
COMMAND_MODULES = [
    "run",
    "suites",
    "data",
    "prepare",
    "models",
    "train",
    "leaderboard",
    "compare",
    "report",
    "localize",
    "bench",
]

log = logging.getLogger("cxr_bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-bench",
        description="Reproducible chest X-ray classification benchmark on NIH ChestX-ray14.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * (verbosity + 1)  # default INFO
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        rc = args.func(args)
    except CxrBenchError as e:
        print(f"cxr-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
