"""What the reports show, computed once per set of inputs and shared by every report of a render.

The leaderboard, the expert-label scores, the runs' verified artifacts and the paired ablation table are
each one part of an :class:`Analysis`, computed once by the first report that asks for it through the public
functions of
:mod:`cxr_bench.results` (``build_leaderboard``, which also scores the expert labels, and
``ablation_table``) and saved as JSON in a cache folder the tool owns (``<out>/.cache/``), keyed by
:func:`inputs_key`: a hash of every run's config, manifest, metrics, history and localization files, the
size and modification time of its predictions, the cxr-bench code and the templates. The next report (or
the next render, when nothing changed) reads the part back. JSON, not pickle: a cache in a shared folder
must not be able to run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import RunStoreError
from ..metrics.paired import DEFAULT_BOOTSTRAP, DEFAULT_SEED
from ..results.runs import RunRecord, load_runs, suite_dirs
from ..utils.io import atomic_write_text

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# Run files whose content a report shows (hashed whole), and files hashed by size and modification time
# (the predictions: megabytes each, and the manifest records their sha256 anyway).
_CONTENT_FILES = ("config.json", "manifest.json", "metrics.json", "history.csv", "localization.csv",
                  "localization.json", "cost.json", "export/model.onnx.json")
_STAT_DIRS = ("predictions", "figures")


def _run_dirs(runs_dir: Path) -> list[Path]:
    if (runs_dir / "config.json").is_file():
        return [runs_dir]
    return [p for d in suite_dirs(runs_dir) for p in sorted(d.iterdir()) if (p / "config.json").is_file()]


def inputs_key(runs_dir: str | os.PathLike, suite: str | None = None, *, templates: Path | None = None) -> str:
    """A hash of everything a report of ``runs_dir`` (``suite``) reads: equal keys, equal reports (but for
    the footer's render time). Log files, checkpoints and locks are left out, so re-running a finished
    suite, which only appends to logs, keeps the key."""
    import cxr_bench

    h = hashlib.sha256(f"format {CACHE_FORMAT}\nsuite {suite or ''}\n".encode())
    for run_dir in _run_dirs(Path(runs_dir)):
        h.update(f"run {run_dir.name}\n".encode())
        for name in _CONTENT_FILES:
            path = run_dir / name
            if path.is_file():
                h.update(f"{name} ".encode() + hashlib.sha256(path.read_bytes()).digest())
        for sub in _STAT_DIRS:
            for path in sorted((run_dir / sub).glob("*")) if (run_dir / sub).is_dir() else []:
                st = path.stat()
                h.update(f"{sub}/{path.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    code = Path(cxr_bench.__file__).resolve().parent
    sources = sorted(code.rglob("*.py")) + (sorted(templates.glob("*.ipynb")) if templates else [])
    for path in sources:
        h.update(f"{path.name} ".encode() + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:32]


# ------------------------------------------------------------------------------------------ JSON frames


def frame_to_json(df: pd.DataFrame) -> dict[str, Any]:
    """``df`` (and its ``attrs``) as plain JSON; :func:`frame_from_json` reads it back."""
    doc = json.loads(df.to_json(orient="split", index=False, double_precision=15, date_format="iso"))
    return {"frame": doc, "attrs": {k: v for k, v in df.attrs.items() if _plain(v)}}


def _plain(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def frame_from_json(doc: dict[str, Any]) -> pd.DataFrame:
    f = doc["frame"]
    df = pd.DataFrame(f["data"], columns=f["columns"])
    df.attrs.update(doc.get("attrs") or {})
    return df


# ------------------------------------------------------------------------------------------ analysis


class Analysis:
    """The parts of a render's analysis, each computed on first use and kept in ``cache_dir`` (None: in
    memory only) under ``key`` (:func:`inputs_key`). Parts: ``runs`` (the completed, intact runs and how
    many others there are), ``leaderboard`` (with ``failed`` and ``subgroups``), ``ablations``."""

    def __init__(self, runs_dir: str | os.PathLike, suite: str | None = None, *,
                 cache_dir: str | os.PathLike | None = None, key: str = "") -> None:
        self.runs_dir = Path(runs_dir)
        self.suite = suite or None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.key = key or (inputs_key(self.runs_dir, self.suite) if self.cache_dir else "")
        self._parts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Analysis({self.runs_dir}, suite={self.suite!r}, key={self.key[:8]!r})"

    def _path(self, part: str) -> Path | None:
        return self.cache_dir / f"{part}-{self.key}.json" if self.cache_dir and self.key else None

    def _part(self, part: str, compute: Callable[[], Any], dump: Callable[[Any], Any],
              read: Callable[[Any], Any]) -> Any:
        if part in self._parts:
            return self._parts[part]
        path = self._path(part)
        if path is not None and path.is_file():
            try:
                value = read(json.loads(path.read_text(encoding="utf-8"))["value"])
                self._parts[part] = value
                return value
            except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged cache is recomputed
                log.info("report cache %s unreadable (%s); recomputing", path, e)
        value = compute()
        self._parts[part] = value
        if path is not None:
            self._forget_other_keys(part)
            atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "key": self.key, "value": dump(value)}))
        return value

    def _forget_other_keys(self, part: str) -> None:
        assert self.cache_dir is not None
        for old in self.cache_dir.glob(f"{part}-*.json"):
            if old.name != f"{part}-{self.key}.json":
                old.unlink(missing_ok=True)

    # ---------------------------------------------------------------- parts
    def _runs_info(self) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            runs = load_runs(self.runs_dir, self.suite)
            total = len(load_runs(self.runs_dir, self.suite, include_incomplete=True))
            return {"run_dirs": [str(r.run_dir) for r in runs], "n_not_completed": total - len(runs)}

        return self._part("runs", compute, lambda v: v, lambda v: v)

    def runs(self) -> list[RunRecord]:
        """The completed runs whose saved artifacts are intact (verified once per set of inputs)."""
        if "records" not in self._parts:
            out = []
            for d in self._runs_info()["run_dirs"]:
                try:
                    out.append(RunRecord.load(d, None))
                except RunStoreError as e:  # removed since the key was taken: left out, said in the log
                    log.warning("%s: %s", d, e)
            self._parts["records"] = [r for r in out if not self.suite or r.suite == self.suite]
        return self._parts["records"]

    @property
    def n_not_completed(self) -> int:
        return int(self._runs_info()["n_not_completed"])

    def leaderboard(self) -> Any:
        """:func:`cxr_bench.results.leaderboard.build_leaderboard` of the store."""
        from ..results.leaderboard import Leaderboard, build_leaderboard

        def dump(lb: Leaderboard) -> dict[str, Any]:
            return {"table": frame_to_json(lb.table), "failed": frame_to_json(lb.failed),
                    "subgroups": frame_to_json(lb.subgroups)}

        def read(v: dict[str, Any]) -> Leaderboard:
            return Leaderboard(frame_from_json(v["table"]), frame_from_json(v["failed"]),
                               subgroups=frame_from_json(v["subgroups"]))

        return self._part("leaderboard", lambda: build_leaderboard(self.runs_dir, self.suite), dump, read)

    def ablations(self, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> pd.DataFrame:
        """:func:`cxr_bench.results.compare.ablation_table` of the completed runs."""
        from ..results.compare import ablation_table

        return self._part(f"ablations-b{n_bootstrap}-s{seed}",
                          lambda: ablation_table(self.runs(), n_bootstrap=n_bootstrap, seed=seed),
                          frame_to_json, frame_from_json)
