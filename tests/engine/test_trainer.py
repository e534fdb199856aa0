"""train_run end to end on phantoms: it learns, writes every artifact, stops on NaN, and honours the config."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cxr_bench.engine.checkpoint import load_checkpoint
from cxr_bench.engine.losses import LOSSES, BCELoss
from cxr_bench.engine.trainer import HISTORY_COLUMNS, build_model, evaluate_checkpoint, train_run
from cxr_bench.errors import TrainingError
from cxr_bench.metrics.predictions import read_predictions
from cxr_bench.metrics.roc import per_label_auc
from cxr_bench.utils.io import read_json

MISSING = ["Infiltration", "Pneumonia"]  # chestxray8 labels the phantoms never plant


@pytest.mark.slow
def test_short_run_learns_planted_labels(tmp_path, learning_phantom, run_config):
    cfg = run_config(learning_phantom, data={"image_size": 64}, optim={"epochs": 6})
    metrics = train_run(cfg, tmp_path, progress=False)

    assert metrics == read_json(tmp_path / "metrics.json")
    # Chance is 0.5; the planted lesions are learnable in a few epochs.
    assert metrics["val"]["mean_auc"] > 0.8
    assert metrics["test"]["mean_auc"] > 0.8
    assert metrics["labels"] == ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                                 "Pneumonia", "Pneumothorax"]
    # Labels without positives are reported missing (null AUC, out of the mean), not a crash.
    for split in ("val", "test"):
        assert metrics[split]["missing_labels"] == MISSING
        assert all(metrics[split]["per_label"][lab]["auc"] is None for lab in MISSING)
        lo, hi = metrics[split]["mean_auc_ci"]
        assert lo <= metrics[split]["mean_auc"] <= hi
    assert metrics["epochs_run"] == 6 and metrics["gmacs"] > 0
    # params comes from a shapes-only build by name; it must count the model that was really trained.
    trained = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["model"]
    model = build_model(cfg, tuple(metrics["labels"]))
    assert set(trained) == set(model.state_dict())
    assert metrics["params"] == sum(trained[name].numel() for name, _ in model.named_parameters())
    assert metrics["train_images_per_s"] > 0

    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist.columns) == list(HISTORY_COLUMNS)
    assert hist["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert metrics["best_epoch"] == int(hist.loc[hist["val_mean_auc"].idxmax(), "epoch"])
    assert hist["lr"].is_monotonic_decreasing  # cosine
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]

    # The test block is computed from the saved predictions of the best epoch: recompute it from the file.
    test = read_predictions(tmp_path / "predictions" / "test.csv", labels=metrics["labels"])
    auc = per_label_auc(test.y_true, test.y_prob)
    assert np.nanmean(auc) == pytest.approx(metrics["test"]["mean_auc"], abs=1e-12)
    assert len(set(test.images)) == len(test) == metrics["test"]["n_images"]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == metrics["best_epoch"]
    assert best["best_metric"] == pytest.approx(metrics["val"]["mean_auc"], abs=1e-12)
    # Thresholds are chosen on val and applied to test.
    for lab, block in metrics["test"]["per_label"].items():
        if lab not in MISSING:
            assert block["threshold"] == metrics["val"]["per_label"][lab]["threshold"]


def test_options_accumulation_plateau_sgd_and_caller_rng(tmp_path, phantom_root, run_config):
    cfg = run_config(
        phantom_root,
        loss={"name": "wcel"},
        model={"drop_rate": 0.2},
        optim={"optimizer": "sgd", "momentum": 0.9, "scheduler": "plateau", "epochs": 2, "batch_size": 4,
               "accum_steps": 2, "max_steps_per_epoch": 2, "grad_clip": 1.0},
        eval={"bootstrap": 20},
    )
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    metrics = train_run(cfg, tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched

    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["step"].tolist() == [2, 4]  # 2 optimizer steps of 2 micro-batches each per epoch
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 4 and last["epoch"] == 2 and last["finished"] is True
    assert last["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert last["schedule"]["plateau"] is not None and last["schedule"]["per_step"] is None
    assert metrics["epochs_run"] == 2 and math.isfinite(metrics["test"]["mean_auc"])

    # A finished run called again does not train again; it re-evaluates to the same numbers.
    again = train_run(cfg, tmp_path, progress=False)
    assert again == metrics
    assert pd.read_csv(tmp_path / "history.csv").equals(hist)

    # The saved best model re-scored in one process gives the saved predictions.
    preds = evaluate_checkpoint(cfg, tmp_path / "checkpoints" / "best.pt", splits=("test",))
    saved = read_predictions(tmp_path / "predictions" / "test.csv")
    np.testing.assert_array_equal(preds["test"].images, saved.images)
    np.testing.assert_array_equal(preds["test"].y_prob, saved.y_prob)


def test_other_config_in_same_run_dir_is_refused(tmp_path, phantom_root, run_config):
    cfg = run_config(phantom_root, optim={"epochs": 1, "max_steps_per_epoch": 1}, eval={"bootstrap": 10})
    train_run(cfg, tmp_path, progress=False)
    with pytest.raises(TrainingError, match="belongs to run"):
        train_run(cfg.replace(**{"optim.lr": 0.5}), tmp_path, progress=False)


@pytest.fixture
def nan_loss(monkeypatch):
    """A real BCE that turns NaN after ``after`` calls, registered as loss ``nan_after``."""

    class NanAfter(BCELoss):
        def __init__(self, after: int) -> None:
            super().__init__()
            self.after = after
            self.calls = 0

        def forward(self, logits, targets):
            self.calls += 1
            loss = super().forward(logits, targets)
            return loss * float("nan") if self.calls > self.after else loss

    monkeypatch.setitem(LOSSES._entries, "nan_after", lambda train_labels, after=2: NanAfter(after))


def test_non_finite_loss_stops_with_training_error(tmp_path, phantom_root, run_config, nan_loss):
    # Calls 1-2: epoch 1's two training steps; call 3: epoch 1's validation loss (NaN in history.csv, but
    # only a training loss stops a run); call 4: epoch 2, step 1 -> TrainingError.
    cfg = run_config(phantom_root, loss={"name": "nan_after", "kwargs": {"after": 2}},
                     optim={"epochs": 3, "max_steps_per_epoch": 2})
    with pytest.raises(TrainingError, match=r"non-finite training loss \(nan\) at epoch 2, step 1 .*epoch 1"):
        train_run(cfg, tmp_path, progress=False)
    # The last good checkpoint (epoch 1) is kept and nothing was evaluated.
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "metrics.json").exists()


def test_non_finite_loss_in_first_epoch(tmp_path, phantom_root, run_config, nan_loss):
    cfg = run_config(phantom_root, loss={"name": "nan_after", "kwargs": {"after": 0}}, optim={"epochs": 1})
    with pytest.raises(TrainingError, match="epoch 1, step 1 .*no epoch had finished"):
        train_run(cfg, tmp_path, progress=False)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_early_stopping_when_val_auc_stops_improving(tmp_path, phantom_root, run_config):
    # AlexNet has no BatchNorm and lr 1e-30 moves no float32 weight, so every epoch scores the same val
    # AUC: epoch 1 is best, epoch 2 is not better, and patience 1 stops the run there (not after 5).
    cfg = run_config(phantom_root, data={"image_size": 64, "augment": "none"}, model={"backbone": "alexnet"},
                     optim={"epochs": 5, "lr": 1e-30, "early_stopping_patience": 1, "max_steps_per_epoch": 1},
                     eval={"bootstrap": 10})
    metrics = train_run(cfg, tmp_path, progress=False)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["val_mean_auc"].nunique() == 1
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["finished"] is True
