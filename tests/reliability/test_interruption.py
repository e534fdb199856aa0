"""Interruption: SIGKILL a real ``cxr-bench`` process mid-sweep (a run mid-training) and mid-evaluation, run
the same command again, and get every run finished exactly once, with the numbers (CPU, fixed seed) of a run
that was never interrupted.

SIGKILL during ``prepare`` (the image cache) is tests/data/test_cache.py::
test_sigkill_mid_build_then_resume_is_byte_identical; see README.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import reliability_harness as H

pytestmark = pytest.mark.slow

# The process under test, with summarize() (the first step after the predictions files are written)
# replaced by a stall that announces itself: the only way to stop a run *inside* its evaluation every
# time, without an engine hook and without racing a fast machine. The resumed process is untouched.
STALL_IN_EVALUATION = r"""
import pathlib, sys, time
import cxr_bench.metrics.extended as extended

def stalled(*args, **kwargs):
    pathlib.Path(sys.argv[1]).touch()
    time.sleep(3600)

extended.split_metrics = stalled  # every run's metrics.json is computed here (the trainer imports it later)
from cxr_bench.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _assert_same_run(run: Path, reference: Path) -> None:
    assert H.comparable_metrics(run) == H.comparable_metrics(reference)
    pd.testing.assert_frame_equal(H.comparable_history(run), H.comparable_history(reference))
    for split in ("val", "test"):
        assert (run / "predictions" / f"{split}.csv").read_bytes() == \
            (reference / "predictions" / f"{split}.csv").read_bytes()


@pytest.fixture(scope="module")
def reference(phantom_root, tmp_path_factory) -> tuple[list[str], dict[str, Path]]:
    """(``cxr-bench run`` arguments without --runs, run id -> run dir) of one uninterrupted two-run sweep."""
    tmp = tmp_path_factory.mktemp("reference")
    suite = H.write_suite(tmp / "killme.toml", "killme", {"optim.lr": [0.01, 0.02]},
                          base={"optim.epochs": 3, "optim.max_steps_per_epoch": 3})
    args = ["run", "--suite", str(suite), "--data-root", str(phantom_root), "--no-report"]
    ref = H.cli([*args, "--runs", tmp / "runs"])
    assert ref.returncode == 0, ref.stderr
    runs = H.run_dirs(tmp / "runs" / "killme")
    assert len(runs) == 2
    return args, runs


def test_sigkill_mid_sweep_then_rerun_finishes_every_run_once(reference, tmp_path):
    args, ref_runs = reference
    store = tmp_path / "store" / "killme"
    log = tmp_path / "sweep.log"
    proc = H.spawn(["-m", "cxr_bench", *args, "--runs", tmp_path / "store"], log=log)

    def one_done_one_mid_training() -> str | None:
        if not store.is_dir():
            return None
        runs = H.run_dirs(store)
        done = [r for r, d in runs.items() if (d / "metrics.json").is_file()]
        mid = [r for r, d in runs.items() if (d / "checkpoints" / "last.pt").is_file()
               and not (d / "metrics.json").is_file()]
        return mid[0] if done and mid else None

    try:
        killed = H.wait_for(one_done_one_mid_training, proc, "one run completed and the other mid-training",
                            log=log)
    finally:
        H.kill_group(proc)
    assert not (store / killed / "metrics.json").exists()
    manifest = H.strict_json(store / killed / "manifest.json")
    assert manifest["status"] == "running"  # what the kill left: an interrupted run, lock released

    again = H.cli([*args, "--runs", tmp_path / "store"])
    assert again.returncode == 0, again.stderr
    runs = H.run_dirs(store)
    assert runs.keys() == ref_runs.keys()
    for run_id, run in runs.items():
        _assert_same_run(run, ref_runs[run_id])
        hist = pd.read_csv(run / "history.csv")
        assert hist["epoch"].tolist() == [1, 2, 3]  # each epoch once: nothing lost, nothing repeated
        m = H.strict_json(run / "manifest.json")
        assert m["status"] == "completed"
        attempts = m["attempts"]
        if run_id == killed:
            assert len(attempts) == 2 and "ended_at" not in attempts[0]
            assert attempts[1]["previous_status"] == "running" and attempts[1]["resumed_from_checkpoint"]
            assert attempts[1]["status"] == "completed"
        else:  # completed before the kill: not run again
            assert len(attempts) == 1 and attempts[0]["status"] == "completed"
    H.check_files_parse(tmp_path / "store")


def test_sigkill_during_evaluation_then_rerun_gives_the_same_metrics(reference, tmp_path):
    ref_run = next(iter(reference[1].values()))
    config = ref_run / "config.json"  # the reference run, trained again here as a single `train`

    run = tmp_path / "run"
    marker = tmp_path / "evaluating"
    log = tmp_path / "train.log"
    proc = H.spawn(["-c", STALL_IN_EVALUATION, marker, "train", "--config", config, "--run-dir", run,
                    "--no-progress"], log=log)
    try:
        H.wait_for(marker.exists, proc, "the evaluation to start", log=log)
    finally:
        H.kill_group(proc)
    # Killed after the last epoch's checkpoints and the prediction files, before metrics.json.
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert (run / "predictions" / "test.csv").is_file()
    assert not (run / "metrics.json").exists()

    again = H.cli(["train", "--config", config, "--run-dir", run, "--no-progress"])
    assert again.returncode == 0, again.stderr
    _assert_same_run(run, ref_run)
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2, 3]
    H.check_files_parse(run)
