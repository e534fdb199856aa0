"""OS errors around a sweep: a cache folder that is a file, a run store on a read-only
filesystem, a disk too small for the caches, SLURM asked for where there is none, a disk that fills up while
a cache is built or a manifest is written. Each is one line ``cxr-bench: error: ...`` naming the path and the
cause, exit status 2, no run recorded as failed for it, and nothing already complete lost.

Real components throughout: the CLI in-process, phantom releases, real tmpfs mounts (skipped where this
process may not mount), the real submitit. Only the two "disk fills up" cases patch one OS call to fail with
ENOSPC at a chosen moment (a real full disk is in test_bad_data.py, for ``prepare``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import reliability_harness as H

from cxr_bench.cli import main
from cxr_bench.runner.store import RunStore

SUITE = "oserr"


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    return H.write_suite(tmp_path / f"{SUITE}.toml", SUITE, {"model.head": ["gap", "wang2017"]})


def _one_line_error(err: str, *needles: str) -> str:
    """The one error line, last on stderr (after the plan's one-line summary), with every needle in it."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("cxr-bench: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _run(suite: Path, root: Path, out: Path, *extra: str) -> int:
    return main(["run", "--suite", str(suite), "--data-root", str(root), "--runs", str(out), "--no-report",
                 *map(str, extra)])


@pytest.mark.parametrize("below", [False, True], ids=["file", "below-a-file"])
def test_a_cache_dir_that_is_a_file_stops_the_sweep_before_any_work(suite, phantom_root, tmp_path, capsys, below):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("precious")
    cache_dir = blocker / "cache" if below else blocker
    out = tmp_path / "runs"
    assert _run(suite, phantom_root, out, "--cache-dir", cache_dir) == 2
    _one_line_error(capsys.readouterr().err, str(cache_dir), f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "precious"
    assert not out.exists()  # no run recorded as failed for it, no run directory at all


def test_a_run_store_on_a_read_only_filesystem_is_one_line(suite, phantom_root, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through permissions: only a read-only mount stops it
        ctx = H.tmpfs(tmp_path / "ro", "1m", read_only=True)
        why = "is on a read-only filesystem"
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        ctx = _Writable(tmp_path / "ro")
        why = "is not writable by this user"
    with ctx as ro:
        out = ro / "runs"
        assert _run(suite, phantom_root, out) == 2
        _one_line_error(capsys.readouterr().err, f"the run store (--runs) {out / SUITE}: {ro} {why}")
        assert list(ro.iterdir()) == []


def test_a_disk_too_small_for_the_caches_is_one_line_before_any_work(suite, phantom_root, tmp_path, capsys):
    out = tmp_path / "runs"
    with H.tmpfs(tmp_path / "small", "64k") as small:
        # 40 images of 64 px are 164 kB of pixels alone
        assert _run(suite, phantom_root, out, "--cache-dir", small, "--set", "data.image_size=64") == 2
        _one_line_error(capsys.readouterr().err, "not enough disk space", str(small))
        assert list(small.iterdir()) == []
    assert not out.exists()


def test_slurm_where_there_is_none_is_one_line(suite, phantom_root, tmp_path, capsys):
    import submitit

    if shutil.which("srun") is not None:
        pytest.skip("this machine has SLURM")
    with pytest.raises(RuntimeError, match="srun"):  # what submitit itself does here: a traceback
        submitit.AutoExecutor(folder=tmp_path / "probe", cluster="slurm")
    out = tmp_path / "runs"
    assert _run(suite, phantom_root, out, "--launcher", "submitit", "--submitit-cluster", "slurm") == 2
    _one_line_error(capsys.readouterr().err, "--submitit-cluster slurm", "srun")
    assert not out.exists() and not (tmp_path / "probe").exists()


def test_a_disk_that_fills_up_while_a_cache_is_built_stops_the_sweep(suite, phantom_root, tmp_path, capsys,
                                                                    monkeypatch):
    """ENOSPC from the cache's chunk write: one line, and not one failed run recorded per run (the next run
    and the next cache would hit the same full disk)."""
    real_pwrite = os.pwrite

    def full(fd, data, pos):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    out = tmp_path / "runs"
    assert _run(suite, phantom_root, out, "--cache-dir", tmp_path / "cache") == 2
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    _one_line_error(capsys.readouterr().err, "images.npy", "No space left on device [ENOSPC]")
    assert not list((out / SUITE).glob("*/manifest.json"))


@pytest.mark.slow
def test_a_disk_that_fills_up_while_writing_a_manifest_loses_nothing(suite, phantom_root, tmp_path, capsys,
                                                                   monkeypatch):
    """ENOSPC when the first run's manifest is written as completed (the engine's files are already on
    disk: what a kill between the two writes also leaves). One line naming manifest.json; the sweep stops;
    the next sweep repairs the run by evaluating it again (same numbers, no epoch trained twice) and runs
    the other."""
    import cxr_bench.runner.store as store_mod

    real_write = store_mod.atomic_write_json

    def full_disk_at_completion(path, obj):
        if Path(path).name == "manifest.json" and obj.get("status") == "completed":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, obj)

    monkeypatch.setattr(store_mod, "atomic_write_json", full_disk_at_completion)
    out = tmp_path / "runs"
    assert _run(suite, phantom_root, out) == 2
    monkeypatch.setattr(store_mod, "atomic_write_json", real_write)
    line = _one_line_error(capsys.readouterr().err, "manifest.json", "No space left on device [ENOSPC]")

    store = RunStore(out, SUITE)
    (first,) = [store.run(r) for r in store.run_ids()]  # the sweep stopped: the second run never started
    assert str(first.manifest_path) in line
    m = H.strict_json(first.manifest_path)
    assert m["status"] == "running"  # the write that failed left the previous manifest whole
    files = {p: (first.path / p).read_bytes() for p in ("metrics.json", "predictions/test.csv",
                                                        "predictions/val.csv", "history.csv")}
    metrics = H.comparable_metrics(first.path)

    assert _run(suite, phantom_root, out) == 0
    capsys.readouterr()
    assert len(store.run_ids()) == 2
    m = H.strict_json(first.manifest_path)
    assert m["status"] == "completed" and first.completed
    assert [(a["previous_status"], a["resumed_from_checkpoint"]) for a in m["attempts"]] == [
        ("pending", False), ("running", True)]
    assert H.comparable_metrics(first.path) == metrics
    for rel in ("predictions/test.csv", "predictions/val.csv", "history.csv"):
        assert (first.path / rel).read_bytes() == files[rel], rel  # evaluated again, not trained again
    assert pd.read_csv(first.path / "history.csv")["epoch"].tolist() == [1, 2]
    for run_id in store.run_ids():
        assert json.loads(store.run(run_id).manifest_path.read_text())["status"] == "completed"
    H.check_files_parse(out)


class _Writable:
    """The folder made read-only for the block, writable again after it (so pytest can clean it)."""

    def __init__(self, value: Path) -> None:
        self.value = value

    def __enter__(self) -> Path:
        return self.value

    def __exit__(self, *exc: object) -> None:
        self.value.chmod(0o755)
