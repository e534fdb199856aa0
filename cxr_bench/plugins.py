"""Plugins: a user's own modules that register components (backbones, heads, losses, grayscale modes) with
the project's registries, imported by name before anything looks a name up.

A suite lists them in ``[suite] imports = ["mypkg.models"]``; the suite copies the list into every run's
config (``RunConfig.imports``), so each process that re-creates a run from its ``config.json`` (a torchrun
rank, a submitit job, ``cxr-bench train`` or ``localize`` later) imports the same modules first.

A module is imported from the Python path (an installed package or ``PYTHONPATH``), never from a suite's
folder or the working directory: a suite file names code the user has installed, it does not carry any.
``python -m cxr_bench`` (and ``-c``) put the working directory first on ``sys.path``, so the import runs
with a search path without it, without ``''`` and without the suite's folder, whatever the entry point; a
folder listed in ``PYTHONPATH`` by name is kept (the user chose it). Names must be dotted
identifiers; standard-library modules and ``__main__`` modules are refused, because no plugin lives there
and some of them act when imported (``antigravity`` opens a browser, ``this`` prints).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterable, Iterator

from .errors import ConfigError

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def check_module_name(name: object, source: str) -> str:
    """``name`` if it may be imported as a plugin; otherwise a :class:`ConfigError` naming ``source``."""
    if not isinstance(name, str) or not _MODULE.fullmatch(name) or len(name) > 200:
        raise ConfigError(f"{source}: {name!r} is not a module name (dotted identifiers, e.g. 'mypkg.models')")
    parts = name.split(".")
    if "__main__" in parts:
        raise ConfigError(f"{source}: {name!r} is a __main__ module (it runs a program when imported); name "
                          "the module that registers your components")
    if parts[0] in sys.stdlib_module_names:
        raise ConfigError(f"{source}: {name!r} is a standard-library module, not a plugin; name the module "
                          "of your package that registers your components")
    return name


def plugin_search_path(beside: str | os.PathLike | None = None) -> list[str]:
    """``sys.path`` without the entries a plugin must not come from: ``''``/``.``, the working directory and
    ``beside`` (a suite's folder), unless ``PYTHONPATH`` names that folder explicitly."""
    explicit = {os.path.realpath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    banned = {os.path.realpath(os.getcwd())}
    if beside is not None:
        banned.add(os.path.realpath(beside))
    out = []
    for entry in sys.path:
        if entry in ("", "."):
            continue
        real = os.path.realpath(entry)
        if real in banned and real not in explicit:
            continue
        out.append(entry)
    return out


@contextlib.contextmanager
def _search_path(path: list[str]) -> Iterator[None]:
    saved = sys.path[:]
    sys.path[:] = path
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved


def import_plugins(names: Iterable[str], source: str, *, beside: str | os.PathLike | None = None) -> None:
    """Import each module in ``names`` (already-imported ones are not re-run) from the installed modules
    only (:func:`plugin_search_path`; ``beside``: the suite file's folder). Any failure, whatever the plugin
    raised, is one :class:`ConfigError` naming the module and ``source`` (a suite file, a config)."""
    for name in names:
        check_module_name(name, source)
        if name in sys.modules:
            continue
        try:
            with _search_path(plugin_search_path(beside)):
                importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a plugin's own bug is reported as a one-line error, with its cause
            detail = " ".join(f"{type(e).__name__}: {e}".split())
            hint = (" (is the package installed in this environment, or its folder on PYTHONPATH?)"
                    if isinstance(e, ModuleNotFoundError) else "")
            raise ConfigError(f"{source}: cannot import plugin module {name!r}: {detail[:300]}{hint}") from None
