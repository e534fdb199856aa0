"""The run store: where every run of every suite lives, and the record of what happened to it.

Layout (``<out>`` is ``cxr-bench run --runs``, default ``./runs``)::

    <out>/<suite>/<run_id>/
        config.json      the whole resolved RunConfig (RunConfig.to_dict())
        manifest.json    provenance, suite blocks and ablation pairs, attempts, status, error: the one
                         record of a run's state (a single atomic file, so it cannot disagree with itself)
        log.txt          the run's log (every attempt, appended)
        .lock            held (flock) by the one process running the run
        history.csv, checkpoints/, predictions/, metrics.json   written by the engine
    <out>/<suite>/plan-<profile>.json   the expanded suite (runs, blocks, pairs) of the last sweep
    <out>/<suite>/submitit/             submitit job folders (--launcher submitit)

A run id is :meth:`RunConfig.run_id` (12 hex digits); suite names come from suite files. Both are
checked against ``[A-Za-z0-9_.-]+`` (no ``..``) before they touch a path, so neither can escape the store.
Every file is written atomically, and a run is only ever changed by the process that holds its lock, so
two ``cxr-bench run`` processes on one store never run the same run twice or tear a file.

This module owns the layout and the :class:`Status` values; the writers (the runner) and the readers
(:mod:`cxr_bench.results.runs`) both go through :class:`RunDir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import filelock

from ..config import RunConfig
from ..engine.artifacts import COST_FILE
from ..errors import RunStoreError, errno_suffix
from ..utils.clock import utc_now
from ..utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)


class Status(StrEnum):
    """A run's state, as written in its manifest."""

    PENDING = "pending"  # never started
    RUNNING = "running"  # running now, or interrupted (lock free): the next sweep resumes it
    COMPLETED = "completed"
    FAILED = "failed"


_SAFE = re.compile(r"[A-Za-z0-9_.-]+")
MANIFEST_VERSION = 1


class RunLocked(RunStoreError):
    """Another process holds the run's lock (it is running the run right now)."""


def validate_name(name: str, what: str = "name") -> str:
    """``name`` if it is safe as one path component (``[A-Za-z0-9_.-]+``, not ``.``/``..``, no ``..``)."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or ".." in name or name == ".":
        raise RunStoreError(
            f"{what} {name!r} is not allowed: use letters, digits, '_', '.', '-' only (no path separators, "
            "no '..'), so it cannot point outside the run store"
        )
    return name


def read_json_object(path: str | os.PathLike) -> dict[str, Any] | None:
    """A run-store JSON file as a dict; ``None`` if it does not exist; a one-line error if it is damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:
        raise RunStoreError(f"{path}: unreadable JSON ({e}); delete the run directory to redo the run") from None
    if not isinstance(obj, dict):
        raise RunStoreError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


# What each manifest field must be, where present (a hand-edited or half-copied manifest is found on read,
# not by a traceback three layers up).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "manifest_version": (int,), "run_id": (str,), "status": (str,), "name": (str, type(None)),
    "attempts": (list,), "artifacts": (dict,), "error": (dict, str, type(None)), "result": (dict, type(None)),
    "suite": (dict, str, type(None)), "data": (dict, type(None)), "launcher": (dict, type(None)),
    "wall_seconds": (int, float, type(None)), "total_wall_seconds": (int, float, type(None)),
    "pid": (int, type(None)), "hostname": (str, type(None)), "created_at": (str, type(None)),
    "started_at": (str, type(None)), "ended_at": (str, type(None)), "updated_at": (str, type(None)),
    "cache_key": (str, type(None)), "seed": (int, type(None)),
}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def validate_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """``manifest`` if every field the tool reads has its type; else a one-line :class:`RunStoreError` naming
    the file and key (the run is then reported as damaged and evaluated again, the others go on)."""

    def bad(key: str, what: str) -> RunStoreError:
        return RunStoreError(f"{path}: {key} {what}; the manifest is damaged (edited by hand?): `cxr-bench run` "
                             "sets it aside and evaluates the run again")

    for key, types in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if key in manifest and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
            raise bad(repr(key), f"is a {type(value).__name__}, expected {' or '.join(t.__name__ for t in types)}")
    status = manifest.get("status", Status.PENDING)
    if status not in set(Status):
        raise bad("'status'", f"is {status!r}, not one of {', '.join(Status)}")
    for i, attempt in enumerate(manifest.get("attempts") or []):
        if not isinstance(attempt, dict):
            raise bad(f"'attempts'[{i}]", f"is a {type(attempt).__name__}, expected an object")
    for rel, rec in (manifest.get("artifacts") or {}).items():
        if rel not in ARTIFACTS + DERIVED_ARTIFACTS and not _is_external_artifact(rel):
            raise bad(f"'artifacts'[{rel!r}]", f"is not one of the run's artifacts ({', '.join(ARTIFACTS + DERIVED_ARTIFACTS)}, "
                      f"{EXTERNAL_DIR}/<dataset>/{{{','.join(EXTERNAL_FILES)}}})")
        if not (isinstance(rec, dict) and isinstance(rec.get("sha256"), str) and _SHA256_HEX.fullmatch(rec["sha256"])
                and all(isinstance(rec.get(k), int) and not isinstance(rec.get(k), bool)
                        for k in ("bytes", "rows") if k in rec)):
            raise bad(f"'artifacts'[{rel!r}]", "is not a {sha256, bytes, rows} record")
    return manifest


def evaluated_run_id(config: RunConfig, scored: dict[str, Any]) -> str:
    """The id of a run made by ``cxr-bench evaluate``: its config and what it scored (the files' sha256), so
    scoring the same file again finds the same run and another file makes another run. The manifest keeps
    ``scored`` (``evaluated.scored``), so the id can be checked against the folder like a trained run's."""
    blob = json.dumps({"config": config.identity_dict(), "scored": scored}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_own_folder(run_dir: str | os.PathLike, config: RunConfig | None,
                     manifest: dict[str, Any] | None) -> None:
    """A run's folder must be its own: not a link (to another run's folder), and, for a run the runner
    made (it has a manifest), the manifest's and the config's run id are the folder's name."""
    path = Path(run_dir)
    if path.is_symlink():
        raise RunStoreError(f"{path} is a symbolic link (to {os.readlink(path)}); a run's folder must be its "
                            "own, not another run's: replace the link by a copy or remove it")
    if not manifest:
        return
    if manifest.get("run_id") not in (None, path.name):
        raise RunStoreError(f"{path}: its manifest is of run {manifest.get('run_id')!r}, not {path.name!r} (a "
                            "folder renamed or copied over another run's?); move it back or remove it")
    if config is not None:
        scored = manifest.get("evaluated", {}).get("scored") if isinstance(manifest.get("evaluated"), dict) else None
        run_id = evaluated_run_id(config, scored) if isinstance(scored, dict) else config.run_id()
        if run_id != path.name:
            raise RunStoreError(f"{path / 'config.json'} is the config of run {run_id}, not {path.name!r} (edited "
                                "or copied from another run?); `cxr-bench run` writes it again")


def set_aside_damaged_manifest(rd: RunDir) -> str | None:
    """With the run's lock held: a manifest that fails :func:`validate_manifest` is renamed to
    ``manifest.damaged.json`` (kept for a person to read) so the run is evaluated again from its files
    and checkpoints; returns why, or None when the manifest is sound."""
    try:
        rd.manifest()
    except RunStoreError as e:
        aside = rd.path / "manifest.damaged.json"
        os.replace(rd.manifest_path, aside)
        return f"{e} (kept as {aside.name})"
    return None


# A process that writes into a run directory takes its lock, unless its parent holds it for it (the
# runner's torchrun ranks: it names the run directory in this variable).
LOCK_HELD_ENV = "CXR_BENCH_RUN_LOCK_HELD"


@contextlib.contextmanager
def writer_lock(run_dir: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``run_dir``'s lock while ``command`` writes into it, or raise a one-line :class:`RunLocked`.
    Ranks > 0 of a torchrun job and the ranks the runner starts (:data:`LOCK_HELD_ENV`) rely on the lock
    rank 0 / the runner holds."""
    path = Path(run_dir)
    held = os.environ.get(LOCK_HELD_ENV)
    if (held and os.path.realpath(held) == os.path.realpath(path)) or int(os.environ.get("RANK", "0") or 0) > 0:
        yield
        return
    rd = RunDir(path, path.name)
    try:
        with rd.lock():
            yield
    except RunLocked:
        holder = {}
        with contextlib.suppress(RunStoreError):
            holder = rd.manifest()
        raise RunLocked(f"{command}: run directory {path} is being written by another process (pid "
                        f"{holder.get('pid', '?')} on {holder.get('hostname', '?')}, e.g. `cxr-bench run`); wait "
                        f"for it to finish. If no such process exists, remove {rd.lock_path}") from None


# The files a completed run's numbers stand on; their sha256 and row counts go into the manifest when the run
# completes, so a later reader can tell an intact run from one whose files were cut or replaced.
ARTIFACTS = ("predictions/test.csv", "predictions/val.csv", "metrics.json")
# Recorded with the artifacts but derived from them (the test predictions' bootstrap replicates, written by
# metrics.extended.score_run): a reader uses one only while its hash is the recorded one, and a missing or
# changed one never makes the run damaged (the comparisons then compute the replicates again).
DERIVED_ARTIFACTS = ("predictions/test.replicates.npz",)
# Scores of the run on an external test set: ``external/<dataset>/{metrics.json,predictions.csv}``.
ONNX_EXPORT_INFO = "export/model.onnx.json"


def read_cost(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's ``cost.json``, or None when it was not measured (or is unreadable)."""
    return read_json_object(Path(run_dir) / COST_FILE)


def read_export_info(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The contract of a run's ONNX export (``export/model.onnx.json``), or None when it was never exported."""
    return read_json_object(Path(run_dir) / ONNX_EXPORT_INFO)


EXTERNAL_DIR = "external"
EXTERNAL_FILES = ("predictions.csv", "metrics.json")


def _is_external_artifact(rel: str) -> bool:
    """``external/<dataset>/<file>`` with a safe dataset name and one of :data:`EXTERNAL_FILES`."""
    parts = rel.split("/")
    return (len(parts) == 3 and parts[0] == EXTERNAL_DIR and bool(_SAFE.fullmatch(parts[1])) and ".." not in parts[1]
            and parts[2] in EXTERNAL_FILES)


def external_artifacts(run_dir: str | os.PathLike) -> tuple[str, ...]:
    """The external-set files present in the run directory, as paths relative to it."""
    base = Path(run_dir) / EXTERNAL_DIR
    if not base.is_dir():
        return ()
    return tuple(f"{EXTERNAL_DIR}/{d.name}/{f}" for d in sorted(base.iterdir())
                 if d.is_dir() and _SAFE.fullmatch(d.name) for f in EXTERNAL_FILES if (d / f).is_file())


def artifact_record(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes", "rows"}}`` of the run's :data:`ARTIFACTS`, :data:`DERIVED_ARTIFACTS`
    and external-set files that exist."""
    from ..utils.io import sha256_file

    out = {}
    for rel in ARTIFACTS + DERIVED_ARTIFACTS + external_artifacts(run_dir):
        path = Path(run_dir) / rel
        if path.is_file():
            rec: dict[str, Any] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            if rel.endswith(".csv"):
                rec["rows"] = max(_count_lines(path) - 1, 0)  # minus the header
            out[rel] = rec
    return out


def _count_lines(path: Path) -> int:
    """Lines of a file as iterating over it counts them (a last line without a newline counts too)."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def verify_artifacts(run_dir: str | os.PathLike) -> list[str]:
    """What is wrong with a completed run's files, one phrase each; empty when they are intact.

    The record written at completion (manifest ``artifacts``) is the reference: each file must exist with the
    same sha256. A completed run without that record cannot be checked, which is a problem of its own.
    """
    run_dir = Path(run_dir)
    manifest = read_json_object(run_dir / "manifest.json") or {}
    recorded = manifest.get("artifacts")
    if not isinstance(recorded, dict) or not recorded:
        return ["manifest.json has no record of the run's files (sha256), so they cannot be checked"]
    current = artifact_record(run_dir)
    problems = []
    for rel, rec in sorted(recorded.items()):
        if rel in DERIVED_ARTIFACTS:
            continue
        now = current.get(rel)
        if now is None:
            problems.append(f"{rel} is missing")
        elif now["sha256"] != rec.get("sha256"):
            detail = (f"{now.get('rows')} rows, {rec.get('rows')} when written" if now.get("rows") != rec.get("rows")
                      else "same row count, other content")
            problems.append(f"{rel} changed since the run completed ({detail})")
    return problems


@dataclass
class Attempt:
    """A started attempt: the manifest being written and the monotonic clock at its start."""

    manifest: dict[str, Any]
    t0: float
    cpu0: float = 0.0


class RunDir:
    """One run's directory: file names, manifest and status transitions, log file, lock."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id

    config_path = property(lambda self: self.path / "config.json")
    manifest_path = property(lambda self: self.path / "manifest.json")
    log_path = property(lambda self: self.path / "log.txt")
    lock_path = property(lambda self: self.path / ".lock")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    metrics_path = property(lambda self: self.path / "metrics.json")

    # ------------------------------------------------------------------ reading
    def manifest(self) -> dict[str, Any]:
        """The manifest (its schema checked), or ``{}`` if the run was never started."""
        return validate_manifest(read_json_object(self.manifest_path) or {}, self.manifest_path)

    @property
    def status(self) -> Status:
        raw = self.manifest().get("status", Status.PENDING)
        try:
            return Status(raw)
        except ValueError:
            raise RunStoreError(f"{self.manifest_path}: unknown status {raw!r} (expected one of "
                                f"{', '.join(Status)}); delete the run directory to redo the run") from None

    @property
    def completed(self) -> bool:
        return self.status is Status.COMPLETED and self.metrics_path.is_file()

    # ------------------------------------------------------------------ writing (hold the lock)
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (atomically: a reader sees the old state or the new one)."""
        if manifest.get("status") not in set(Status):
            raise RunStoreError(f"{self.manifest_path}: invalid status {manifest.get('status')!r}")
        manifest["updated_at"] = utc_now()
        try:
            atomic_write_json(self.manifest_path, manifest)
        except OSError as e:  # the previous manifest is intact (atomic write): say which file and why
            raise RunStoreError(f"cannot write {self.manifest_path}: {e.strerror or e}{errno_suffix(e)}; free some disk "
                                "space (or fix the folder) and run the same command again: finished runs are "
                                "kept and this one resumes") from e

    def start(self, record: dict[str, Any]) -> Attempt:
        """Mark the run ``running`` and open a new attempt; ``record`` (provenance, suite, data, launcher)
        is merged into the manifest, replacing the previous attempt's values."""
        manifest = self.manifest()
        attempts = list(manifest.get("attempts", []))
        now = utc_now()
        attempt = {
            "started_at": now, "hostname": record.get("hostname"), "pid": record.get("pid"),
            "resumed_from_checkpoint": self.last_checkpoint.is_file(),
            "previous_status": manifest.get("status", Status.PENDING),
        }
        attempts.append(attempt)
        manifest.update(record)
        manifest.update({
            "manifest_version": MANIFEST_VERSION, "run_id": self.run_id, "status": Status.RUNNING,
            "created_at": manifest.get("created_at", now), "started_at": now, "ended_at": None,
            "wall_seconds": None, "error": None, "attempts": attempts,
        })
        self.write_manifest(manifest)
        return Attempt(manifest, time.monotonic(), time.process_time())

    def finish(self, attempt: Attempt, status: str, *, error: BaseException | None = None,
               result: dict[str, Any] | None = None) -> dict[str, Any]:
        """Close the attempt as ``completed`` or ``failed`` (with the error and its traceback)."""
        if status not in (Status.COMPLETED, Status.FAILED):
            raise RunStoreError(f"a run attempt ends completed or failed, not {status!r}")
        manifest = attempt.manifest
        wall = round(time.monotonic() - attempt.t0, 3)
        # CPU seconds of this process (all its threads; not torchrun's child ranks): on a shared
        # machine this, not the wall time, says what the run costs.
        cpu = round(time.process_time() - attempt.cpu0, 3)
        manifest.update({"status": status, "ended_at": utc_now(), "wall_seconds": wall})
        if error is not None:
            manifest["error"] = {
                "type": type(error).__name__, "message": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            }
        if result is not None:
            manifest["result"] = result
        if manifest.get("attempts"):
            manifest["attempts"][-1].update({"ended_at": manifest["ended_at"], "status": status,
                                             "wall_seconds": wall, "cpu_seconds": cpu})
        manifest["total_wall_seconds"] = round(sum(a.get("wall_seconds") or 0.0
                                                   for a in manifest.get("attempts", [])), 3)
        self.write_manifest(manifest)
        return manifest

    def mark_failed(self, error_type: str, message: str, details: str = "") -> None:
        """Record a failure seen from outside the run's process (its job died: time limit, memory, node).

        Call with the lock held. A completed run is left alone; the last attempt, if it is still open,
        is closed as failed.
        """
        manifest = self.manifest()
        if manifest.get("status") == Status.COMPLETED:
            return
        manifest.setdefault("run_id", self.run_id)
        manifest.update({"status": Status.FAILED, "ended_at": utc_now(),
                         "error": {"type": error_type, "message": message, "traceback": details}})
        attempts = manifest.get("attempts") or []
        if attempts and "status" not in attempts[-1]:
            attempts[-1].update({"ended_at": manifest["ended_at"], "status": Status.FAILED})
        self.write_manifest(manifest)

    @contextlib.contextmanager
    def lock(self) -> Iterator[filelock.BaseFileLock]:
        """Hold the run's lock for the block, or raise :class:`RunLocked` at once if another process has it.

        The lock is an OS file lock (flock), so a killed process releases it; the next sweep then finds the
        run ``running`` but unlocked, i.e. interrupted, and resumes it.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path), blocking=False, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = self.manifest()
            raise RunLocked(
                f"run {self.run_id} is locked by another process (pid {holder.get('pid')} on "
                f"{holder.get('hostname')}); skipping it. If no such process exists, remove {self.lock_path}"
            ) from None
        try:
            yield lock
        finally:
            lock.release()

    @contextlib.contextmanager
    def log_to_file(self, level: int = logging.INFO) -> Iterator[logging.Handler]:
        """Copy every log record (the runner's and the engine's) into ``log.txt`` during the block; yields
        the file's handler."""
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        old_level = root.level
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)
        root.addHandler(handler)
        try:
            yield handler
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()


class RunStore:
    """``<root>/<suite>/``: the runs of one suite."""

    def __init__(self, root: str | os.PathLike, suite: str) -> None:
        self.root = Path(root)
        self.suite = validate_name(suite, "suite name")
        self.path = self.root / self.suite

    def run(self, run_id: str) -> RunDir:
        """The directory of ``run_id`` (not created). Rejects ids that would leave the store."""
        validate_name(run_id, "run id")
        path = self.path / run_id
        if path.is_symlink():
            raise RunStoreError(f"run directory {path} is a symbolic link (to {os.readlink(path)}); a run's "
                                "folder must be its own: remove the link")
        base = self.path.resolve()
        resolved = path.resolve()
        if resolved.parent != base:
            raise RunStoreError(f"run directory {path} resolves to {resolved}, outside the run store {base} "
                                "(a symbolic link?); remove it")
        return RunDir(path, run_id)

    def run_ids(self) -> list[str]:
        """Ids of the run directories present (with a config.json), sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and not p.is_symlink() and _SAFE.fullmatch(p.name)
                      and (p / "config.json").is_file())

    def plan_path(self, profile: str | None) -> Path:
        return self.path / f"plan-{validate_name(profile or 'default', 'profile name')}.json"
