"""Reading a run store: the saved artifacts of finished (and failed) runs, never a model.

A run store is ``<root>/<suite>/<run_id>/`` (see ``cxr_bench.runner.store``); each run directory holds
``config.json`` (``RunConfig.to_dict()``), ``manifest.json`` (provenance, status, suite blocks and ablation
pairs), ``metrics.json``, ``history.csv`` and ``predictions/{val,test}.csv``. Everything downstream (the
leaderboard, comparisons, reports) reads runs through :func:`iter_runs`, so the layout is known in one
place on the reading side.

Nothing on disk is trusted: a completed run whose predictions or metrics.json no longer match the sha256
record its manifest took at completion (a file deleted, truncated by a full disk, cut by a copy, overwritten)
is *damaged*
(:attr:`RunRecord.problems`); :func:`iter_runs` leaves damaged runs out unless asked, so a comparison or a
report never mixes numbers from files that disagree, and the leaderboard lists them as damaged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import RunConfig, get_dotted
from ..data.release import PHANTOM_PREFIX
from ..data.sample_note import SampleFacts, finite, whole
from ..errors import ConfigError, RunStoreError
from ..metrics.predictions import Predictions, read_predictions, take_rows  # noqa: F401 - re-exported
from ..runner.store import (
    EXTERNAL_DIR,
    RunDir,
    Status,
    check_own_folder,
    read_json_object,
    validate_name,
    verify_artifacts,
)

log = logging.getLogger(__name__)

SPLITS = ("test", "val")
# metrics.json stores AUCs as Python floats computed from the same arrays; a recomputation from the CSV
# (written with shortest round-trip repr) agrees to rounding, so anything beyond this is another file.
_AUC_TOLERANCE = 1e-9


@dataclass
class RunRecord:
    """One run directory, read lazily: config/manifest/status eagerly, metrics and predictions on demand.

    ``config`` is the run's :class:`~cxr_bench.config.RunConfig`, parsed once from its ``config.json``."""

    run_dir: Path
    suite: str
    run_id: str
    config: RunConfig
    manifest: dict[str, Any] = field(default_factory=dict)
    _predictions: dict[str, Predictions] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, run_dir: str | Path, suite: str | None = None) -> RunRecord:
        if Path(run_dir).is_symlink():
            check_own_folder(run_dir, None, None)
        run_dir = Path(run_dir).resolve()
        raw = read_json_object(run_dir / "config.json")
        if raw is None:
            raise RunStoreError(f"{run_dir}: no config.json; not a run directory")
        try:
            config = RunConfig.from_dict(raw)
        except ConfigError as e:
            raise RunStoreError(f"{run_dir / 'config.json'}: {e}") from None
        manifest = RunDir(run_dir, run_dir.name).manifest()
        check_own_folder(run_dir, config, manifest)
        suite_name = suite or _suite_name(manifest) or run_dir.parent.name
        run_id = str(manifest.get("run_id") or run_dir.name)
        return cls(run_dir, suite_name, run_id, config, manifest)

    # ------------------------------------------------------------------ status
    @property
    def _run_dir(self) -> RunDir:
        return RunDir(self.run_dir, self.run_id)

    @property
    def status(self) -> Status:
        """As the runner recorded it in the manifest (:attr:`RunDir.status`: ``pending`` without one)."""
        return self._run_dir.status

    @property
    def completed(self) -> bool:
        return self._run_dir.completed

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
        """Why this completed run's saved results cannot be trusted; ``[]`` when they are intact: an
        unreadable metrics.json, or what :func:`cxr_bench.runner.store.verify_artifacts` finds against the
        sha256 record the manifest took at completion."""
        try:
            _ = self.metrics
        except RunStoreError as e:
            return [f"metrics.json: {e}"]
        return verify_artifacts(self.run_dir)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    # ------------------------------------------------------------------ config shortcuts
    def cfg(self, dotted: str, default: Any = None) -> Any:
        """``rec.cfg("data.label_set")``: :func:`cxr_bench.config.get_dotted` of the run's config."""
        return get_dotted(self.config, dotted, default)

    @property
    def is_bundled_sample(self) -> bool:
        """True when the run trained on the bundled 1,673-image sample (``data.root`` unset): its numbers are
        a smoke test, not comparable with any paper."""
        data = self.manifest.get("data")
        if isinstance(data, dict) and "is_bundled_sample" in data:
            return bool(data["is_bundled_sample"])
        return self.config.data.root is None

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

            labels = list(get_label_set(self.config.data.label_set).labels)
        return list(labels)

    def predictions_path(self, split: str = "test") -> Path:
        return self.run_dir / "predictions" / f"{split}.csv"

    def predictions(self, split: str = "test") -> Predictions:
        """The saved predictions of ``split`` (``test`` or ``val``), read once per record."""
        if split not in self._predictions:
            self._predictions[split] = read_predictions(self.predictions_path(split), self.labels)
        return self._predictions[split]

    def stored_replicates(self, split: str, predictions_sha256: str) -> dict[Any, Any]:
        """The bootstrap replicates the run saved beside its ``split`` predictions when it completed
        (:func:`cxr_bench.metrics.extended.score_run`), as :data:`cxr_bench.metrics.paired.ReplicateCache`
        entries for the predictions whose sha256 is given; ``{}`` (the comparison computes them) for another
        split, a run without them, a file whose sha256 is not the one the manifest recorded at completion, or a
        run whose files changed since (:attr:`problems`)."""
        from ..metrics.extended import REPLICATES_NAME
        from ..metrics.paired import load_replicates
        from ..utils.io import sha256_file

        rel = f"predictions/{REPLICATES_NAME}"
        path = self.run_dir / rel
        artifacts = self.manifest.get("artifacts")
        recorded = artifacts.get(rel) if isinstance(artifacts, dict) else None
        if (split != "test" or not path.is_file() or not isinstance(recorded, dict) or self.problems
                or sha256_file(path) != recorded.get("sha256")):
            return {}
        return load_replicates(path, predictions_sha256)

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

    # ------------------------------------------------------------------ external test sets
    def external_dir(self, dataset: str) -> Path:
        """``<run>/external/<dataset>/``: where the run's scores on an external set live."""
        return self.run_dir / EXTERNAL_DIR / validate_name(dataset, "dataset name")

    def external_datasets(self) -> list[str]:
        """The external sets this run was scored on (those with a metrics.json), sorted."""
        base = self.run_dir / EXTERNAL_DIR
        if not base.is_dir():
            return []
        return sorted(d.name for d in base.iterdir() if d.is_dir() and (d / "metrics.json").is_file())

    def external_metrics(self, dataset: str) -> dict[str, Any]:
        """``external/<dataset>/metrics.json``: its ``test`` block has the keys of metrics.json's test block."""
        path = self.external_dir(dataset) / "metrics.json"
        m = read_json_object(path)
        if m is None:
            raise RunStoreError(f"{path}: missing; score the run with `cxr-bench evaluate --run-dir {self.run_dir} "
                                f"--dataset {dataset} --data-root DIR`")
        return m

    def external_predictions(self, dataset: str) -> Predictions:
        """The saved predictions of the run on an external set (its scored labels only)."""
        key = f"external:{dataset}"
        if key not in self._predictions:
            labels = self.external_metrics(dataset).get("labels") or None
            self._predictions[key] = read_predictions(self.external_dir(dataset) / "predictions.csv", labels)
        return self._predictions[key]

    def history(self) -> pd.DataFrame:
        path = self.run_dir / "history.csv"
        if not path.is_file():
            raise RunStoreError(f"{path}: missing; the run did not finish an epoch")
        return pd.read_csv(path)

    def __repr__(self) -> str:
        return f"RunRecord({self.suite}/{self.run_id}, status={self.status!r})"


def sample_facts(runs: Sequence[RunRecord], *, n_total: int | None = None,
                 sanity: bool = False) -> SampleFacts:
    """:class:`~cxr_bench.data.sample_note.SampleFacts` of runs on the bundled sample, from their records:
    the profile of their manifests, their configs and what their metrics.json measured (steps taken, images
    seen, mean test AUC, test images and patients); a run without readable metrics adds its config only."""
    blocks = []
    for r in runs:
        try:
            blocks.append(r.metrics)
        except RunStoreError:
            blocks.append({})
    tests: list[dict[str, Any]] = [t if isinstance(t := b.get("test"), dict) else {} for b in blocks]
    steps = [finite([b.get("steps")]) for b in blocks]
    seen = [s[0] * r.config.optim.batch_size * r.config.optim.accum_steps for r, s in zip(runs, steps) if s]
    profiles = {str(get_dotted(r.manifest, "suite.profile", "")) for r in runs} - {"", "None"}
    return SampleFacts(
        n_runs=len(runs), n_total=n_total, profiles=tuple(sorted(profiles)),
        image_sizes=tuple(r.config.data.image_size for r in runs),
        pretrained=tuple(r.config.model.pretrained or "none" for r in runs),
        steps=whole(s[0] for s in steps if s),
        epochs=whole(b.get("epochs_run", r.config.optim.epochs) for r, b in zip(runs, blocks)),
        images_seen=whole(seen), mean_aucs=finite(t.get("mean_auc") for t in tests),
        test_images=whole(t.get("n_images") for t in tests),
        test_patients=whole(t.get("n_patients") for t in tests), sanity=sanity)


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
        raise RunStoreError(f"run store {root} does not exist; pass --runs DIR (the --runs of `cxr-bench run`)")
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
