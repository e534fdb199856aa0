"""Helpers shared by the fault tests of tests/reliability/ (``import reliability_harness as H``; pytest puts
tests/helpers on ``sys.path``, see ``pythonpath`` in pyproject.toml).

Every fault is injected into real components: ``python -m cxr_bench ...`` subprocesses (so SIGKILL hits
a real process and its children), tiny phantom releases, ``timm:test_resnet`` at 32 px, a few steps. No
test waits a fixed time: each polls for the state it needs under a generous deadline.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from small_run import SMALL_RUN, dotted

DEADLINE_S = 300.0  # per wait; the machine may be shared by many jobs

# A run that finishes in seconds on 2 CPU cores: the small run, two steps an epoch.
TINY: dict[str, Any] = {**dotted(SMALL_RUN), "optim.max_steps_per_epoch": 2}
# history.csv / metrics.json fields that measure the machine, not the model.
TIMING_COLUMNS = ("epoch_seconds", "train_images_per_s")
TIMING_KEYS = ("train_images_per_s",)


# ---------------------------------------------------------------------------------------------- processes
def env(**extra: str) -> dict[str, str]:
    """The test process's environment (so $CXR_BENCH_CACHE stays the session's) for one-thread children."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CXR_BENCH_PROGRESS": "0",
            "PYTHONUNBUFFERED": "1", **extra}


def cli(args: Sequence[str], *, cwd: Path | None = None, timeout: float = DEADLINE_S,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m cxr_bench ARGS`` to completion, output captured as text."""
    return subprocess.run([sys.executable, "-m", "cxr_bench", *map(str, args)], cwd=cwd, env=env(**(extra_env or {})),
                          capture_output=True, text=True, timeout=timeout)


def spawn(argv: Sequence[str], *, log: Path, cwd: Path | None = None,
          extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python ARGV`` in its own process group (killed with :func:`kill_group`), output to ``log``."""
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed when the Popen object is collected
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env(**(extra_env or {})),
                            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # A suite started in the background of a non-interactive shell (`make test &`) inherits SIGINT ignored,
    # and Python then never turns it into KeyboardInterrupt: the child gets the default, as a terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (data-loader workers, pool processes)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def wait_for(predicate: Callable[[], Any], proc: subprocess.Popen | None, what: str, *, log: Path | None = None,
             deadline: float = DEADLINE_S, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it is truthy while ``proc`` is alive; fail naming ``what`` otherwise."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------- suites
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is JSON-compatible for these values
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def write_suite(path: Path, name: str, grid: dict[str, list[Any]], base: dict[str, Any] | None = None) -> Path:
    """A one-block suite file: ``TINY`` (+ ``base``) as ``[base]``, ``grid`` as the block's grid."""
    lines = ["[suite]", f"name = {toml_value(name)}", "", "[base]"]
    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in {**TINY, **(base or {})}.items()]
    lines += ["", "[[block]]", 'name = "main"',
              "grid = { " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in grid.items()) + " }", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def config_dict(root: Path, **overrides: Any) -> dict[str, Any]:
    """A RunConfig dict: ``TINY`` with ``data.root`` and dotted ``overrides``."""
    from cxr_bench.config import RunConfig

    return RunConfig.from_dict({}).replace(**{**TINY, "data.root": str(root), **overrides}).to_dict()


# ---------------------------------------------------------------------------------------------- files
def strict_json(path: Path) -> Any:
    """Parse ``path`` as RFC 8259 JSON: NaN / Infinity tokens (which json.dumps writes by default) fail."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{path}: non-standard JSON token {token}")

    with open(path, encoding="utf-8") as fh:
        return json.load(fh, parse_constant=refuse)


def check_files_parse(root: Path) -> tuple[int, int]:
    """Every ``*.json`` under ``root`` parses strictly and every ``*.csv`` parses with a constant width;
    no temporary file of an atomic write is left. Returns (json files, csv files)."""
    n_json = n_csv = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "submitit" in path.parts:
            continue
        assert not (path.name.startswith(".") and path.name.endswith(".tmp")), f"torn temp file {path}"
        if path.suffix == ".json":
            strict_json(path)
            n_json += 1
        elif path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            assert rows, f"{path} is empty"
            assert len({len(r) for r in rows}) == 1, f"{path}: ragged rows"
            n_csv += 1
    return n_json, n_csv


def comparable_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json without the throughput field (machine speed, not a result)."""
    m = strict_json(run_dir / "metrics.json")
    return {k: v for k, v in m.items() if k not in TIMING_KEYS}


def comparable_history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv").drop(columns=list(TIMING_COLUMNS))


def run_dirs(store: Path) -> dict[str, Path]:
    """run id -> directory of every run of a suite folder."""
    return {p.name: p for p in sorted(store.iterdir()) if p.is_dir() and (p / "config.json").is_file()}


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---------------------------------------------------------------------------------------------- filesystems
@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A real, small filesystem (tmpfs) mounted at ``where`` for the block; skips the test where this
    process may not mount (mounting needs root and a kernel that allows it)."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
