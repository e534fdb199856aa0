"""Run stores edited by hand or by another process: a manifest of the wrong shape, a run folder that is a
link to another run's, a config copied from another run, a second writer while ``cxr-bench run`` trains a
run. Each is found on read and reported (one line, no traceback), the other runs go on; a damaged run is
evaluated again; a second writer is refused. Real stores (written by the runner or with the same writers),
real symlinks, real processes."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import reliability_harness as H
import runstore_factory as F

from cxr_bench.cli import main
from cxr_bench.errors import RunStoreError
from cxr_bench.runner.store import RunDir, validate_manifest


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("pristine") / "runs"
    return root, F.make_run_store(root, with_failed=False)


@pytest.fixture
def store(pristine, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the module's store, for one test to damage."""
    root = tmp_path / "runs"
    shutil.copytree(pristine[0], root, symlinks=True)
    return root, dict(pristine[1])


def _leaderboard(root: Path, out: Path, capsys) -> tuple[int, pd.DataFrame, str]:
    rc = main(["leaderboard", "--runs", str(root), "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in out.read_text().splitlines(keepends=True) if not ln.startswith("# ")]  # any banner
    return rc, pd.read_csv(io.StringIO("".join(lines))), err


DAMAGE = [
    {"artifacts": {"metrics.json": "x"}},
    {"artifacts": {"../../etc/passwd": {"sha256": "0" * 64}}},
    {"artifacts": ["metrics.json"]},
    {"attempts": "many"},
    {"attempts": [3]},
    {"status": 7},
    {"status": "done"},
    {"run_id": ["x"]},
    {"error": 3.5},
    {"suite": 12},
]


def test_validate_manifest_names_the_file_and_key(pristine):
    root, ids = pristine
    path = root / "wang2017" / ids["alexnet_8"] / "manifest.json"
    good = json.loads(path.read_text())
    assert validate_manifest(dict(good), path) == good  # what the runner writes passes
    for damage in DAMAGE:
        with pytest.raises(RunStoreError) as err:
            validate_manifest({**good, **damage}, path)
        assert str(path) in str(err.value) and repr(next(iter(damage))) in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", DAMAGE[:1] + DAMAGE[3:4] + DAMAGE[5:6],
                         ids=["artifact-not-a-record", "attempts-not-a-list", "status-a-number"])
def test_a_manifest_of_the_wrong_shape_is_reported_and_the_rest_go_on(store, tmp_path, capsys, damage):
    root, ids = store
    victim = root / "wang2017" / ids["alexnet_8"]
    manifest = json.loads((victim / "manifest.json").read_text())
    manifest.update(damage)
    (victim / "manifest.json").write_text(json.dumps(manifest))

    rc, table, err = _leaderboard(root, tmp_path / "lb.csv", capsys)
    assert rc == 0
    assert ids["alexnet_8"] not in set(table["run_id"])  # none of its numbers
    others = [i for k, i in ids.items() if k != "alexnet_8"]
    assert set(others) <= set(table["run_id"]) and (table.set_index("run_id").loc[others, "status"]
                                                    == "completed").all()
    reported = [ln for ln in err.splitlines() if ids["alexnet_8"] in ln]
    assert reported and "unreadable" in reported[0]  # listed among the runs not completed


def test_a_run_folder_linked_to_another_runs_is_refused_and_listed_once(store, tmp_path, capsys):
    root, ids = store
    suite = root / "wang2017"
    target = suite / ids["resnet50_14"]
    link_id = ids["alexnet_8"]
    shutil.rmtree(suite / link_id)
    (suite / link_id).symlink_to(target, target_is_directory=True)
    rc, table, err = _leaderboard(root, tmp_path / "lb.csv", capsys)
    assert rc == 0
    assert (table["run_id"] == ids["resnet50_14"]).sum() == 1  # the real run once, not again under the link
    assert link_id not in set(table["run_id"])  # never another configuration's AUC under its name
    reported = [ln for ln in err.splitlines() if link_id in ln]
    assert reported and "unreadable" in reported[0]


def test_a_config_copied_from_another_run_is_refused(store, tmp_path, capsys):
    root, ids = store
    suite = root / "wang2017"
    shutil.copy(suite / ids["resnet50_14"] / "config.json", suite / ids["resnet50_8"] / "config.json")
    rc, table, err = _leaderboard(root, tmp_path / "lb.csv", capsys)
    assert rc == 0 and ids["resnet50_8"] not in set(table["run_id"])
    assert any(ids["resnet50_8"] in ln and "unreadable" in ln for ln in err.splitlines())


def _tiny_suite(tmp_path: Path, **base) -> Path:
    return H.write_suite(tmp_path / "edit.toml", "edit", {"optim.lr": [0.01]}, base=base)


@pytest.mark.slow
def test_run_sets_a_damaged_manifest_aside_and_evaluates_the_run_again(phantom_root, tmp_path):
    suite = _tiny_suite(tmp_path)
    args = ["run", "--suite", suite, "--data-root", phantom_root, "--runs", tmp_path / "runs", "--no-report"]
    first = H.cli(args)
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = H.run_dirs(tmp_path / "runs" / "edit").values()
    auc = json.loads((run / "metrics.json").read_text())["test"]["mean_auc"]
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"] = {"metrics.json": "x"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    again = H.cli(args)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    fixed = json.loads((run / "manifest.json").read_text())
    assert fixed["status"] == "completed" and isinstance(fixed["artifacts"]["metrics.json"], dict)
    assert json.loads((run / "manifest.damaged.json").read_text())["artifacts"] == {"metrics.json": "x"}
    assert json.loads((run / "metrics.json").read_text())["test"]["mean_auc"] == pytest.approx(auc)


@pytest.mark.slow
def test_train_refuses_a_run_that_run_is_training(phantom_root, tmp_path):
    """``cxr-bench run`` trains a run (long enough to be caught); ``cxr-bench train --run-dir`` on the same
    folder refuses with one line and writes nothing, while ``run`` goes on training it."""
    suite = _tiny_suite(tmp_path, **{"optim.epochs": 2000, "optim.max_steps_per_epoch": 4})
    log = tmp_path / "run.log"
    proc = H.spawn(["-m", "cxr_bench", "run", "--suite", suite, "--data-root", phantom_root, "--runs",
                    tmp_path / "runs", "--no-report"], log=log)
    try:
        def training() -> Path | None:
            runs = H.run_dirs(tmp_path / "runs" / "edit") if (tmp_path / "runs" / "edit").is_dir() else {}
            for run in runs.values():
                if (run / "checkpoints" / "last.pt").is_file():
                    return run
            return None

        run = H.wait_for(training, proc, "the first checkpoint", log=log)
        assert RunDir(run, run.name).manifest()["status"] == "running"
        second = H.cli(["train", "--config", run / "config.json", "--run-dir", run, "--no-progress"])
        err = second.stderr.strip().splitlines()
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert err[-1].startswith("cxr-bench: error: cxr-bench train: run directory") and \
            "being written by another process" in err[-1] and "Traceback" not in second.stderr
        assert f"pid {proc.pid}" in err[-1]
        assert "done" not in second.stdout  # refused before training (the fast variant checks the files)
        assert proc.poll() is None  # the refusal happened while `run` was training the run
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "running" and len(manifest["attempts"]) == 1
    finally:
        H.kill_group(proc)


@pytest.mark.parametrize("held_for_us", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_train_takes_the_lock_a_process_holds(phantom_root, tmp_path, held_for_us):
    """Fast variant: a real second process holds the run's lock exactly as the runner does. ``train``
    refuses, writing nothing; told the lock is held for it (the runner's own torchrun ranks), it trains."""
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(H.config_dict(phantom_root)))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from cxr_bench.runner.store import RunDir\n"
        "with RunDir(Path(sys.argv[1]), 'run').lock():\n    print('held', flush=True); time.sleep(300)"),
        str(run)], stdout=subprocess.PIPE, text=True, env=H.env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        env = {"CXR_BENCH_RUN_LOCK_HELD": str(run)} if held_for_us else {}
        done = H.cli(["train", "--config", run / "config.json", "--run-dir", run, "--no-progress"], extra_env=env)
    finally:
        holder.kill()
        holder.wait()
    if held_for_us:
        assert done.returncode == 0, done.stderr[-2000:]
        assert (run / "metrics.json").is_file() and os.path.getsize(run / "metrics.json") > 0
    else:
        assert done.returncode == 2 and "being written by another process" in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("cxr-bench: error: cxr-bench train: ")
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json"]  # nothing written
