"""Reading a run store: the saved artifacts of finished (and failed) runs, never a model.

A run store is ``<root>/<suite>/<run_id>/`` (see ``cxr_bench.runner.store``); each run directory holds
``config.json`` (``RunConfig.to_dict()``), ``manifest.json`` (provenance, status, suite blocks and ablation
pairs), ``metrics.json``, ``history.csv`` and ``predictions/{val,test}.csv``. Everything downstream (the
leaderboard, comparisons, reports) reads runs through :func:`iter_runs`, so the layout is known in one
place on the reading side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RunStoreError
from ..metrics.predictions import Predictions, read_predictions
from ..runner.store import RunDir, Status, read_json_object

log = logging.getLogger(__name__)

@dataclass
class RunRecord:
    """One run directory, read lazily: config/manifest/status eagerly, metrics and predictions on demand."""

    run_dir: Path
    suite: str
    run_id: str
    config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

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
        """The saved predictions of ``split`` (``test`` or ``val``)."""
        return read_predictions(self.predictions_path(split), self.labels)

    def history(self) -> pd.DataFrame:
        path = self.run_dir / "history.csv"
        if not path.is_file():
            raise RunStoreError(f"{path}: missing; the run did not finish an epoch")
        return pd.read_csv(path)

    def __repr__(self) -> str:
        return f"RunRecord({self.suite}/{self.run_id}, status={self.status!r})"


def take_rows(pred: Predictions, images: Sequence[str]) -> Predictions:
    """The rows of ``images`` (each must be present), in that order; for aligning two runs or a subset."""
    pos = pd.Index(pred.images).get_indexer(list(images))
    if (pos < 0).any():
        missing = list(images)[int(np.flatnonzero(pos < 0)[0])]
        raise RunStoreError(f"{pred.source}: image {missing!r} has no prediction")
    return Predictions(pred.images[pos], pred.patient_ids[pos], pred.y_true[pos], pred.y_prob[pos],
                       pred.labels, pred.source)


def _suite_name(manifest: dict[str, Any]) -> str | None:
    s = manifest.get("suite")
    if isinstance(s, dict):
        name = s.get("name")
        return str(name) if name else None
    if isinstance(s, str):
        return s
    return None


def _run_dirs(root: Path) -> Iterator[Path]:
    if (root / "config.json").is_file():  # a single run directory
        yield root
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (child / "config.json").is_file():  # root is a suite directory
            yield child
        else:
            yield from sorted(p for p in child.iterdir() if p.is_dir() and (p / "config.json").is_file())


def iter_runs(root: str | Path, suite: str | None = None, *, include_incomplete: bool = False,
              ) -> Iterator[RunRecord]:
    """Runs under ``root`` (a run store, one suite's directory, or one run directory), sorted by path.

    ``suite`` keeps one suite. Only completed runs unless ``include_incomplete``. A run directory that cannot
    be read is logged and skipped, so one broken run does not hide a leaderboard.
    """
    root = Path(root)
    if not root.is_dir():
        raise RunStoreError(f"run store {root} does not exist; pass --runs DIR (the --out of `cxr-bench run`)")
    for run_dir in _run_dirs(root):
        try:
            rec = RunRecord.load(run_dir)
        except RunStoreError as e:
            log.warning("skipping %s: %s", run_dir, e)
            continue
        if suite and rec.suite != suite:
            continue
        if include_incomplete or rec.completed:
            yield rec


def load_runs(root: str | Path, suite: str | None = None, *, include_incomplete: bool = False,
              ) -> list[RunRecord]:
    return list(iter_runs(root, suite, include_incomplete=include_incomplete))
