"""A run's TensorBoard scalars (read back with TensorBoard's own EventAccumulator) and its progress lines off
a terminal."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.engine.tensorboard import RunBoard
from cxr_bench.engine.trainer import train_run
from cxr_bench.metrics.predictions import read_predictions
from cxr_bench.utils import progress as progress_module

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _scalars(run_dir) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def finished_run(phantom_root, tmp_path_factory):
    """One 2-epoch run with progress left to its default (off a terminal: log lines), and what it logged."""
    from small_run import SMALL_RUN as BASE

    from cxr_bench.config import RunConfig, deep_merge

    cfg = RunConfig.from_dict(deep_merge(BASE, {"data": {"root": str(phantom_root)},
                                                "optim": {"max_steps_per_epoch": 2}, "eval": {"bootstrap": 10}}))
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("cxr_bench.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    spacing = progress_module.LOG_MIN_SECONDS
    progress_module.LOG_MIN_SECONDS = 0.0  # every loop reports, however fast this machine runs it
    try:
        metrics = train_run(cfg, run_dir, progress=None)
    finally:
        progress_module.LOG_MIN_SECONDS = spacing
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return run_dir, metrics, [r.getMessage() for r in records]


def test_event_files_hold_the_history_and_per_label_auc(finished_run):
    run_dir, metrics, _ = finished_run
    assert list(run_dir.glob("events.out.tfevents.*")), "no event file beside history.csv"
    scalars = _scalars(run_dir)
    hist = pd.read_csv(run_dir / "history.csv")
    for tag, column in (("train/loss", "train_loss"), ("val/loss", "val_loss"), ("val/mean_auc", "val_mean_auc"),
                        ("lr", "lr"), ("train/images_per_s", "train_images_per_s")):
        assert sorted(scalars[tag]) == hist["epoch"].tolist(), tag
        for epoch, value in zip(hist["epoch"], hist[column]):
            assert scalars[tag][epoch] == pytest.approx(value, rel=1e-6), (tag, epoch)  # stored as float32
    # Per-label AUC of the best epoch, recomputed with scikit-learn from the saved val predictions.
    val = read_predictions(run_dir / "predictions" / "val.csv", labels=metrics["labels"])
    best = metrics["best_epoch"]
    defined = [j for j in range(len(val.labels)) if 0 < val.y_true[:, j].sum() < len(val.y_true)]
    assert defined and len(defined) < len(val.labels)  # the phantoms leave two labels without positives
    for j, label in enumerate(val.labels):
        tag = f"val/auc/{label}"
        if j in defined:
            assert scalars[tag][best] == pytest.approx(roc_auc_score(val.y_true[:, j], val.y_prob[:, j]), abs=1e-6)
        else:
            assert tag not in scalars  # undefined (NaN) AUCs are not plotted as zeros


def test_progress_is_logged_off_a_terminal(finished_run):
    _, _, lines = finished_run
    # Two epochs of two batches each end with one summary line each; val and test loops log theirs.
    assert sum(line.startswith("epoch 1/2: 100% 2/2 batch in ") for line in lines) == 1
    assert sum(line.startswith("epoch 2/2: 100% 2/2 batch in ") for line in lines) == 1
    assert any(line.startswith("val: 100% ") for line in lines)
    assert any(line.startswith("test: 100% ") for line in lines)
    assert not any("\r" in line for line in lines)


def test_a_resumed_run_replaces_the_epochs_it_repeats(tmp_path):
    board = RunBoard(tmp_path, enabled=True)
    for epoch in (1, 2, 3):
        board.epoch({"epoch": epoch, "train_loss": float(epoch)}, {"Mass": 0.5})
    board.close()
    # Killed during epoch 3's checkpoint: the run resumes after epoch 2 and trains epoch 3 again.
    board = RunBoard(tmp_path, resume_epoch=2, enabled=True)
    board.epoch({"epoch": 3, "train_loss": 30.0, "val_mean_auc": float("nan")}, {"Mass": float("nan")})
    board.close()
    scalars = _scalars(tmp_path)
    assert scalars["train/loss"] == {1: 1.0, 2: 2.0, 3: 30.0}
    assert scalars["val/auc/Mass"] == {1: 0.5, 2: 0.5}  # NaN is not written; the old epoch 3 point is purged
    assert "val/mean_auc" not in scalars


def test_disabled_board_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_BENCH_TENSORBOARD", "0")
    board = RunBoard(tmp_path)
    board.epoch({"epoch": 1, "train_loss": 1.0}, {})
    board.close()
    assert not board.enabled and list(tmp_path.iterdir()) == []
