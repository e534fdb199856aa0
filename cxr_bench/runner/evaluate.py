"""Runs made from a model trained elsewhere: outside predictions (:func:`evaluate_predictions`) or a weights
file (:func:`evaluate_checkpoint_file`), written into the run store exactly like a trained run.

Such a run has a ``config.json`` (a real :class:`~cxr_bench.config.RunConfig`: the data, label set and split
it was scored on), a ``manifest.json`` (status, provenance, and an ``evaluated`` record: what was scored, its
sha256, the command), ``predictions/test.csv`` (and ``val.csv`` when there are validation predictions) and
a ``metrics.json`` made by :func:`cxr_bench.metrics.extended.split_metrics`, the function a trained run's
evaluation calls. So ``leaderboard``, ``compare`` (the paired, patient-clustered test against any run
scored on the same test images), ``report`` and ``--reference`` read it like any other run.

The outside predictions format (docs/evaluate.md): a CSV (or Parquet) with a header ``image`` plus one
column per label of the label set, named as the label set names them (``Pleural_Thickening``), one row per
image of the split's test list, probabilities in [0, 1] (or logits with ``logits=True``). Truths and patient
ids come from the release's metadata, never from the file. The file is checked completely before anything
is written; each problem is one line naming the file and the first offending row.

The run id hashes the configuration with the sha256 of what was scored, so scoring the same file again finds
the finished run, and another file is another run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..errors import CxrBenchError, RunStoreError
from ..utils.io import atomic_write_json, sha256_file
from .provenance import collect_provenance
from .store import (
    RunDir,
    RunStore,
    Status,
    artifact_record,
    evaluated_run_id,
    read_json_object,
    validate_name,
    verify_artifacts,
)

log = logging.getLogger(__name__)

__all__ = ["EXTERNAL_PREFIX", "EvaluatedRun", "PredictionsFileError", "evaluate_checkpoint_file",
           "evaluate_predictions", "outside_config", "read_outside_predictions", "split_images"]

# The backbone a run of outside predictions is listed under: "external:<name>", one configuration per name.
EXTERNAL_PREFIX = "external:"
EXTERNAL_HEAD = "external"
ID_COLUMN = "image"
_SHOWN = 3  # image names quoted in an error


class PredictionsFileError(CxrBenchError):
    """An outside predictions file that cannot be scored (named with its first offending row)."""


@dataclass
class EvaluatedRun:
    """What :func:`evaluate_predictions` / :func:`evaluate_checkpoint_file` wrote (or found done)."""

    run_dir: Path
    run_id: str
    suite: str
    name: str
    metrics: dict[str, Any]
    reused: bool = False  # the same thing was scored before: the finished run was kept, nothing written


# ---------------------------------------------------------------------------------------------- the split
@dataclass
class SplitImages:
    """The images a config's split scores, in metadata order, with what the file does not say."""

    test: pd.DataFrame  # metadata rows of the test split (image, patient_id, sex, age, view, ...)
    train_val: pd.DataFrame  # of the training and validation splits
    label_set: Any  # LabelSet
    describe: str  # "split official of <root>" for messages


def split_images(cfg: RunConfig) -> SplitImages:
    """The test and the training + validation metadata rows of ``cfg``'s release, split and label set (the
    test images a trained run of that config would score, on a release whose images are all readable)."""
    from ..data.labels import get_label_set
    from ..data.release import NIHRelease
    from ..engine.trainer import split_rows

    d = cfg.data
    release = NIHRelease.open(d.root)
    splits = split_rows(cfg, release)
    meta = release.metadata
    where = "the bundled sample" if d.root is None else str(release.root)
    return SplitImages(meta.iloc[splits.test].reset_index(drop=True),
                       meta.iloc[np.union1d(splits.train, splits.val)].reset_index(drop=True),
                       get_label_set(d.label_set), f"split {d.split!r} of {where}")


# ---------------------------------------------------------------------------------------------- reading
def _read_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The file as a DataFrame of strings (CSV) or values (Parquet), and how to name a row: ``line`` for a
    CSV (header = line 1), ``row`` for Parquet."""
    if not path.is_file():
        raise PredictionsFileError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except ImportError:
            raise PredictionsFileError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow); or write "
                                       "the predictions as CSV") from None
        except Exception as e:  # noqa: BLE001 - any reader failure means the file is not valid Parquet
            raise PredictionsFileError(f"{path}: not a readable Parquet file ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if df.empty:
            raise PredictionsFileError(f"{path}: the file has no rows")
        return df, "row"
    raw = path.read_bytes()
    if not raw.strip():
        raise PredictionsFileError(f"{path}: the file is empty; write a header (image,<labels>) and one row "
                                   "per test image")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PredictionsFileError(f"{path}: the file is UTF-16; save it as UTF-8 (e.g. df.to_csv(path, "
                                   "encoding='utf-8'))")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PredictionsFileError(f"{path} line {line}: not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                                   "save the file as UTF-8") from None
    import csv
    import io

    header = next(csv.reader(io.StringIO(text)), [])
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # pandas would rename the second one ("Edema.1")
        raise PredictionsFileError(f"{path} line 1: column {twice[0]!r} appears twice in the header")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as e:
        raise PredictionsFileError(f"{path}: not a valid CSV ({' '.join(str(e).split())})") from None
    except pd.errors.EmptyDataError:
        raise PredictionsFileError(f"{path}: the file is empty") from None
    if df.empty:
        raise PredictionsFileError(f"{path}: the file has a header but no rows; write one row per test image")
    return df, "line"


def _where(path: Path, unit: str, i: int) -> str:
    return f"{path} {unit} {i + 2 if unit == 'line' else i + 1}"


def _names(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_SHOWN])
    return shown + (", ..." if len(values) > _SHOWN else "")


def read_outside_predictions(path: str | os.PathLike, labels: Sequence[str], images: Sequence[str], *,
                             logits: bool = False, what: str = "the test split", complete: bool = True
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Check an outside predictions file against ``labels`` and the split's ``images``; return ``(rows,
    probs)``: the positions in ``images`` the file covers (all of them when ``complete``, which requires
    it; else any subset) and their probabilities ``(len(rows), len(labels))`` float64 in that order.

    Every check runs before the caller writes anything; the first failure raises
    :class:`PredictionsFileError` naming the file and its first offending row (line, for a CSV).
    """
    from scipy.special import expit

    path = Path(path)
    df, unit = _read_table(path)
    columns = [str(c) for c in df.columns]
    if ID_COLUMN not in columns:
        raise PredictionsFileError(f"{path}: no {ID_COLUMN!r} column; the header must be {ID_COLUMN} followed by "
                                   f"one column per label ({', '.join(labels[:3])}, ...); found "
                                   f"{', '.join(columns[:5])}")
    dup_cols = sorted({c for c in columns if columns.count(c) > 1})
    if dup_cols:
        raise PredictionsFileError(f"{path}: column {dup_cols[0]!r} appears twice in the header")
    unknown = [c for c in columns if c != ID_COLUMN and c not in labels]
    if unknown:
        hint = ""
        near = [lab for lab in labels if lab.lower() in {u.lower().removeprefix("prob_").replace(" ", "_")
                                                         for u in unknown}]
        if near:
            hint = f" (did you mean {near[0]!r}?)"
        raise PredictionsFileError(f"{path}: unknown label column(s) {_names(unknown)}{hint}; this label set has "
                                   f"{', '.join(labels)}")
    missing = [lab for lab in labels if lab not in columns]
    if missing:
        raise PredictionsFileError(f"{path}: no column for label(s) {_names(missing)}; every label of the label "
                                   f"set needs a probability column ({', '.join(labels)})")

    names = df[ID_COLUMN].astype(str).str.strip().to_numpy()
    empty = np.flatnonzero(names == "")
    if empty.size:
        raise PredictionsFileError(f"{_where(path, unit, int(empty[0]))}: empty image name")
    dup = pd.Index(names).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(names == names[i])[0])
        raise PredictionsFileError(f"{_where(path, unit, i)}: image {names[i]!r} appears twice (first at "
                                   f"{unit} {first + 2 if unit == 'line' else first + 1}); one row per image")
    expected = pd.Index(list(images))
    foreign = ~pd.Index(names).isin(expected)
    if foreign.any():
        bad = names[foreign]
        i = int(np.flatnonzero(foreign)[0])
        raise PredictionsFileError(
            f"{_where(path, unit, i)}: image {names[i]!r} is not in {what}; {bad.size} of the file's {names.size} "
            f"images are not ({_names(bad)}). Predict the images of the split's test list (label set and split "
            "are options of `cxr-bench evaluate`)")
    absent = ~expected.isin(names)
    if complete and absent.any():
        gone = expected[absent]
        raise PredictionsFileError(
            f"{path}: {gone.size} of the {expected.size} images of {what} have no row ({_names(list(gone))}); "
            "a run is scored on the whole test list")

    values = np.empty((len(df), len(labels)), dtype=np.float64)
    for j, lab in enumerate(labels):
        col = pd.to_numeric(df[lab], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            i = int(bad[0])
            raise PredictionsFileError(f"{_where(path, unit, i)}, column {lab}: {df[lab].iloc[i]!r} is not a finite "
                                       "number")
        if not logits:
            out = np.flatnonzero((col < 0) | (col > 1))
            if out.size:
                i = int(out[0])
                raise PredictionsFileError(f"{_where(path, unit, i)}, column {lab}: {df[lab].iloc[i]!r} is outside "
                                           "[0, 1]; write probabilities, or pass --logits if the file holds logits")
        values[:, j] = col
    probs = expit(values) if logits else values
    rows = np.flatnonzero(~absent)
    return rows, probs[pd.Index(names).get_indexer(expected[rows])]


# ---------------------------------------------------------------------------------------------- configs
def outside_config(name: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The RunConfig a run of outside predictions is recorded under: backbone ``external:<name>`` (one
    configuration per name; ``seed`` tells several files of one model apart), head ``external``, the
    data/split/label-set/eval keys of ``overrides``."""
    validate_name(name, "--name")
    cfg = RunConfig().replace(**{"model.backbone": EXTERNAL_PREFIX + name, "model.head": EXTERNAL_HEAD,
                                 **(overrides or {})})
    if not cfg.name:
        cfg.name = name
    return cfg


def _suite_record(suite: str, cfg: RunConfig) -> dict[str, Any]:
    from .suite import configuration_id

    return {"name": suite, "file": None, "file_sha256": None, "profile": None, "blocks": ["evaluate"],
            "grid": {}, "pairs": [], "configuration": configuration_id(cfg)}


# ---------------------------------------------------------------------------------------------- writing
def _write_run(store_root: str | os.PathLike, suite: str, run_id: str, cfg: RunConfig, evaluated: dict[str, Any],
               produce: Any) -> EvaluatedRun:
    """Under the run's lock: keep an intact finished run, else write config, a running manifest, call
    ``produce(run_dir) -> metrics`` (which writes predictions/ and metrics.json) and complete the run."""
    from .sweep import data_record

    rd: RunDir = RunStore(store_root, suite).run(run_id)
    with rd.lock():
        if rd.completed and not verify_artifacts(rd.path):
            log.info("run %s/%s: already evaluated from the same file; kept as it is", suite, run_id)
            return EvaluatedRun(rd.path, run_id, suite, cfg.name, read_json_object(rd.metrics_path) or {}, True)
        data = data_record(cfg.data.root)
        atomic_write_json(rd.config_path, cfg.to_dict())
        attempt = rd.start({**collect_provenance(), "name": cfg.name, "seed": cfg.seed,
                            "suite": _suite_record(suite, cfg), "data": data, "evaluated": evaluated})
        with rd.log_to_file():
            try:
                metrics = produce(rd.path)
            except Exception as e:  # an interrupt leaves the run "running": the next evaluate finishes it
                rd.finish(attempt, Status.FAILED, error=e)
                raise
            attempt.manifest["artifacts"] = artifact_record(rd.path)
            test = metrics.get("test") or {}
            rd.finish(attempt, Status.COMPLETED, result={"test_mean_auc": test.get("mean_auc"),
                                                    "test_mean_auc_ci": test.get("mean_auc_ci")})
    return EvaluatedRun(rd.path, run_id, suite, cfg.name, metrics)


def evaluate_predictions(predictions: str | os.PathLike, *, store: str | os.PathLike, suite: str = "evaluate",
                         name: str | None = None, overrides: dict[str, Any] | None = None,
                         val_predictions: str | os.PathLike | None = None, logits: bool = False,
                         command: str = "") -> EvaluatedRun:
    """Score an outside predictions file into ``<store>/<suite>/<run_id>/`` (see the module docstring), with
    optional validation predictions on any images of the training and validation splits, which choose the
    operating thresholds as a trained run's val split does.

    ``overrides``: dotted config keys (``data.root``, ``data.label_set``, ``data.split``, ``seed``,
    ``eval.bootstrap`` ...). Nothing is written unless every file passes every check.
    """
    from ..metrics.extended import eval_settings, score_run
    from ..metrics.predictions import Predictions

    path = Path(predictions)
    validate_name(suite, "--suite")
    cfg = outside_config(name or path.stem, overrides)
    split = split_images(cfg)
    labels = tuple(split.label_set.labels)

    def scored(rows: pd.DataFrame, file: Path, what: str, complete: bool) -> Predictions:
        at, probs = read_outside_predictions(file, labels, rows["image"].astype(str).tolist(), logits=logits,
                                             what=f"the {what} images of {split.describe}", complete=complete)
        rows = rows.iloc[at]
        return Predictions(images=rows["image"].astype(str).to_numpy(),
                           patient_ids=rows["patient_id"].astype(str).to_numpy(),
                           y_true=split.label_set.encode(rows["finding_labels"]).astype(np.int8),
                           y_prob=probs, labels=labels, source=str(file))

    test = scored(split.test, path, "test", True)
    # Thresholds may be chosen on any of the training and validation images (a trained run uses its val split).
    val = (scored(split.train_val, Path(val_predictions), "training and validation", False)
           if val_predictions is not None else None)
    files = {"predictions": {"path": str(path.resolve()), "sha256": sha256_file(path)}}
    if val_predictions is not None:
        files["val_predictions"] = {"path": str(Path(val_predictions).resolve()),
                                    "sha256": sha256_file(val_predictions)}
    evaluated = {"kind": "predictions", **files, "logits": bool(logits), "label_set": split.label_set.name,
                 "split": {"protocol": cfg.data.split, "val_fraction": cfg.data.val_fraction,
                           "split_seed": cfg.data.split_seed, "root": cfg.data.root}, "command": command}
    scored_files: dict[str, Any] = {k: v["sha256"] for k, v in files.items()} | {"logits": bool(logits)}
    evaluated["scored"] = scored_files
    run_id = evaluated_run_id(cfg, scored_files)

    def produce(run_dir: Path) -> dict[str, Any]:
        metrics = score_run(run_dir, test, val, split.test, val_metadata=split.train_val,
                            label_set=split.label_set.name, **eval_settings(cfg))
        atomic_write_json(run_dir / "metrics.json", metrics)
        return metrics

    return _write_run(store, suite, run_id, cfg, evaluated, produce)


def evaluate_checkpoint_file(weights: str | os.PathLike, backbone: str, head: str = "gap", *,
                             store: str | os.PathLike, suite: str = "evaluate", name: str | None = None,
                             overrides: dict[str, Any] | None = None, command: str = "",
                             progress: bool | None = None) -> EvaluatedRun:
    """Score a model trained elsewhere from its weights (layouts: :mod:`cxr_bench.models.model_weights`) on
    the val and test splits of ``overrides``' data, with the config's device / AMP / channels_last, into
    ``<store>/<suite>/<run_id>/``. The weights are loaded once before anything is written, so a file that
    does not fit the model writes nothing."""
    from ..data.labels import get_label_set
    from ..engine.seeding import scoped_rng
    from ..engine.trainer import build_model, evaluate_weights
    from ..models.model_weights import load_model_weights

    path = Path(weights)
    validate_name(suite, "--suite")
    if not path.is_file():
        raise RunStoreError(f"weights file {path} does not exist")
    cfg = RunConfig().replace(**{"model.backbone": backbone, "model.head": head, **(overrides or {})})
    # Recorded as the weights the model starts from: the leaderboard's `pretrained` column then tells this
    # run from a trained run of the same config.
    cfg.model.pretrained = str(path.resolve())
    if not cfg.name:
        cfg.name = name or f"{backbone.replace(':', '-')}-{head}-{path.stem}"
    labels = tuple(get_label_set(cfg.data.label_set).labels)
    with scoped_rng(cfg.seed, "torch-global"):
        load_model_weights(build_model(cfg, labels), path)  # type: ignore[arg-type]  # build_model is typed nn.Module; it makes a CxrModel
    sha = sha256_file(path)
    scored_files: dict[str, Any] = {"weights": sha}
    evaluated = {"kind": "weights", "weights": {"path": str(path.resolve()), "sha256": sha}, "command": command,
                 "scored": scored_files}
    run_id = evaluated_run_id(cfg, scored_files)
    return _write_run(store, suite, run_id, cfg, evaluated,
                      lambda run_dir: evaluate_weights(cfg, path, run_dir, progress=progress))
