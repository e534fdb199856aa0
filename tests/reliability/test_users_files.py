"""A user's files are not the tool's to overwrite: ``leaderboard --out`` writes the file named and
companions only where they are the tool's own; ``report --out DIR`` replaces only reports it rendered and
leaves no ``.kernels`` folder behind, whatever the exit (Ctrl-C included); a full disk during ``report``
names the path. Real run stores, the real CLI and papermill, a real tmpfs, a real SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_harness as H
import runstore_factory as F

from cxr_bench.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("users") / "runs"
    F.make_run_store(root, with_failed=False)
    return root


def _one_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("cxr-bench: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("companion", ["results_agg.csv", "results_subgroups.csv"])
@pytest.mark.parametrize("content", ["my own numbers\n1,2,3\n", "suite,run_id\nx,y\n", "link"])
def test_leaderboard_never_writes_over_a_file_the_user_did_not_name(store, tmp_path, capsys, companion,
                                                                    content):
    user = tmp_path / "user"
    user.mkdir()
    theirs = user / companion
    if content == "link":
        (tmp_path / "elsewhere.csv").write_text("precious\n")
        theirs.symlink_to(tmp_path / "elsewhere.csv")
    else:
        theirs.write_text(content)
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    assert main(["leaderboard", "--runs", str(store), "--out", str(user / "results.csv")]) == 2
    _one_line(capsys.readouterr().err, str(theirs), "not a leaderboard")
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before  # nothing written at all
    if content == "link":
        assert theirs.is_symlink() and (tmp_path / "elsewhere.csv").read_text() == "precious\n"


def test_leaderboard_rewrites_its_own_files_and_the_file_named(store, tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "results.csv").write_text("the user named this file: it is replaced\n")
    assert main(["leaderboard", "--runs", str(store), "--out", str(user / "results.csv")]) == 0
    first = {p.name: p.read_bytes() for p in user.iterdir()}
    assert set(first) == {"results.csv", "results_agg.csv", "results_subgroups.csv", "results.csv.json",
                          "results_agg.csv.json", "results_subgroups.csv.json"}  # the CSVs and their sidecars
    assert main(["leaderboard", "--runs", str(store), "--out", str(user / "results.csv")]) == 0  # its own: fine
    assert {p.name for p in user.iterdir()} == set(first)
    capsys.readouterr()
    # Without --out the files go into the store, whose leaderboard.csv the user did not name either.
    suite_dir = store / "wang2017"
    (suite_dir / "leaderboard.csv").write_text("a user's notes\n")
    assert main(["leaderboard", "--runs", str(store)]) == 2
    _one_line(capsys.readouterr().err, str(suite_dir / "leaderboard.csv"))
    assert (suite_dir / "leaderboard.csv").read_text() == "a user's notes\n"
    (suite_dir / "leaderboard.csv").unlink()


def _kernels(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".kernels")] if folder.is_dir() else []


@pytest.mark.slow
def test_report_never_overwrites_a_users_page_and_leaves_no_kernels_folder(store, tmp_path, capsys):
    out = tmp_path / "user"
    out.mkdir()
    page = out / "leaderboard.html"
    page.write_text("<html><title>my leaderboard</title></html>")
    args = ["report", "--runs", str(store), "--out-dir", str(out), "--template", "leaderboard"]
    assert main(args) == 2
    _one_line(capsys.readouterr().err, str(page), "not written by cxr-bench")
    assert page.read_text() == "<html><title>my leaderboard</title></html>"
    assert not (out / "leaderboard.ipynb").exists() and not _kernels(out)

    page.unlink()
    assert main(args) == 0
    assert "cxr-bench report" in page.read_text() and not _kernels(out)
    assert main(args) == 0  # its own page: replaced
    assert not _kernels(out)


@pytest.mark.slow
def test_report_interrupted_leaves_no_kernels_folder(store, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "report.log"
    proc = H.spawn(["-m", "cxr_bench", "report", "--runs", store, "--out-dir", out, "--template", "leaderboard"], log=log)
    try:
        H.wait_for(lambda: _kernels(out), proc, "the kernel spec folder", log=log, interval=0.005)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        H.kill_group(proc)
    assert rc == 130, log.read_text()[-2000:]
    assert not _kernels(out), log.read_text()[-2000:]


@pytest.mark.slow
def test_a_full_disk_during_report_names_the_path(store, tmp_path):
    with H.tmpfs(tmp_path / "small", "256k") as small:
        done = subprocess.run([sys.executable, "-m", "cxr_bench", "report", "--runs", str(store), "--out-dir",
                               str(small / "reports"), "--template", "leaderboard"], capture_output=True, text=True,
                              timeout=600, env=H.env())
        assert done.returncode == 2, done.stderr[-2000:]
        line = _one_line(done.stderr, "No space left on device")
        assert f"{small / 'reports'}" in line and "error: :" not in line and "error:: " not in line
        assert not _kernels(small / "reports")


def test_leaderboard_never_replaces_a_users_json_beside_the_csv(store, tmp_path):
    """The sidecar ``<name>.csv.json`` is the tool's only when it says so; a user's file of that name stays."""
    user = tmp_path / "user"
    user.mkdir()
    mine = user / "results_agg.csv.json"
    mine.write_text('{"my": "notes"}')
    assert main(["leaderboard", "--runs", str(store), "--out", str(user / "results.csv")]) == 2
    assert mine.read_text() == '{"my": "notes"}' and not (user / "results.csv").exists()
