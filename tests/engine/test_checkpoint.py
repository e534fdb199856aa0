"""Checkpoints: a full training state survives save -> torch.load(weights_only=True) -> continue."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from cxr_bench.config import OptimConfig
from cxr_bench.engine.checkpoint import load_checkpoint, save_checkpoint
from cxr_bench.engine.optim import build_optimizer, build_schedule
from cxr_bench.engine.seeding import capture_rng_state, restore_rng_state, scoped_rng
from cxr_bench.errors import TrainingError


def _make(scheduler: str) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 3))
    cfg = OptimConfig(optimizer="adamw", lr=0.01, scheduler=scheduler, epochs=3,
                      warmup_epochs=1 if scheduler == "cosine" else 0)
    opt = build_optimizer(model, cfg)
    return model, opt, build_schedule(opt, cfg, steps_per_epoch=4)


def _steps(model: nn.Module, opt: torch.optim.Optimizer, sched, n: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n):
        x = torch.randn(5, 6, generator=g)
        loss = model(x).pow(2).mean()  # dropout draws from the global RNG
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step_batch()
        losses.append(loss.item())
    sched.step_epoch(0.5)
    return losses


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
def test_round_trip_continues_identically(tmp_path, scheduler):
    with scoped_rng(0, "test"):
        model, opt, sched = _make(scheduler)
        _steps(model, opt, sched, 3, seed=1)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        save_checkpoint(tmp_path / "last.pt", {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
            "scaler": scaler.state_dict(), "rng": [capture_rng_state()], "epoch": 1, "step": 3,
            "best_metric": -math.inf, "best_epoch": None, "finished": False,
            "history": [{"epoch": 1, "val_mean_auc": float("nan"), "lr": 0.01}],
        })
        expected = _steps(model, opt, sched, 4, seed=2)
        expected_weights = {k: v.clone() for k, v in model.state_dict().items()}
        expected_lr = opt.param_groups[0]["lr"]

    with scoped_rng(123, "other"):  # a different process state before resuming
        ck = load_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
        model2, opt2, sched2 = _make(scheduler)
        model2.load_state_dict(ck["model"])
        opt2.load_state_dict(ck["optimizer"])
        sched2.load_state_dict(ck["schedule"])
        restore_rng_state(ck["rng"][0])
        got = _steps(model2, opt2, sched2, 4, seed=2)

    assert got == expected  # exact: same dropout masks, same Adam moments, same LR sequence
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected_weights[k]), k
    assert opt2.param_groups[0]["lr"] == expected_lr
    assert ck["step"] == 3 and ck["best_metric"] == -math.inf and ck["best_epoch"] is None
    assert math.isnan(ck["history"][0]["val_mean_auc"])


def test_torch_load_weights_only_accepts_the_file(tmp_path):
    model, opt, sched = _make("cosine")
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "schedule": sched.state_dict(), "rng": [capture_rng_state()]})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format"] == 1 and set(raw["model"]) == set(model.state_dict())


def test_bad_files_raise_training_error(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(TrainingError, match="cannot be read.*delete it"):
        load_checkpoint(torn)
    torch.save({"format": 99}, tmp_path / "future.pt")
    with pytest.raises(TrainingError, match="format 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"epoch": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_compact_finished_keeps_counters_and_drops_training_state(tmp_path):
    import torch

    from cxr_bench.engine.checkpoint import BEST, LAST, compact_finished, load_checkpoint, save_checkpoint

    big = {"w": torch.zeros(100_000)}
    state = {"run_id": "r", "epoch": 2, "step": 8, "best_metric": 0.7, "best_epoch": 1, "history": [{"epoch": 1}],
             "model": big, "optimizer": {"state": big}, "schedule": {}, "scaler": {}}
    save_checkpoint(tmp_path / LAST, {**state, "finished": False})
    assert compact_finished(tmp_path / LAST) == 0  # unfinished: training may continue from it
    save_checkpoint(tmp_path / LAST, {**state, "finished": True})
    assert compact_finished(tmp_path / LAST) == 0  # no best.pt: last.pt holds the only weights
    save_checkpoint(tmp_path / BEST, {"run_id": "r", "epoch": 1, "best_metric": 0.7, "model": big})
    assert compact_finished(tmp_path / LAST) > 350_000  # the 400 kB tensor (saved once: shared storage)
    ck = load_checkpoint(tmp_path / LAST)
    assert ck["finished"] is True and ck["epoch"] == 2 and ck["history"] == [{"epoch": 1}]
    assert not {"model", "optimizer", "schedule", "scaler"} & set(ck)
    assert compact_finished(tmp_path / LAST) == 0  # idempotent


def test_model_state_that_does_not_fit_names_the_file_and_the_tensor(tmp_path):
    from cxr_bench.engine.checkpoint import load_model_state

    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 3))
    path = tmp_path / "checkpoints" / "best.pt"
    good = {k: v.clone() for k, v in model.state_dict().items()}
    load_model_state(model, good, path)  # fits: loads silently
    wrong = {**good, "1.weight": torch.zeros(14, 8)}
    with pytest.raises(TrainingError) as e:
        load_model_state(model, wrong, path)
    msg = str(e.value)
    assert str(path) in msg and "1.weight has shape (14, 8), this model's is (3, 8)" in msg
    assert f"delete {path.parent}" in msg and "\n" not in msg
    with pytest.raises(TrainingError, match=r"unexpected tensor extra.*missing tensor 0.bias"):
        load_model_state(model, {**{k: v for k, v in good.items() if k != "0.bias"}, "extra": torch.zeros(1)}, path)
    with pytest.raises(TrainingError, match="not a state dict"):
        load_model_state(model, None, path)
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())  # nothing half-loaded


@pytest.mark.slow
def test_run_checkpoint_with_a_wrong_shape_fails_with_what_to_do(tmp_path, phantom_root, run_config):
    from cxr_bench.engine.checkpoint import BEST, LAST
    from cxr_bench.engine.trainer import evaluate_checkpoint, train_run

    cfg = run_config(phantom_root, optim={"epochs": 2, "max_steps_per_epoch": 1}, eval={"bootstrap": 10})
    train_run(cfg, tmp_path, progress=False)
    ckpt = tmp_path / "checkpoints"
    for name in (LAST, BEST):
        state = load_checkpoint(ckpt / name)
        key = next(k for k, v in state["model"].items() if v.ndim == 2)  # the classifier's weight
        state["model"][key] = state["model"][key][:-1]  # one label fewer: a model of another definition
        state.update({"finished": False, "epoch": 1} if name == LAST else {})
        save_checkpoint(ckpt / name, state)
    last, best, k = re.escape(str(ckpt / LAST)), re.escape(str(ckpt / BEST)), re.escape(key)
    with pytest.raises(TrainingError, match=rf"checkpoint {last} does not fit .*{k} has shape .*delete"):
        train_run(cfg, tmp_path, progress=False)
    with pytest.raises(TrainingError, match=rf"checkpoint {best} does not fit .*{k}"):
        evaluate_checkpoint(cfg, ckpt / BEST, splits=("test",))
