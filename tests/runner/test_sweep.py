"""Sweeps with the real engine on a phantom release: failures recorded and survived, completed runs
skipped, a killed sweep resumed, locks respected, runs never reused across datasets or changed images, a
quiet console, manifests that disagree with the files repaired, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_bench.cli import main as cli_main
from cxr_bench.config import RunConfig
from cxr_bench.data.release import NIHRelease
from cxr_bench.runner.launchers import LocalLauncher
from cxr_bench.runner.planning import plan_sweep
from cxr_bench.runner.store import RunStore, Status
from cxr_bench.runner.sweep import run_suite

REPO = Path(__file__).resolve().parents[2]

# Two runs that differ in the learning rate only: 1e35 overflows the weights at the first step (to inf; 1e30
# stays finite behind BatchNorm while training and only the predictions overflow), so that run
# fails while it trains (a non-finite loss), after every check before the sweep has passed.
ONE_DIVERGES = """
[[block]]
name = "lrs"
grid = { "optim.lr" = [1e35, 0.001] }
"""


def _run(suite: Path, data_root: Path, out: Path, *extra: str) -> int:
    return cli_main(["run", "--suite", str(suite), "--data-root", str(data_root), "--runs", str(out),
                     "--no-report", *extra])


def _manifests(out: Path, suite: str = "tiny") -> dict[str, dict]:
    store = RunStore(out, suite)
    return {rid: store.run(rid).manifest() for rid in store.run_ids()}


@pytest.mark.slow
def test_failing_run_is_recorded_and_the_sweep_goes_on(write_suite, phantom_root, make_phantom, tmp_path, capsys):
    suite = write_suite(ONE_DIVERGES)
    out = tmp_path / "runs"
    assert _run(suite, phantom_root, out) == 1
    captured = capsys.readouterr()
    assert "1 completed, 0 skipped, 1 failed" in captured.out

    runs = {r.config.optim.lr: r for r in plan_sweep(suite, data_root=phantom_root).runs}
    store = RunStore(out, "tiny")
    good, bad = store.run(runs[0.001].run_id), store.run(runs[1e35].run_id)
    assert f"FAILED {bad.run_id}" in captured.err and "non-finite" in captured.err

    # The failure: status, error, traceback in the manifest and in the run's log; no results.
    m = bad.manifest()
    assert m["status"] == "failed" and m["error"]["type"] == "TrainingError"
    assert "non-finite" in m["error"]["message"] and "Traceback" in m["error"]["traceback"]
    log = bad.log_path.read_text()
    assert "non-finite" in log and "Traceback" in log
    assert bad.status == "failed" and not bad.metrics_path.exists()

    # The completed run: the engine's files plus the runner's, and a full manifest.
    for name in ("config.json", "manifest.json", "log.txt", "history.csv", "metrics.json",
                 "predictions/test.csv", "predictions/val.csv", "checkpoints/last.pt"):
        assert (good.path / name).is_file(), name
    cfg = RunConfig.from_dict(json.loads(good.config_path.read_text()))
    assert cfg.run_id() == good.run_id and cfg.data.root == str(phantom_root.resolve())
    m = good.manifest()
    assert m["status"] == "completed" and m["error"] is None and m["seed"] == 0
    assert m["data"]["file_hashes"] == NIHRelease.open(phantom_root).file_hashes()
    assert m["data"]["is_bundled_sample"] is False
    assert len(m["cache_key"]) == 64
    assert m["packages"]["torch"] and m["hardware"]["cpu_count"] >= 1 and "git" in m
    assert m["hostname"] and m["pid"] == os.getpid() and m["command"] == sys.argv
    assert m["wall_seconds"] > 0 and m["started_at"] <= m["ended_at"]
    assert m["suite"]["name"] == "tiny" and m["suite"]["blocks"] == ["lrs"]
    assert m["suite"]["grid"] == {"lrs": {"optim.lr": 0.001}}
    assert m["result"]["test_mean_auc"] == json.loads(good.metrics_path.read_text())["test"]["mean_auc"]
    plan = json.loads((store.path / "plan-default.json").read_text())
    assert {r["run_id"] for r in plan["runs"]} == {good.run_id, bad.run_id}

    # Again: the completed run is skipped untouched, the failed one is tried again (and fails again).
    before = good.metrics_path.stat().st_mtime_ns
    assert _run(suite, phantom_root, out) == 1
    assert "0 completed, 1 skipped, 1 failed" in capsys.readouterr().out
    assert good.metrics_path.stat().st_mtime_ns == before
    assert len(good.manifest()["attempts"]) == 1 and len(bad.manifest()["attempts"]) == 2

    # Another dataset in the same store: the completed run is not reused as if it were the same.
    other = make_phantom(seed=1)
    assert _run(suite, other, out, "--only", good.run_id) == 1
    captured = capsys.readouterr()
    assert "other data files" in captured.out + captured.err
    assert good.metrics_path.stat().st_mtime_ns == before


def test_locked_run_is_skipped(two_head_suite, phantom_root, tmp_path):
    out = tmp_path / "runs"
    plan = plan_sweep(two_head_suite, data_root=phantom_root, only=["*"])
    target = plan.runs[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cxr_bench.runner.store import RunStore\n"
         "with RunStore(sys.argv[1], 'tiny').run(sys.argv[2]).lock():\n print('held', flush=True)\n"
         " time.sleep(600)\n", str(out), target.run_id],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_suite(plan.suite, [target], profile=plan.profile, out=out, launcher=LocalLauncher())
    finally:
        holder.kill()
        holder.wait(timeout=60)
    (outcome,) = result.outcomes
    assert outcome.skipped and outcome.status is Status.RUNNING and "locked" in outcome.detail
    assert result.exit_code == 0
    assert RunStore(out, "tiny").run(target.run_id).manifest() == {}  # nothing touched


EPOCHS = 6


def _wait_for(pred, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_sweep_resumes(write_suite, two_heads, phantom_root, tmp_path):
    """SIGKILL the sweep while its second run is mid-way; the next sweep skips the first and resumes the
    second from its last checkpoint, and no epoch is run twice."""
    suite = write_suite(two_heads, epochs=EPOCHS)
    out = tmp_path / "runs"
    first, second = plan_sweep(suite, data_root=phantom_root).runs
    store = RunStore(out, "tiny")
    a, b = store.run(first.run_id), store.run(second.run_id)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CXR_BENCH_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "cxr_bench", "run", "--suite", str(suite), "--data-root",
                             str(phantom_root), "--runs", str(out), "--no-report"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: a.completed, 600, "the first run to complete")
        # last.pt is written before history.csv: wait for both, so the kill lands after a whole epoch.
        _wait_for(lambda: (b.last_checkpoint.is_file() and (b.path / "history.csv").is_file())
                  or proc.poll() is not None, 600,
                  "the second run's first checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert not b.completed, "the second run finished before it could be killed; raise EPOCHS"
    assert b.status == "running"  # killed: no chance to record anything
    epochs_before = len(pd.read_csv(b.path / "history.csv")) if (b.path / "history.csv").is_file() else 0
    assert 1 <= epochs_before < EPOCHS

    a_metrics = a.metrics_path.read_bytes()
    assert cli_main(["run", "--suite", str(suite), "--data-root", str(phantom_root), "--runs", str(out),
                     "--no-report"]) == 0
    assert a.metrics_path.read_bytes() == a_metrics and len(a.manifest()["attempts"]) == 1
    m = b.manifest()
    assert m["status"] == "completed" and b.completed
    assert [(x["previous_status"], x["resumed_from_checkpoint"]) for x in m["attempts"]] == [
        ("pending", False), ("running", True)]
    history = pd.read_csv(b.path / "history.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))  # resumed, not restarted or repeated
    assert json.loads(b.metrics_path.read_text())["epochs_run"] == EPOCHS
    assert sorted(store.run_ids()) == sorted([a.run_id, b.run_id])


@pytest.mark.slow
def test_torchrun_two_processes(two_head_suite, phantom_root, tmp_path):
    """--nproc-per-run 2: the run goes through real torchrun (2 gloo ranks on CPU)."""
    out = tmp_path / "runs"
    assert _run(two_head_suite, phantom_root, out, "--only", "*gap*", "--nproc-per-run", "2") == 0
    (rid,) = RunStore(out, "tiny").run_ids()
    rd = RunStore(out, "tiny").run(rid)
    assert rd.manifest()["launcher"] == {"kind": "local", "nproc": 2}
    assert json.loads(rd.metrics_path.read_text())["world_size"] == 2
    log = rd.log_path.read_text()
    # rank 0 speaks for the job (the other ranks log warnings only, see cxr_bench.cli.setup_logging)
    assert "-m torch.distributed.run --standalone --nproc-per-node=2" in log and "rank 0/2 joined" in log


@pytest.mark.slow
def test_sweep_outputs_localize_completed_runs_into_the_leaderboard(write_suite, two_heads, phantom_root, tmp_path):
    """The end of a sweep scores every completed run's heatmaps against the release's boxes (once), and
    the leaderboard carries the result; a run localized before is not redone. (finish_outputs calls
    localize_completed before the leaderboard; the report rendering it also does is tested elsewhere.)"""
    from cxr_bench.pipeline import localize_completed
    from cxr_bench.results.leaderboard import build_leaderboard

    suite = write_suite(two_heads)
    out = tmp_path / "runs"
    assert _run(suite, phantom_root, out) == 0
    store = RunStore(out, "tiny")
    run_dirs = [store.run(rid).path for rid in store.run_ids()]
    assert len(run_dirs) == 2 and not any((d / "localization.csv").exists() for d in run_dirs)
    assert localize_completed(store) == ["localization: 2 run(s) scored against BBox_List_2017"]
    for d in run_dirs:
        table = pd.read_csv(d / "localization.csv")
        assert set(table["metric"]) == {"iobb", "iou"} and table["n_gt"].sum() > 0
    lb = build_leaderboard(out, "tiny").table
    assert lb["loc_n_boxes"].notna().all() and lb["loc_acc_iobb_0p1"].between(0, 1).all()
    stamp = [(d / "localization.csv").stat().st_mtime_ns for d in run_dirs]
    assert localize_completed(store) == []
    assert [(d / "localization.csv").stat().st_mtime_ns for d in run_dirs] == stamp


@pytest.mark.slow
def test_changed_images_are_not_reused_and_the_console_is_quiet(write_suite, two_heads, make_phantom, tmp_path,
                                                                capsys):
    """A sweep as a user runs it (a real console): the release is announced once, the metrics' warnings are
    one line per run (the detail in log.txt). Then one image's pixels change under the same data root: the
    next sweep refuses before any work, naming both image keys, and the completed runs stay untouched."""
    from PIL import Image

    from cxr_bench.engine.trainer import load_run_data
    from cxr_bench.runner.planning import plan_specs
    from cxr_bench.runner.precheck import check_sweep

    root = make_phantom()
    suite = write_suite(two_heads)
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CXR_BENCH_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "cxr_bench", "run", "--suite", str(suite), "--data-root", str(root),
                           "--runs", str(out), "--no-report"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    store = RunStore(out, "tiny")
    rds = [store.run(r) for r in store.run_ids()]
    assert len(rds) == 2
    assert console.count("opened NIH release") <= 1
    assert "bootstrap: label" not in console and "WARNING cxr_bench.metrics" not in console
    # The digest of each run's metric warnings, each distinct one said once (the detail in the run's log.txt).
    notes = [line for line in console.splitlines() if line.startswith("  note") and "bootstrap" in line]
    assert notes and len(notes) == len(set(notes)) <= 2 and all("details in log.txt" in n for n in notes)
    for rd in rds:
        kept = rd.log_path.read_text().count("WARNING cxr_bench.metrics.roc: bootstrap: label")
        assert kept > 0  # 50 resamples of ~10 test images: some lack a positive case
        assert any(f"resamples without a positive or negative case for {kept} label(s)" in n for n in notes)

    # What the sweep computes cheaply (one stat per image) is what the engine's cache build recorded.
    plan = plan_sweep(suite, data_root=root)
    check = check_sweep(plan_specs(plan.suite, plan.runs, plan.profile, out), store)
    assert check.problems == [] and check.done == {rd.run_id for rd in rds}
    old = {rd.run_id: rd.manifest()["cache_key"] for rd in rds}
    assert check.image_keys == old and len(set(old.values())) == 1

    # New pixels in one test image (same name, same data root, same metadata files).
    path = root / "images" / NIHRelease.open(root).test_names[0]
    pixels = np.array(Image.open(path))
    pixels[:8, :8] = 255 - pixels[:8, :8]
    Image.fromarray(pixels).save(path)
    new_key = load_run_data(RunConfig.from_dict(json.loads(rds[0].config_path.read_text())), progress=False
                            ).train.cache.key  # the key the engine's own build gives the images now
    (old_key,) = set(old.values())
    assert new_key != old_key
    stamps = [rd.metrics_path.stat().st_mtime_ns for rd in rds]

    assert _run(suite, root, out) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("cxr-bench: error:")]
    for needle in (old_key[:16], new_key[:16], str(root.resolve()), "another --runs", str(rds[0].path),
                   str(rds[1].path)):
        assert needle in line, needle
    assert [rd.metrics_path.stat().st_mtime_ns for rd in rds] == stamps
    assert all(len(rd.manifest()["attempts"]) == 1 for rd in rds)


@pytest.mark.slow
def test_a_completed_manifest_without_metrics_is_evaluated_again(two_head_suite, phantom_root, tmp_path):
    """The manifest says completed, metrics.json is gone (deleted, or lost with a disk): the next sweep does
    not trust the manifest, evaluates the run again from its checkpoints (no epoch trained twice) and gets
    the same numbers. (The reverse, files written and the manifest still ``running``, is
    tests/reliability/test_os_errors.py::test_a_disk_that_fills_up_while_writing_a_manifest_loses_nothing.)"""
    import reliability_harness as H

    out = tmp_path / "runs"
    assert _run(two_head_suite, phantom_root, out, "--only", "*gap*") == 0
    (rid,) = RunStore(out, "tiny").run_ids()
    rd = RunStore(out, "tiny").run(rid)
    metrics = H.comparable_metrics(rd.path)
    kept = {rel: (rd.path / rel).read_bytes() for rel in ("history.csv", "predictions/test.csv")}
    rd.metrics_path.unlink()
    assert rd.status == "completed" and not rd.completed

    assert _run(two_head_suite, phantom_root, out, "--only", "*gap*") == 0
    m = rd.manifest()
    assert m["status"] == "completed" and rd.completed
    assert [(a["previous_status"], a["resumed_from_checkpoint"]) for a in m["attempts"]] == [
        ("pending", False), ("completed", True)]
    assert H.comparable_metrics(rd.path) == metrics
    assert {rel: (rd.path / rel).read_bytes() for rel in kept} == kept
    assert "its manifest says completed but metrics.json is missing" in rd.log_path.read_text()
