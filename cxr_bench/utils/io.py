"""Crash-safe file writing and hashing.

A results file is never half-written: every writer goes to a temporary file in the same directory,
fsyncs it, and renames it over the target (``os.replace`` is atomic on POSIX), so a reader sees the old
file or the new one, never a torn one, whatever moment a process is killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open writes whole files: mode must be 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; results are meant to be shared like any file the user writes.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # A failed write (a full disk) names no file; the one it was for is what the user must know.
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[IO], None], binary: bool = True) -> None:
    """Atomically write ``path`` with ``writer(fh)``, e.g. ``lambda fh: torch.save(obj, fh)``."""
    if binary:
        with atomic_open(path, "wb") as fh:
            writer(fh)
    else:
        with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
            writer(fh)


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths appear in metrics and configs.
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_open` leaves when its process is killed mid-write.

    Their targets are intact (the rename never happened), so they are only litter. Call it only while no
    writer can be active in ``directory`` (e.g. holding the run's lock); returns what was removed.
    """
    removed = []
    for tmp in Path(directory).rglob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# OWASP's CSV-injection rule: a cell a spreadsheet would read as a formula starts with one of these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_cell(value: Any) -> Any:
    """Neutralise a text cell that a spreadsheet would evaluate (``=HYPERLINK(...)``, ``@SUM``, ...).

    Only strings change: a leading ``'`` is prepended, as OWASP recommends. Numbers (including negative
    ones, which are floats or ints here, not strings) pass through untouched, so every number in a CSV
    reads back as the same number.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)  # "-0.5" or "+1e-3" written as text is still a number, not a formula
            return value
        except ValueError:
            return "'" + value
    return value


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every text cell and column name passed through :func:`csv_safe_cell`."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].map(csv_safe_cell).astype(object)
    out.columns = [csv_safe_cell(str(c)) for c in out.columns]
    return out


def sidecar_path(path: str | os.PathLike) -> Path:
    """``leaderboard.csv`` -> ``leaderboard.csv.json``: the provenance written beside a CSV by :func:`write_csv`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def is_own_sidecar(path: str | os.PathLike) -> bool:
    """A ``<name>.csv.json`` that :func:`write_csv` wrote (its ``written_by`` field), not a user's file."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("written_by", "")).startswith("cxr-bench ")


def write_csv(df: pd.DataFrame, path: str | os.PathLike, *, float_format: str | None = "%.6g",
              header_lines: list[str] | None = None, provenance: dict[str, Any] | None = None) -> Path:
    """Atomically write ``df`` as a plain results CSV (header first: ``pd.read_csv(path)`` reads it with no
    options) that is safe to open in a spreadsheet, and beside it :func:`sidecar_path` (``<name>.csv.json``).

    The sidecar holds what a reader of the CSV must know but that is not a cell: ``notes`` (``header_lines``,
    e.g. why a table's runs are not comparable with any paper; the rows say so too, in their own columns)
    and ``provenance`` (whatever the writer passes: commit, store, settings). Every CSV the suite writes for
    a person goes through here. A file at the sidecar's name that this function did not write (a user's) is
    never replaced: :class:`~cxr_bench.errors.RunStoreError` naming it, before anything is written.
    """
    side_path = sidecar_path(path)
    if (side_path.exists() or side_path.is_symlink()) and not is_own_sidecar(side_path):
        from ..errors import RunStoreError

        raise RunStoreError(f"{side_path} exists and is not a sidecar cxr-bench wrote; writing {Path(path).name} "
                            "would replace it. Move it away or write the table elsewhere; nothing was written")
    text = csv_text(df, float_format=float_format)
    atomic_write_text(path, text)
    from .. import __version__

    side = {"csv": Path(path).name, "rows": int(len(df)), "columns": [str(c) for c in df.columns],
            "notes": [line for note in (header_lines or []) for line in note.splitlines()],
            "provenance": provenance or {}, "written_by": f"cxr-bench {__version__}"}
    atomic_write_json(sidecar_path(path), side)
    return Path(path)


def csv_text(df: pd.DataFrame, *, float_format: str | None = "%.6g") -> str:
    """The text :func:`write_csv` writes: header first, text cells made safe (:func:`csv_safe_frame`)."""
    return csv_safe_frame(df).to_csv(index=False, lineterminator="\n", float_format=float_format)
