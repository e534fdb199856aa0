"""Scoring finished runs on an external test set (``cxr-bench evaluate --dataset NAME --data-root DIR``).

A run's saved best checkpoint predicts every frontal image of the set, through the run's own
preprocessing (its image size, grayscale conversion and resize, in a cache of its own); the scores are
summarised by the same functions that write the run's NIH test block (:func:`cxr_bench.metrics.roc.summarize`
and :func:`cxr_bench.metrics.extended.extra_metrics`): patient-bootstrap CIs (images or reports where the
set has no patient ids: ``data.patient_unit``), calibration, subgroups by sex, age band and view. Operating
thresholds are the ones the run chose on NIH validation, applied out of sample. Only the labels the set
shares with the run's label set are scored.

Written into the run directory (and registered in its manifest's ``artifacts`` when it has that record)::

    external/<dataset>/predictions.csv   image, patient_id, true_<Label>..., prob_<Label>... (scored labels)
    external/<dataset>/metrics.json      {"dataset", "label_set", "labels", "test": {...as metrics.json...},
                                          "data": {what was scored and how it was chosen}, "checkpoint",
                                          "timing": {"cache_seconds", "predict_seconds", "images_per_s"}}

:meth:`cxr_bench.results.runs.RunRecord.external_metrics` is the one reader. This package sits at the
results level: it reads runs through ``results.runs`` and calls the engine and metrics layers below it.

A run made from outside predictions has no checkpoint: the predictions of the set's images placed in it as
``external/<dataset>/predictions.csv`` are checked against the set's metadata and scored instead.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RunStoreError
from ..results.runs import RunRecord, load_runs

log = logging.getLogger(__name__)

__all__ = ["evaluate_external_cli", "evaluate_run_external", "checkpoint_of", "external_summary_rows"]


def checkpoint_of(rec: RunRecord) -> Path | None:
    """The weights a run's NIH metrics were scored with (``best.pt``; ``last.pt`` when there is no best)."""
    for name in ("best.pt", "last.pt"):
        path = rec.run_dir / "checkpoints" / name
        if path.is_file():
            return path
    return None


def _check_run(rec: RunRecord, dataset: str) -> Path | None:
    """The run's checkpoint; None for a run without one that holds outside predictions of ``dataset``."""
    if not rec.completed:
        raise RunStoreError(f"run {rec.run_id} ({rec.run_dir}) is {rec.status}, not completed; finish it with "
                            "`cxr-bench run` before scoring it on an external set")
    if rec.problems:
        raise RunStoreError(f"run {rec.run_id} is damaged ({'; '.join(rec.problems)}); `cxr-bench run` re-evaluates "
                            "it")
    ckpt = checkpoint_of(rec)
    outside = rec.external_dir(dataset) / "predictions.csv"
    if ckpt is None and not outside.is_file():
        raise RunStoreError(f"run {rec.run_id} ({rec.run_dir}) has no checkpoints/best.pt: a run made from outside "
                            f"predictions cannot predict {dataset}'s images; put the model's predictions of them in "
                            f"{outside} (image, patient_id, true_<Label>..., prob_<Label>...) and run again")
    return ckpt


def _predict(rec: RunRecord, ext: Any, ckpt: Path, cfg: Any, label_set: Any, *, progress: bool | None,
             workers: int | None, cache_dir: str | Path | None) -> tuple[Any, Any, dict[str, Any]]:
    """(predictions of every run label, the scored images' metadata, facts) from the run's checkpoint, through
    the run's own preprocessing and the engine's prediction path."""
    import torch
    from torch.utils.data import DataLoader

    from ..data.cache import build_cache
    from ..data.datasets import CXRDataset
    from ..engine.checkpoint import load_checkpoint, load_model_state
    from ..engine.distributed import DistContext, resolve_device
    from ..engine.evaluate import predict, split_predictions
    from ..engine.seeding import scoped_rng
    from ..engine.trainer import build_model, eval_batch_size

    d = cfg.data
    t0 = time.perf_counter()
    names = ext.metadata["image"].tolist()
    paths = ext.image_paths()
    cache = build_cache({n: paths[n] for n in names}, d.image_size, resize=d.resize, conversion=d.grayscale,
                        cache_dir=cache_dir if cache_dir is not None else d.cache_dir, workers=workers,
                        progress=progress, source_root=str(ext.root))
    dataset = CXRDataset(ext, None, label_set, cache=cache)
    if len(dataset) == 0:
        raise RunStoreError(f"{ext.spec.title}: every image under {ext.root} was rejected (e.g. "
                            f"{dataset.dropped['reason'].iloc[0]}); check the files")
    t_cache = time.perf_counter() - t0

    ctx = DistContext(device=resolve_device(cfg.device))
    with scoped_rng(cfg.seed, "torch-global"):  # random init is overwritten, but must not touch the caller
        model = build_model(cfg, tuple(label_set.labels))
    load_model_state(model, load_checkpoint(ckpt, map_location=ctx.device).get("model"), ckpt)
    model.to(ctx.device)
    loader = DataLoader(dataset, batch_size=eval_batch_size(cfg, ctx.device), shuffle=False, num_workers=0,
                        pin_memory=ctx.device.type == "cuda")
    t1 = time.perf_counter()
    out = predict(model, loader, dataset.rows, ctx, amp=cfg.optim.amp, progress=progress, desc=ext.name)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    t_pred = time.perf_counter() - t1
    pred = split_predictions(dataset, out, label_set.labels)
    facts = {"source": "checkpoint", "checkpoint": {"path": str(ckpt.relative_to(rec.run_dir)), "device": str(ctx.device)},
             "timing": {"cache_seconds": round(t_cache, 3), "predict_seconds": round(t_pred, 3),
                        "images_per_s": round(len(pred) / t_pred, 2) if t_pred > 0 else None},
             "rejected": int(len(dataset.dropped))}
    return pred, dataset.csv, facts


def _outside(rec: RunRecord, ext: Any, label_set: Any, labels: list[str]) -> tuple[Any, Any, dict[str, Any]]:
    """Outside predictions of the set (``external/<dataset>/predictions.csv``), checked against its metadata:
    every frontal image once, the truth the set's metadata gives; patients from the metadata."""
    from ..metrics.predictions import Predictions, read_predictions
    from ..results.runs import take_rows

    path = rec.external_dir(ext.name) / "predictions.csv"
    given = read_predictions(path)
    missing = [lab for lab in labels if lab not in given.labels]
    if missing:
        raise RunStoreError(f"{path}: no prob_{missing[0]} column; {ext.name} scores {', '.join(labels)}")
    meta = ext.metadata
    truth = label_set.encode(meta["finding_labels"])[:, [label_set.labels.index(lab) for lab in labels]]
    rows = take_rows(given.select(labels), meta["image"].tolist())
    bad = (rows.y_true != truth.astype(rows.y_true.dtype)).any(axis=1)
    if bad.any():
        i = int(bad.argmax())
        raise RunStoreError(f"{path}: the truth of image {rows.images[i]!r} differs from {ext.data_entry_path.name} "
                            f"({meta['finding_labels'].iloc[i]}); write true_<Label> from the set's metadata "
                            f"(docs/external.md, label mapping)")
    pred = Predictions(rows.images, meta["patient_id"].astype(str).to_numpy(), rows.y_true, rows.y_prob,
                       tuple(labels), str(path))
    return pred, meta, {"source": "outside predictions", "checkpoint": None, "timing": None, "rejected": 0}


def evaluate_run_external(rec: RunRecord | str | Path, ext: Any, *, progress: bool | None = None,
                          n_bootstrap: int | None = None, workers: int | None = None,
                          cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Score one completed run on the external set ``ext`` (:func:`cxr_bench.data.external.open_external`);
    write ``external/<dataset>/`` into the run directory and return its metrics dict.

    A run with a checkpoint predicts the set; a run made from outside predictions (no checkpoint) is scored
    from the ``external/<dataset>/predictions.csv`` placed in it, which is read, checked and left as it is.
    """
    from ..data.labels import get_label_set
    from ..engine.evaluate import write_split_predictions
    from ..metrics.extended import extra_metrics
    from ..metrics.roc import summarize
    from ..runner.store import RunDir, artifact_record
    from ..utils.io import atomic_write_json

    if not isinstance(rec, RunRecord):
        rec = RunRecord.load(rec)
    ckpt = _check_run(rec, ext.name)
    run_labels = tuple(rec.labels)
    labels = [lab for lab in run_labels if lab in ext.shared_labels]
    if not labels:
        raise ConfigError(f"run {rec.run_id} predicts {', '.join(run_labels)}; {ext.spec.title} labels only "
                          f"{', '.join(ext.shared_labels)}: nothing to score")
    cfg = rec.config
    e = cfg.eval
    label_set = get_label_set(cfg.data.label_set)
    if tuple(label_set.labels) != run_labels:
        raise RunStoreError(f"run {rec.run_id}: metrics.json labels differ from label set {cfg.data.label_set!r}")

    if ckpt is not None:
        full, csv, facts = _predict(rec, ext, ckpt, cfg, label_set, progress=progress, workers=workers,
                                    cache_dir=cache_dir)
        pred = full.select(labels)
    else:
        pred, csv, facts = _outside(rec, ext, label_set, labels)
    # The thresholds the run chose on NIH validation, applied out of sample as on the NIH test list.
    val = rec.predictions("val").select(labels)
    boot = e.bootstrap if n_bootstrap is None else int(n_bootstrap)
    block = summarize(pred, val=val, threshold_method=e.threshold, n_bootstrap=boot, level=e.ci_level,
                      seed=cfg.seed, split=ext.name)
    # No NIH-validation operating point is carried to another hospital's set: underdiagnosis rates are left
    # empty there (with the reason in the block), calibration and subgroup AUCs are computed.
    block.update(extra_metrics(pred, None, csv, n_bootstrap=boot, level=e.ci_level, seed=cfg.seed))
    summary = ext.summary()
    if facts["rejected"]:
        summary["excluded"]["image rejected by the decoder"] = facts["rejected"]
    summary["n_images"], summary["n_patients"] = int(len(pred)), int(len(set(pred.patient_ids)))
    metrics = {
        "dataset": ext.name, "label_set": cfg.data.label_set, "labels": labels, "run_id": rec.run_id,
        "test": block, "data": summary, "predictions_from": facts["source"],
        "thresholds_from": "NIH validation split of the run (predictions/val.csv)",
        "checkpoint": facts["checkpoint"], "timing": facts["timing"],
    }
    out_dir = rec.external_dir(ext.name)
    if ckpt is not None:
        write_split_predictions(out_dir / "predictions.csv", pred)
    atomic_write_json(out_dir / "metrics.json", metrics)
    run = RunDir(rec.run_dir, rec.run_id)
    if isinstance(rec.manifest.get("artifacts"), dict):
        with run.lock():
            manifest = run.manifest()
            prefix = f"{out_dir.parent.name}/{ext.name}/"
            manifest.setdefault("artifacts", {}).update(
                {k: v for k, v in artifact_record(rec.run_dir).items() if k.startswith(prefix)})
            run.write_manifest(manifest)
    rate = (facts["timing"] or {}).get("images_per_s")
    log.info("%s on %s: mean AUC %s over %d labels, %d images%s", rec.run_id, ext.name, block.get("mean_auc"),
             len(labels), len(pred), f" ({rate} images/s)" if rate else " (outside predictions)")
    return metrics


def external_summary_rows(recs: Sequence[RunRecord], dataset: str) -> list[dict[str, Any]]:
    """One line per run for the CLI: run, images, mean AUC [CI] on the set and on NIH test (same labels)."""
    rows = []
    for rec in recs:
        m = rec.external_metrics(dataset)
        t = m.get("test") or {}
        nih = (rec.metrics.get("test") or {}).get("per_label") or {}
        nih_aucs = [nih.get(lab, {}).get("auc") for lab in m.get("labels", [])]
        nih_aucs = [a for a in nih_aucs if a is not None]
        rows.append({"run_id": rec.run_id, "dataset": dataset, "n_images": t.get("n_images"),
                     "mean_auc": t.get("mean_auc"), "ci": t.get("mean_auc_ci"),
                     "nih_mean_auc_same_labels": sum(nih_aucs) / len(nih_aucs) if nih_aucs else None})
    return rows


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def evaluate_external_cli(args: argparse.Namespace, echo: Callable[[str], None] = log.info) -> int:
    """``cxr-bench evaluate --dataset NAME --data-root DIR (--run-dir RUN_DIR | --runs STORE [--suite S])``;
    one line per scored run goes to ``echo`` (the CLI passes ``print``)."""
    from ..data.external import get_spec, nih_overlap_note, open_external

    dataset = str(args.dataset).lower()
    spec = get_spec(dataset)
    if not getattr(args, "data_root", None):
        raise ConfigError(f"--dataset {dataset} needs --data-root DIR (expected layout: {spec.layout}; get it: "
                          f"{spec.access})")
    run = getattr(args, "run", None)
    runs = getattr(args, "runs", None)
    if run:
        recs = [RunRecord.load(run)]
    elif runs:
        recs = load_runs(runs, getattr(args, "suite", None))
        if not recs:
            raise RunStoreError(f"no completed, intact run under {runs}"
                                + (f" (suite {args.suite})" if getattr(args, "suite", None) else ""))
    else:
        raise ConfigError("--dataset needs --run-dir RUN_DIR or --runs STORE [--suite S]")
    for rec in recs:  # every run checked before any work
        _check_run(rec, dataset)
    ext = open_external(dataset, args.data_root)
    progress = False if getattr(args, "no_progress", False) else None
    note = nih_overlap_note(spec)
    if note:
        log.warning("%s", note)
    for rec in recs:
        evaluate_run_external(rec, ext, progress=progress)
    for row in external_summary_rows(recs, dataset):
        ci = row["ci"] or [None, None]
        echo(f"{row['run_id']}  {dataset}: {row['n_images']} images, mean AUC {_fmt(row['mean_auc'])} "
             f"[{_fmt(ci[0])}, {_fmt(ci[1])}]; NIH test, same labels {_fmt(row['nih_mean_auc_same_labels'])}")
    echo(f"wrote external/{dataset}/metrics.json and predictions.csv in {len(recs)} run(s); "
         "`cxr-bench leaderboard` adds leaderboard_generalization.csv")
    return 0
