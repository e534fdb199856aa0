"""A run SIGKILLed mid-training and started again ends exactly like a run that was never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from cxr_bench.engine.checkpoint import load_checkpoint
from cxr_bench.utils.io import read_json

TIMING = ("epoch_seconds", "train_images_per_s")  # wall-clock columns: the only ones allowed to differ


def _train_cmd(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cxr_bench", "train", "--config", str(config), "--run-dir", str(run_dir),
            "--no-progress"]


def _run(config: Path, run_dir: Path) -> None:
    proc = subprocess.run(_train_cmd(config, run_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path, learning_phantom, run_config):
    # Everything that could break exactness is on: shuffling, flip augmentation in a persistent DataLoader
    # worker, dropout (global RNG), AdamW moments, a per-step cosine schedule with warmup.
    cfg = run_config(learning_phantom, data={"workers": 1}, model={"drop_rate": 0.3},
                     optim={"epochs": 3, "warmup_epochs": 1, "batch_size": 16})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))

    reference = tmp_path / "uninterrupted"
    _run(config, reference)

    resumed = tmp_path / "resumed"
    last = resumed / "checkpoints" / "last.pt"
    proc = subprocess.Popen(_train_cmd(config, resumed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not last.exists():  # the first epoch's checkpoint: we are now at the start of epoch 2
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        time.sleep(0.3)  # partway into epoch 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (resumed / "metrics.json").exists(), "the run finished before it was killed; nothing tested"
    killed_at = load_checkpoint(last)["epoch"]
    assert 1 <= killed_at < 3

    _run(config, resumed)  # same command again: resumes from last.pt

    m_ref, m_res = read_json(reference / "metrics.json"), read_json(resumed / "metrics.json")
    m_ref.pop("train_images_per_s"), m_res.pop("train_images_per_s")
    assert m_res == m_ref
    for split in ("val", "test"):
        a = (reference / "predictions" / f"{split}.csv").read_bytes()
        b = (resumed / "predictions" / f"{split}.csv").read_bytes()
        assert a == b, f"{split} predictions differ"
    h_ref = pd.read_csv(reference / "history.csv").drop(columns=list(TIMING))
    h_res = pd.read_csv(resumed / "history.csv").drop(columns=list(TIMING))
    pd.testing.assert_frame_equal(h_res, h_ref, check_exact=True)
    w_ref = load_checkpoint(reference / "checkpoints" / "last.pt")["model"]
    w_res = load_checkpoint(last)["model"]
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
