"""The ``cxr-bench`` command: thin. Each sub-command lives in its own module here, written one way:

- ``register(subparsers)`` adds the sub-command's parser and sets ``func=run`` (a module with several
  sub-sub-commands, like ``data``, sets ``run_<name>``);
- ``run(args) -> int`` calls one library function and prints its result;
- the module imports nothing heavy at top level (torch, pandas, papermill...): those imports live inside
  ``run``, so ``cxr-bench --help`` is fast and every sub-command works where optional packages (papermill,
  nbformat, nbconvert, submitit, tensorboard) are absent.

Errors a user can cause (:class:`~cxr_bench.errors.CxrBenchError`) and OS errors (a full disk, a path that
is a file) end as one line ``cxr-bench: error: ...`` with exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import NoReturn

from ..errors import CxrBenchError

# Sub-command modules, in the order ``cxr-bench --help`` lists them.
COMMAND_MODULES = [
    "run",
    "suites",
    "data",
    "weights",
    "prepare",
    "models",
    "train",
    "evaluate",
    "leaderboard",
    "compare",
    "report",
    "localize",
    "export",
]

log = logging.getLogger("cxr_bench")

# Third-party loggers that speak at INFO about their own internals during a sweep (papermill's cell
# progress, traitlets' config, the Jupyter kernel): a researcher wants them only with -vv.
_NOISY_LOGGERS = ("papermill", "traitlets", "nbconvert", "jupyter_client", "asyncio", "matplotlib", "PIL",
                  "urllib3", "filelock", "fsspec", "huggingface_hub", "torch.distributed.elastic")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (unless the help already states one), and the docstrings' reST
    markup (``code``, `code`, 95%% written for %-formatting) shown as plain text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (action.option_strings and default not in (None, False, [], argparse.SUPPRESS)
                and "default" not in text.lower() and "%(default)" not in text):
            text += " (default: %(default)s)"
        return text

    def _format_text(self, text: str) -> str:
        return super()._format_text(_plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return _plain(super()._expand_help(action))


def _plain(text: str) -> str:
    """``x`` and `x` as 'x'; a doubled percent sign (argparse's escape, left as is in a description) as one."""
    text = re.sub(r"``([^`]+)``", r"'\1'", text)
    return re.sub(r"`([^`]+)`", r"'\1'", text).replace("%%", "%")


class ArgumentParser(argparse.ArgumentParser):
    """Errors as one line naming the command, with the closest option for a misspelled one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unknown_option_error(parser: argparse.ArgumentParser, argv: list[str], extra: list[str]) -> str:
    """``cxr-bench run: error: unknown option --profiel (did you mean --profile?)`` for the first of ``extra``."""
    sub = parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = next((a for a in argv if a in action.choices), None)
            if name is not None:
                sub = action.choices[name]
    flag = extra[0].split("=", 1)[0]
    known = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    near = difflib.get_close_matches(flag, known, n=2, cutoff=0.6)
    what = "unknown option" if flag.startswith("-") else "unexpected argument"
    hint = f" (did you mean {' or '.join(near)}?)" if near else f" (see {sub.prog} --help)"
    return f"{sub.prog}: error: {what} {extra[0]}{hint}"


def _verbosity_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top-level parser the counts start at 0; on each sub-command they default to SUPPRESS, so
    # `cxr-bench -v run` and `cxr-bench run -v` both work and neither resets the other.
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="less output (warnings and errors only; -qq: errors only)")


def _all_subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _all_subparsers(sub)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = ArgumentParser(
        prog="cxr-bench",
        description="Reproducible chest X-ray classification benchmark on NIH ChestX-ray14.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cxr-bench {__version__}")
    _verbosity_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__).register(sub)
    for p in _all_subparsers(parser):
        _verbosity_flags(p, top=False)
        p.formatter_class = HelpFormatter
    return parser


class _ConsoleFormatter(logging.Formatter):
    """The sweep's own console lines (logger ``cxr_bench.console``) bare; every other record with its time,
    level and logger."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if record.name == "cxr_bench.console" else super().format(record)


class _SweepConsole(logging.Filter):
    """The default console of a sweep: the sweep's own lines and warnings; other INFO records need -v."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == "cxr_bench.console"


@contextlib.contextmanager
def sweep_console(verbosity: int) -> Iterator[None]:
    """During a sweep at the default verbosity: one suite bar, one line per finished run, warnings; the
    engine's bars and INFO lines (epochs, caches, reports) appear with -v and are always in each run's
    log.txt."""
    if verbosity != 0:
        yield
        return
    from ..utils.progress import progress_scope

    quiet = _SweepConsole()
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    for h in handlers:
        h.addFilter(quiet)
    try:
        with progress_scope(nested=False):
            yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def setup_logging(verbosity: int) -> None:
    """INFO by default; -v DEBUG for cxr_bench; -vv DEBUG for everything; -q WARNING; -qq ERROR."""
    level = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(max(verbosity, -2), logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    # The console keeps this level even while a run lowers the root logger to fill its own log.txt.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(level)
            handler.setFormatter(_ConsoleFormatter())
    if verbosity < 2:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
        # Deprecation chatter from the Jupyter stack and setuptools is theirs to fix, not the user's.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # papermill's kernel too
    if os.environ.get("RANK", "0") != "0":  # one voice per torchrun job: other ranks warn and err only
        logging.getLogger().setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        print(_unknown_option_error(parser, argv, extra), file=sys.stderr)
        return 2
    setup_logging(args.verbose - args.quiet)
    try:
        rc = args.func(args)
    except CxrBenchError as e:
        print(f"cxr-bench: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a path that is a file, a permission: the user's to fix, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"cxr-bench: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
