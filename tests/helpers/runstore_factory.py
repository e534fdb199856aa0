"""A tiny but realistic run store for the results and reports tests.

Every file follows the contracts of docs/architecture.md and cxr_bench/runner/store.py: ``config.json`` is a
real ``RunConfig.to_dict()``, predictions are written by ``metrics.predictions.write_predictions`` and
``metrics.json`` blocks by ``metrics.roc.summarize`` -- only the model outputs are synthetic (scores that
separate the classes with a per-run strength), so every number downstream is a real computation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxr_bench.config import RunConfig
from cxr_bench.data.bundled import full_metadata_root
from cxr_bench.data.labels import get_label_set
from cxr_bench.metrics.extended import REPLICATES_NAME
from cxr_bench.metrics.paired import save_replicates
from cxr_bench.metrics.predictions import write_predictions
from cxr_bench.metrics.roc import summarize
from cxr_bench.results.expert import expert_labels
from cxr_bench.runner.store import artifact_record
from cxr_bench.utils.io import atomic_write_json, sha256_file

N_EXPERT = 30  # test images that the Google 2019 labels cover
N_OTHER = 60
N_VAL = 40
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATA_ENTRY_SHA = "9d4de640ee4f760215d8be98376b20387ca52f9c6b4d1b727cb588fb82f40b80"


def _test_images() -> list[str]:
    experts = expert_labels()
    covered = experts.loc[experts["set_id"] == "test", "image"].tolist()[:N_EXPERT]
    names = (full_metadata_root() / "test_list.txt").read_text().split()
    covered_set = set(experts["image"])
    others = [n for n in names if n not in covered_set][:N_OTHER]
    return covered + others


def _val_images() -> list[str]:
    names = (full_metadata_root() / "train_val_list.txt").read_text().split()
    return names[:N_VAL]


def _truth(images: list[str], labels: tuple[str, ...], seed: int) -> np.ndarray:
    # The same truth for every run (one test set); ~25% prevalence so every label has both classes.
    all14 = get_label_set("chestxray14").labels
    rng = np.random.default_rng(seed)
    full = (rng.random((len(images), len(all14))) < 0.25).astype(np.int8)
    full[0], full[1] = 1, 0
    return full[:, [all14.index(lab) for lab in labels]]


def _scores(y: np.ndarray, strength: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = strength * (2 * y - 1) + rng.normal(size=y.shape)
    return 1.0 / (1.0 + np.exp(-logits))


def write_run(root: Path, suite: str, overrides: dict[str, Any], *, strength: float, profile: str = "sample",
              pairs: list[dict[str, Any]] | None = None, status: str = "completed",
              n_bootstrap: int = 100, test_extra: dict[str, Any] | None = None,
              extended: bool = False, replicates: bool = False) -> tuple[str, Path]:
    """One run directory; returns (run_id, path). ``extended`` adds the trainer's ``calibration`` and
    ``subgroups`` blocks to metrics.json's test block (:func:`cxr_bench.metrics.extended.extra_metrics`);
    ``test_extra`` is merged into that block last; ``replicates`` saves the test predictions' bootstrap
    replicates beside them, as a run completed by the trainer has them."""
    cfg = RunConfig().replace(**overrides)
    run_id = cfg.run_id()
    run_dir = root / suite / run_id
    labels = get_label_set(cfg.data.label_set).labels
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    manifest: dict[str, Any] = {
        "manifest_version": 1, "run_id": run_id, "status": status,
        "git": {"root": "/src", "commit": COMMIT, "dirty": False},
        "suite": {"name": suite, "file": f"{suite}.toml", "file_sha256": "0" * 64, "profile": profile,
                  "blocks": ["main"], "grid": {}, "pairs": pairs or []},
        "data": {"file_hashes": {"Data_Entry_2017_v2020.csv": DATA_ENTRY_SHA}},
        "error": None,
    }
    error = None
    if status == "failed":
        error = "TrainingError: loss is NaN at step 3"
        manifest["error"] = {"type": "TrainingError", "message": error, "traceback": "..."}
    atomic_write_json(run_dir / "manifest.json", manifest)
    if status != "completed":
        return run_id, run_dir

    seed = int(run_id[:8], 16)  # deterministic, and different for every run
    blocks = {}
    for split, images in (("test", _test_images()), ("val", _val_images())):
        y = _truth(images, labels, seed=1 if split == "test" else 2)
        p = _scores(y, strength, seed + (split == "val"))
        patients = [name.split("_")[0] for name in images]
        write_predictions(run_dir / "predictions" / f"{split}.csv", images, patients, y, p, labels)
    from cxr_bench.metrics.predictions import read_predictions

    val = read_predictions(run_dir / "predictions" / "val.csv")
    if replicates:  # as metrics.extended.score_run saves them when a run completes
        test = read_predictions(run_dir / "predictions" / "test.csv")
        save_replicates(run_dir / "predictions" / REPLICATES_NAME, test.y_true, test.y_prob, test.patient_ids,
                        test.labels, model_key=sha256_file(run_dir / "predictions" / "test.csv"))
    for split in ("test", "val"):
        pred = read_predictions(run_dir / "predictions" / f"{split}.csv")
        blocks[split] = summarize(pred, val=val, n_bootstrap=n_bootstrap, seed=0, split=split)
    if extended:
        from cxr_bench.metrics.extended import extra_metrics

        test = read_predictions(run_dir / "predictions" / "test.csv")
        blocks["test"].update(extra_metrics(test, val, n_bootstrap=n_bootstrap, seed=0))
    blocks["test"].update(test_extra or {})
    metrics = {"label_set": cfg.data.label_set, "labels": list(labels), **blocks, "best_epoch": 2,
               "epochs_run": 3, "train_images_per_s": 123.4, "params": 3_200_000 + len(labels), "gmacs": 0.58}
    atomic_write_json(run_dir / "metrics.json", metrics)
    (run_dir / "history.csv").write_text(
        "epoch,step,train_loss,val_loss,val_mean_auc,lr,epoch_seconds,train_images_per_s\n"
        "0,10,0.7,0.69,0.6,0.001,1.0,120.0\n1,20,0.6,0.62,0.7,0.0005,1.0,125.0\n"
    )
    manifest["artifacts"] = artifact_record(run_dir)  # as the runner records a run's files at completion
    atomic_write_json(run_dir / "manifest.json", manifest)
    return run_id, run_dir


LOC_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax")


def write_localization(run_dir: Path) -> None:
    """A ``localization.csv`` as ``cxr-bench localize`` writes it: accuracy = 0.05 * (label index + 1) at
    every threshold scaled by (1 - T), afp 0.5, Nodule without ground-truth boxes."""
    rows = ["label,metric,threshold,accuracy,afp,n_gt,n_images"]
    for metric, thresholds in (("iobb", (0.1, 0.25, 0.5, 0.75, 0.9)), ("iou", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7))):
        for t in thresholds:
            for i, lab in enumerate(LOC_LABELS):
                n_gt = 0 if lab == "Nodule" else 4
                acc = "" if n_gt == 0 else f"{0.05 * (i + 1) * (1 - t):.6f}"
                rows.append(f"{lab},{metric},{t},{acc},0.5,{n_gt},{n_gt}")
    (run_dir / "localization.csv").write_text("\n".join(rows) + "\n")


def make_run_store(root: Path, *, with_failed: bool = True) -> dict[str, str]:
    """Two suites: ``wang2017`` (three replication runs) and ``ablations`` (a baseline, a grayscale variant
    and an attention-head variant, pairs recorded as the runner does; one failed run). Returns name -> id."""
    ids: dict[str, str] = {}
    base = {"optim.epochs": 3, "data.image_size": 64}
    ids["resnet50_14"], _ = write_run(root, "wang2017", {**base, "model.backbone": "resnet50", "loss.name": "wcel"},
                                      strength=1.2)
    ids["alexnet_8"], _ = write_run(root, "wang2017", {**base, "model.backbone": "alexnet",
                                                       "data.label_set": "chestxray8", "loss.name": "wcel"},
                                    strength=0.5)
    ids["resnet50_8"], rn8 = write_run(root, "wang2017", {**base, "model.backbone": "resnet50",
                                                          "data.label_set": "chestxray8", "loss.name": "wcel"},
                                       strength=0.9)
    write_localization(rn8)
    abl = {**base, "model.backbone": "mobilenet_v1"}
    ids["baseline"], _ = write_run(root, "ablations", abl, strength=0.8)
    ids["gamma"], _ = write_run(root, "ablations", {**abl, "data.grayscale": "gamma"}, strength=1.0, pairs=[
        {"block": "grayscale", "factor": "data.grayscale", "reference": ids["baseline"],
         "reference_value": "identity", "value": "gamma"}])
    ids["attention"], _ = write_run(root, "ablations", {**abl, "model.head": "attention"}, strength=0.8, pairs=[
        {"block": "attention", "factor": "model.head", "reference": ids["baseline"],
         "reference_value": "gap", "value": "attention"}])
    if with_failed:
        ids["failed"], _ = write_run(root, "ablations", {**abl, "seed": 7}, strength=0.0, status="failed")
    return ids
