"""Reading a run store: the saved artifacts of finished (and failed) runs, never a model.

A run store is ``<root>/<suite>/<run_id>/`` (see ``cxr_bench.runner.store``); each run directory holds
``config.json`` (``RunConfig.to_dict()``), ``manifest.json`` (provenance, status, suite blocks and ablation
pairs), ``metrics.json``, ``history.csv`` and ``predictions/{val,test}.csv``. Everything downstream (the
leaderboard, comparisons, reports) reads runs through :func:`iter_runs`, so the layout is known in one
place on the reading side.

Nothing on disk is trusted: a completed run whose predictions no longer match what its metrics.json was
computed from (a file deleted, truncated by a full disk, cut by a copy, overwritten) is *damaged*
(:attr:`RunRecord.problems`); :func:`iter_runs` leaves damaged runs out unless asked, so a comparison or a
report never mixes numbers from files that disagree, and the leaderboard lists them as damaged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.release import PHANTOM_PREFIX
from ..errors import RunStoreError
from ..metrics.predictions import Predictions, read_predictions, take_rows  # noqa: F401 - re-exported
from ..runner import store as run_store
from ..runner.store import RunDir, Status, read_json_object

log = logging.getLogger(__name__)

SPLITS = ("test", "val")
# metrics.json stores AUCs as Python floats computed from the same arrays; a recomputation from the CSV
# (written with shortest round-trip repr) agrees to rounding, so anything beyond this is another file.
_AUC_TOLERANCE = 1e-9


@dataclass
class RunRecord:
    """One run directory, read lazily: config/manifest/status eagerly, metrics and predictions on demand."""

    run_dir: Path
    suite: str
    run_id: str
    config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    _predictions: dict[str, Predictions] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, run_dir: str | Path, suite: str | None = None) -> RunRecord:
        run_dir = Path(run_dir).resolve()
        config = read_json_object(run_dir / "config.json")
        if config is None:
            raise RunStoreError(f"{run_dir}: no config.json; not a run directory")
        manifest = RunDir(run_dir, run_dir.name).manifest()
        suite_name = suite or _suite_name(manifest) or run_dir.parent.name
        run_id = str(manifest.get("run_id") or run_dir.name)
        return cls(run_dir, suite_name, run_id, config, manifest)

    # ------------------------------------------------------------------ status
    @property
    def status(self) -> Status:
        """As the runner recorded it in the manifest; a run directory the engine wrote without the runner
        (``cxr-bench train``) has no manifest and counts as completed once its metrics.json exists."""
        if not self.manifest:
            return Status.COMPLETED if (self.run_dir / "metrics.json").is_file() else Status.PENDING
        return RunDir(self.run_dir, self.run_id).status

    @property
    def completed(self) -> bool:
        return self.status is Status.COMPLETED and (self.run_dir / "metrics.json").is_file()

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

    @property
    def error(self) -> str:
        """The recorded failure message, if any."""
        err = self.manifest.get("error")
        return str(err.get("message", "")) if isinstance(err, dict) else str(err or "")

    @cached_property
    def problems(self) -> list[str]:
        """Why this completed run's saved results cannot be trusted; ``[]`` when they are intact.

        With a manifest ``artifacts`` record (sha256 and row count of each predictions file, written at
        completion) the runner's ``verify_artifacts`` checks the files byte for byte. Runs written before
        that record existed are checked against metrics.json instead: the file exists and ends with a
        complete row, parses, and has the row count, patient count, positives per label and per-label
        AUCs that metrics.json was computed from (metrics.json keeps no list of images, so the image set
        is checked through those counts and the AUCs, which depend on every row).
        """
        try:
            metrics = self.metrics
        except RunStoreError as e:
            return [f"metrics.json: {e}"]
        verify: Callable[[Path], list[str]] | None = getattr(run_store, "verify_artifacts", None)
        if verify is not None and isinstance(self.manifest.get("artifacts"), dict):
            return [str(p) for p in verify(self.run_dir)]
        out: list[str] = []
        for split in SPLITS:
            block = metrics.get(split)
            if isinstance(block, dict):
                out += self._check_split(split, block)
        return out

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def _check_split(self, split: str, block: dict[str, Any]) -> list[str]:
        path = self.predictions_path(split)
        name = f"predictions/{split}.csv"
        if not path.is_file():
            return [f"{name} is missing"]
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            if size:
                fh.seek(size - 1)
            if not size or fh.read(1) != b"\n":  # the writer ends every row with a newline
                return [f"{name} ends in the middle of a row (cut while written or copied)"]
        try:
            pred = self.predictions(split)
        except RunStoreError as e:
            return [f"{name} is unreadable: {e}"]
        n = block.get("n_images")
        if n is not None and len(pred) != int(n):
            return [f"{name} has {len(pred)} rows; metrics.json was computed from {int(n)}"]
        n_pat = block.get("n_patients")
        if n_pat is not None and len(set(pred.patient_ids)) != int(n_pat):
            return [f"{name} has {len(set(pred.patient_ids))} patients; metrics.json was computed from {int(n_pat)}"]
        from ..metrics.roc import per_label_auc

        auc = per_label_auc(pred.y_true, pred.y_prob)
        per_label = block.get("per_label") or {}
        for j, label in enumerate(pred.labels):
            entry = per_label.get(label) or {}
            if entry.get("n_pos") is not None and int(pred.y_true[:, j].sum()) != int(entry["n_pos"]):
                return [f"{name}: {int(pred.y_true[:, j].sum())} positives of {label}; metrics.json counted "
                        f"{int(entry['n_pos'])}"]
            want = entry.get("auc")
            got = float(auc[j])
            if (want is None) != math.isnan(got) or (want is not None and abs(got - float(want)) > _AUC_TOLERANCE):
                return [f"{name}: AUC of {label} recomputed from the file is {got:.6f}; metrics.json says {want}"]
        return []

    # ------------------------------------------------------------------ config shortcuts
    def cfg(self, dotted: str, default: Any = None) -> Any:
        """``rec.cfg("data.label_set")``: a config value by dotted key."""
        cur: Any = self.config
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    @property
    def is_bundled_sample(self) -> bool:
        """True when the run trained on the bundled 1,673-image sample (``data.root`` unset): its numbers are
        a smoke test, not comparable with any paper."""
        data = self.manifest.get("data")
        if isinstance(data, dict) and "is_bundled_sample" in data:
            return bool(data["is_bundled_sample"])
        return self.cfg("data.root") is None

    @property
    def synthetic(self) -> bool:
        """True when the run was tested on synthetic data (a phantom release, ``data.root = "phantom:..."``:
        the sanity check of the pipeline). Such runs are listed, never ranked, compared with a paper or
        paired in an ablation."""
        data = self.manifest.get("data")
        if isinstance(data, dict) and data.get("is_phantom"):
            return True
        root = self.cfg("data.root")
        return isinstance(root, str) and root.startswith(PHANTOM_PREFIX)

    @property
    def data_name(self) -> str:
        """Which data the run was tested on: ``phantom``, ``bundled sample``, or for an NIH release its
        metadata file's version and the first 8 hex digits of its sha256 (``NIH v2020 9d4de640``)."""
        if self.synthetic:
            return "phantom"
        if self.is_bundled_sample:
            return "bundled sample"
        data = self.manifest.get("data")
        hashes = data.get("file_hashes") if isinstance(data, dict) else None
        for name, sha in sorted(hashes.items()) if isinstance(hashes, dict) else ():
            if str(name).lower().startswith("data_entry") and isinstance(sha, str):
                stem = str(name).split(".")[0]
                version = stem.rsplit("_", 1)[-1] if stem.count("_") >= 3 else "2017"
                return f"NIH {version} {sha[:8]}"
        return "NIH (release not recorded)"

    # ------------------------------------------------------------------ artifacts
    @cached_property
    def metrics(self) -> dict[str, Any]:
        m = read_json_object(self.run_dir / "metrics.json")
        if m is None:
            raise RunStoreError(f"{self.run_dir}: no metrics.json (status {self.status!r}); the run did not "
                                "finish; run the suite again to resume it")
        return m

    @property
    def labels(self) -> list[str]:
        labels = self.metrics.get("labels")
        if not labels:
            from ..data.labels import get_label_set

            labels = list(get_label_set(self.cfg("data.label_set", "chestxray14")).labels)
        return list(labels)

    def predictions_path(self, split: str = "test") -> Path:
        return self.run_dir / "predictions" / f"{split}.csv"

    def predictions(self, split: str = "test") -> Predictions:
        """The saved predictions of ``split`` (``test`` or ``val``), read once per record."""
        if split not in self._predictions:
            self._predictions[split] = read_predictions(self.predictions_path(split), self.labels)
        return self._predictions[split]

    def release_predictions(self) -> None:
        """Drop the predictions read so far (a comparison of many pairs keeps one pair's in memory)."""
        self._predictions.clear()

    def predictions_sha256(self, split: str = "test") -> str:
        """sha256 of the saved predictions of ``split``: the one recorded at completion while the run is
        intact (:attr:`problems` has just compared it with the file), else hashed now."""
        from ..utils.io import sha256_file

        rel = f"predictions/{split}.csv"
        artifacts = self.manifest.get("artifacts")
        recorded = artifacts.get(rel) if isinstance(artifacts, dict) else None
        if isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str) and not self.problems:
            return str(recorded["sha256"])
        return sha256_file(self.predictions_path(split))

    def history(self) -> pd.DataFrame:
        path = self.run_dir / "history.csv"
        if not path.is_file():
            raise RunStoreError(f"{path}: missing; the run did not finish an epoch")
        return pd.read_csv(path)

    def __repr__(self) -> str:
        return f"RunRecord({self.suite}/{self.run_id}, status={self.status!r})"


def _suite_name(manifest: dict[str, Any]) -> str | None:
    s = manifest.get("suite")
    if isinstance(s, dict):
        name = s.get("name")
        return str(name) if name else None
    if isinstance(s, str):
        return s
    return None


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def suite_dirs(root: str | Path) -> list[Path]:
    """The suite directories under ``root`` (a run store, or one suite's directory: then ``[root]``), sorted;
    ``[]`` for a single run directory or a store without runs."""
    root = Path(root)
    if _is_run_dir(root):
        return []
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(_is_run_dir(c) for c in children):
        return [root]
    return [c for c in children if any(_is_run_dir(p) for p in c.iterdir())]


def _run_dirs(root: Path) -> Iterator[Path]:
    if _is_run_dir(root):
        yield root
        return
    for suite_dir in suite_dirs(root):
        yield from sorted(p for p in suite_dir.iterdir() if _is_run_dir(p))


def iter_runs(root: str | Path, suite: str | None = None, *, include_incomplete: bool = False,
              include_damaged: bool = False,
              on_unreadable: Callable[[Path, RunStoreError], None] | None = None) -> Iterator[RunRecord]:
    """Runs under ``root`` (a run store, one suite's directory, or one run directory), sorted by path.

    ``suite`` keeps one suite. By default only completed runs whose saved results are intact
    (:attr:`RunRecord.problems`); ``include_damaged`` adds the damaged ones, ``include_incomplete`` every
    run whatever its state. A run directory whose config or manifest cannot be read is passed to
    ``on_unreadable`` (default: logged) and skipped, so one broken run does not hide the others.
    """
    root = Path(root)
    if not root.is_dir():
        raise RunStoreError(f"run store {root} does not exist; pass --runs DIR (the --out of `cxr-bench run`)")
    for run_dir in _run_dirs(root):
        try:
            rec = RunRecord.load(run_dir)
            if suite and rec.suite != suite:
                continue
            if include_incomplete:
                yield rec
                continue
            ok = rec.completed
        except RunStoreError as e:
            if suite and run_dir.parent.name != suite:  # unreadable, so its directory is all it tells
                continue
            if on_unreadable is not None:
                on_unreadable(run_dir, e)
            else:
                log.warning("skipping %s: %s", run_dir, e)
            continue
        if not ok:
            continue
        if rec.problems and not include_damaged:
            log.warning("skipping damaged run %s/%s: %s; `cxr-bench run` re-evaluates it", rec.suite, rec.run_id,
                        "; ".join(rec.problems))
            continue
        yield rec


def load_runs(root: str | Path, suite: str | None = None, *, include_incomplete: bool = False,
              include_damaged: bool = False) -> list[RunRecord]:
    return list(iter_runs(root, suite, include_incomplete=include_incomplete, include_damaged=include_damaged))
