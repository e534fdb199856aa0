"""Miniature external sets (real metadata rows, phantom pixels, real layouts) and a tiny trained NIH run.

Built once per test process (the metadata parse of PadChest and OpenI takes seconds) under a directory the
caller's session fixture gives. ``HAND_PICKED`` are real rows whose NIH labels the tests spell out by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr_bench.data.external.fixtures import make_external_fixture

HAND_PICKED: dict[str, list[str]] = {
    "openi": ["CXR1102_IM-0069-12012.png", "CXR1_1_IM-0001-3001.png"],
    "padchest": ["184768585622747149847312236491996945269_hpn97q.png",
                 "20536686640136348236148679891455886468_k6ga29.png",
                 "135803415504923515076821959678074435083_fzis7b.png",
                 "135803415504923515076821959678074435083_fzis7d.png",  # its lateral sibling
                 "211098384400672666381592841782955166530_5_f74m01.png"],
    "chexpert": ["train/patient00023/study9/view1_frontal.jpg", "train/patient00002/study1/view2_lateral.jpg"],
    "rsna": ["0ab261f9-4eb5-42ab-a9a5-e918904d6356.jpg", "0004cfab-14fd-4e49-80ba-63a80b6bddd6.jpg"],
    "siim": ["1.2.276.0.7230010.3.1.4.8323329.1851.1517875169.919023.png",
             "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.png"],
}

_BUILT: dict[str, Path] = {}


def external_fixtures(base: Path, n_images: int = 12, size: int = 32) -> dict[str, Path]:
    """name -> data root of each set's miniature (hand-picked rows plus ~n_images chosen ones). Built once per
    process, under the first ``base`` given; tests that change a set copy it first."""
    if not _BUILT:
        _BUILT.update({name: make_external_fixture(name, base / name, images=rows, n_images=n_images, size=size)
                       for name, rows in HAND_PICKED.items()})
    return dict(_BUILT)


def train_demo_run(base: Path) -> Path:
    """A demo-size run (timm's test network, 32 px, 3 epochs) on a 14-label phantom NIH release, in a run
    store ``base/runs/demo/<run_id>`` with its config.json, as ``cxr-bench train`` leaves it. Seconds."""
    from cxr_bench.config import RunConfig
    from cxr_bench.data.labels import CHESTXRAY14
    from cxr_bench.data.phantoms import make_phantom_release
    from cxr_bench.engine.trainer import train_run
    from cxr_bench.utils.io import atomic_write_json

    release = make_phantom_release(base / "nih", n_patients=80, images_per_patient=2, size=32, labels=CHESTXRAY14)
    cfg: dict[str, Any] = {
        "data": {"root": str(release), "label_set": "chestxray14", "image_size": 32, "val_fraction": 0.25,
                 "workers": 0, "cache_dir": str(base / "cache")},
        "model": {"backbone": "timm:test_resnet"},
        "optim": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "scheduler": "cosine"},
        "eval": {"bootstrap": 50, "batch_size": 32}, "device": "cpu", "seed": 0}
    rc = RunConfig.from_dict(cfg)
    run_dir = base / "runs" / "demo" / rc.run_id()
    atomic_write_json(run_dir / "config.json", rc.to_dict())
    train_run(rc, run_dir, progress=False)
    return run_dir


# ---------------------------------------------------------------------------------- a factory store
SHARED = ["Atelectasis", "Cardiomegaly", "Effusion"]


def score_factory_run(run_dir: Path, dataset: str, strength: float, *,
                      title: str = "<script>alert(1)</script>") -> None:
    """External files for a runstore_factory run, written by the real writers from synthetic scores: the same
    80 images and truth for every run, scores separating the classes with ``strength``."""
    import numpy as np

    from cxr_bench.metrics.predictions import read_predictions, write_predictions
    from cxr_bench.metrics.roc import summarize
    from cxr_bench.utils.io import atomic_write_json

    rng = np.random.default_rng(7)
    images = [f"ext_{i:03d}.png" for i in range(80)]
    patients = [f"p{i // 2}" for i in range(80)]
    y = (rng.random((80, len(SHARED))) < 0.3).astype(np.int8)
    noise = np.random.default_rng(int(strength * 100)).normal(size=y.shape)
    p = 1 / (1 + np.exp(-(strength * (2 * y - 1) + noise)))
    out = run_dir / "external" / dataset
    write_predictions(out / "predictions.csv", images, patients, y, p, SHARED)
    pred = read_predictions(out / "predictions.csv")
    val = read_predictions(run_dir / "predictions" / "val.csv").select(SHARED)
    atomic_write_json(out / "metrics.json", {
        "dataset": dataset, "labels": SHARED, "test": summarize(pred, val=val, n_bootstrap=50, split=dataset),
        "data": {"title": title, "bootstrap_unit": "patient", "n_images": 80, "n_patients": 40}})


def scored_factory_store(root: Path, store_factory: Any) -> tuple[Path, dict[str, Path]]:
    """Suite ``gen``: runs ``weak`` and ``strong`` scored on ``openi``, ``unscored`` not."""
    base = {"optim.epochs": 3, "data.image_size": 64, "model.backbone": "resnet50"}
    dirs = {}
    for name, strength in (("weak", 0.4), ("strong", 1.5), ("unscored", 1.0)):
        _, dirs[name] = store_factory.write_run(root, "gen", {**base, "seed": int(strength * 10)}, strength=strength)
    score_factory_run(dirs["weak"], "openi", 0.4)
    score_factory_run(dirs["strong"], "openi", 1.5)
    return root, dirs
