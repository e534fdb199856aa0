"""Plugins: a user's own modules that register components (backbones, heads, losses, grayscale modes) with
the project's registries, imported by name before anything looks a name up.

A suite lists them in ``[suite] imports = ["mypkg.models"]``; the suite copies the list into every run's
config (``RunConfig.imports``), so each process that re-creates a run from its ``config.json`` (a torchrun
rank, a submitit job, ``cxr-bench train`` or ``localize`` later) imports the same modules first.

A module is imported from the Python path (an installed package or ``PYTHONPATH``), never from a suite's
folder: a suite file names code the user has installed, it does not carry any. Names must be dotted
identifiers; standard-library modules and ``__main__`` modules are refused, because no plugin lives there
and some of them act when imported (``antigravity`` opens a browser, ``this`` prints).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable

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


def import_plugins(names: Iterable[str], source: str) -> None:
    """Import each module in ``names`` (already-imported ones are not re-run). Any failure, whatever the
    plugin raised, is one :class:`ConfigError` naming the module and ``source`` (a suite file, a config)."""
    for name in names:
        check_module_name(name, source)
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a plugin's own bug is reported as a one-line error, with its cause
            detail = " ".join(f"{type(e).__name__}: {e}".split())
            hint = (" (is the package installed in this environment, or its folder on PYTHONPATH?)"
                    if isinstance(e, ModuleNotFoundError) else "")
            raise ConfigError(f"{source}: cannot import plugin module {name!r}: {detail[:300]}{hint}") from None
