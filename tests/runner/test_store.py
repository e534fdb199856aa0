"""The run store: names that cannot escape it, the manifest/status life cycle, the per-run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cxr_bench.errors import RunStoreError
from cxr_bench.runner.store import RunLocked, RunStore, validate_name


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "a\\b", "/abs", "x..y", "", "a b", "a\x00b", "é"])
def test_unsafe_names_rejected(name):
    with pytest.raises(RunStoreError, match="not allowed"):
        validate_name(name)


@pytest.mark.parametrize("name", ["wang2017", "a_b-c.1", "0123456789ab", ".hidden"])
def test_safe_names_accepted(name):
    assert validate_name(name) == name


def test_store_rejects_traversal(tmp_path: Path):
    with pytest.raises(RunStoreError):
        RunStore(tmp_path, "../elsewhere")
    store = RunStore(tmp_path / "runs", "suite")
    for bad in ("../../etc", "../suite2", "a/../../b"):
        with pytest.raises(RunStoreError):
            store.run(bad)
    # A run directory that is a symbolic link out of the store is refused too.
    outside = tmp_path / "outside"
    outside.mkdir()
    store.path.mkdir(parents=True)
    (store.path / "abc123").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunStoreError, match="is a symbolic link"):
        store.run("abc123")
    assert store.run("def456").path == store.path / "def456"


def test_manifest_life_cycle(tmp_path: Path):
    store = RunStore(tmp_path, "s")
    rd = store.run("0123456789ab")
    assert rd.status == "pending" and not rd.completed and rd.manifest() == {}
    with rd.lock():
        attempt = rd.start({"hostname": "h", "pid": 1, "seed": 3})
        m = json.loads(rd.manifest_path.read_text())
        assert m["status"] == "running" and m["seed"] == 3 and m["run_id"] == "0123456789ab"
        assert not (rd.path / "status.json").exists()  # one record of the state: the manifest
        try:
            raise ValueError("boom at epoch 2")
        except ValueError as e:
            rd.finish(attempt, "failed", error=e)
    m = rd.manifest()
    assert m["status"] == "failed" and m["error"]["type"] == "ValueError"
    assert "boom at epoch 2" in m["error"]["message"] and "Traceback" in m["error"]["traceback"]
    assert rd.status == "failed"

    # A second attempt resumes: attempts accumulate, the error is cleared, created_at is kept.
    (rd.path / "checkpoints").mkdir()
    (rd.path / "checkpoints" / "last.pt").write_bytes(b"x")
    (rd.path / "metrics.json").write_text("{}")
    with rd.lock():
        attempt = rd.start({"hostname": "h", "pid": 2})
        rd.finish(attempt, "completed", result={"test_mean_auc": 0.5})
    m = rd.manifest()
    assert m["status"] == "completed" and m["error"] is None and rd.completed
    assert [a["status"] for a in m["attempts"]] == ["failed", "completed"]
    assert [a["resumed_from_checkpoint"] for a in m["attempts"]] == [False, True]
    assert m["created_at"] == m["attempts"][0]["started_at"]
    assert m["total_wall_seconds"] >= m["wall_seconds"] >= 0
    assert store.run_ids() == []  # no config.json: not a run directory yet
    (rd.path / "config.json").write_text("{}")
    assert store.run_ids() == ["0123456789ab"]


def test_bad_status_rejected(tmp_path: Path):
    rd = RunStore(tmp_path, "s").run("r1")
    with pytest.raises(RunStoreError, match="invalid status"):
        rd.write_manifest({"status": "done"})


HOLD = textwrap.dedent("""
    import sys, time
    from cxr_bench.runner.store import RunStore, RunLocked
    rd = RunStore(sys.argv[1], "s").run("r1")
    try:
        with rd.lock():
            print("acquired", flush=True)
            time.sleep(float(sys.argv[2]))
    except RunLocked as e:
        print("locked:", e, flush=True)
""")


def _python(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", HOLD, *args], stdout=subprocess.PIPE, text=True, env=env, **kw)


def test_lock_excludes_another_process(tmp_path: Path):
    rd = RunStore(tmp_path, "s").run("r1")
    with rd.lock():
        out = _python(str(tmp_path), "0").communicate(timeout=120)[0]
        assert out.startswith("locked:") and "r1" in out
    # Released: the other process gets it now.
    assert _python(str(tmp_path), "0").communicate(timeout=120)[0].strip() == "acquired"


def test_lock_released_when_holder_is_killed(tmp_path: Path):
    rd = RunStore(tmp_path, "s").run("r1")
    holder = _python(str(tmp_path), "600")
    try:
        assert holder.stdout.readline().strip() == "acquired"
        with pytest.raises(RunLocked):
            with rd.lock():
                pass
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with rd.lock():  # the OS dropped the dead process's flock
        pass


def test_mark_failed_from_outside(tmp_path: Path):
    """What the submitit launcher records when a job dies without a result (the run's process is gone)."""
    rd = RunStore(tmp_path, "s").run("r2")
    with rd.lock():
        rd.start({"hostname": "node1", "pid": 7})  # the job started the run, then was killed
        rd.mark_failed("UncompletedJobError", "job 12_3 died: out of memory", "slurmstepd: oom-kill")
    m = rd.manifest()
    assert m["status"] == "failed" and m["error"]["message"] == "job 12_3 died: out of memory"
    assert m["attempts"][-1]["status"] == "failed"
    (rd.path / "metrics.json").write_text("{}")
    with rd.lock():
        rd.finish(rd.start({}), "completed")
        rd.mark_failed("X", "late report of an old job")  # never overrides a completed run
    assert rd.manifest()["status"] == "completed"


def test_a_manifest_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch):
    """fsync reporting ENOSPC (what a full disk, or NFS over quota, does to a write): one error naming
    manifest.json and the cause; the previous manifest is whole and no temporary file is left."""
    import errno

    rd = RunStore(tmp_path, "s").run("r3")
    with rd.lock():
        attempt = rd.start({"hostname": "h", "pid": 1})
        before = rd.manifest_path.read_bytes()

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(RunStoreError) as e:
            rd.finish(attempt, "failed", error=ValueError("x"))
        monkeypatch.undo()
    msg = str(e.value)
    assert f"cannot write {rd.manifest_path}: No space left on device [ENOSPC]" in msg and "\n" not in msg
    assert rd.manifest_path.read_bytes() == before and json.loads(before)["status"] == "running"
    assert sorted(p.name for p in rd.path.iterdir()) == [".lock", "manifest.json"]
