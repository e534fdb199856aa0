"""Damaged runs on disk: a completed run whose predictions were deleted, truncated at a row
boundary, cut in the middle of a row or overwritten is listed as damaged, without its metrics, and every
other run is still reported; a run directory that cannot be read at all is listed as unreadable."""

from __future__ import annotations

import json
import math

import pytest

from cxr_bench.cli import main
from cxr_bench.results.leaderboard import build_leaderboard, read_leaderboard
from cxr_bench.results.runs import load_runs
from cxr_bench.utils.io import atomic_write_json


def _missing(run_dir):
    (run_dir / "predictions" / "test.csv").unlink()


def _truncated_at_row(run_dir):
    path = run_dir / "predictions" / "test.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-7]))  # a clean end of line, 7 images short


def _cut_mid_row(run_dir):
    path = run_dir / "predictions" / "test.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data.splitlines()[-1]) // 2 - 1])  # half of the last row gone


def _cut_mid_row_early(run_dir):
    # Cut inside an earlier row, then a newline appended (a copy tool that "repairs" line endings).
    path = run_dir / "predictions" / "test.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:20]) + "\n" + lines[20][:15] + "\n")


def _overwritten(run_dir):
    # Same rows, same images, same truth: only the scores of one label changed (p -> 1 - p).
    path = run_dir / "predictions" / "test.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    j = header.index("prob_Effusion")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[j] = repr(1.0 - float(cells[j]))
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")


def _metrics_garbage(run_dir):
    (run_dir / "metrics.json").write_text('{"test": {"mean_auc": 0.7')


DAMAGE = {
    "missing": (_missing, "predictions/test.csv is missing"),
    "truncated_at_row": (_truncated_at_row, "predictions/test.csv changed since the run completed (83 rows, 90 "),
    "cut_mid_row": (_cut_mid_row, "predictions/test.csv changed since the run completed"),
    "cut_mid_row_early": (_cut_mid_row_early, "predictions/test.csv changed since the run completed (20 rows, 90 "),
    "overwritten": (_overwritten, "predictions/test.csv changed since the run completed (same row count, other "),
    "metrics_garbage": (_metrics_garbage, "metrics.json: "),
}


@pytest.fixture(scope="module")
def damaged_store(tmp_path_factory, store_factory):
    root = tmp_path_factory.mktemp("damaged") / "runs"
    ids = {}
    for i, name in enumerate(["intact", *DAMAGE]):
        ids[name], run_dir = store_factory.write_run(root, "s", {"seed": i}, strength=1.0, n_bootstrap=5)
        if name in DAMAGE:
            DAMAGE[name][0](run_dir)
    # A run directory that cannot be read at all (config.json cut mid-write).
    ids["unreadable"], run_dir = store_factory.write_run(root, "s", {"seed": 99}, strength=1.0, n_bootstrap=5)
    (run_dir / "config.json").write_text("{")
    return root, ids


def test_each_damage_is_listed_and_the_others_reported(damaged_store):
    root, ids = damaged_store
    lb = build_leaderboard(root, expert=True)
    t = lb.table.set_index("run_id")
    assert t.loc[ids["intact"], "status"] == "completed" and t.loc[ids["intact"], "problem"] == ""
    metrics = json.loads((root / "s" / ids["intact"] / "metrics.json").read_text())
    assert t.loc[ids["intact"], "mean_auc"] == metrics["test"]["mean_auc"]
    for name, (_, message) in DAMAGE.items():
        row = t.loc[ids[name]]
        assert row["status"] == "damaged", name
        assert message in row["problem"], (name, row["problem"])
        assert math.isnan(row["mean_auc"]) and math.isnan(row["auc_effusion"]), name  # no unbacked numbers
        assert row["backbone"] == "mobilenet_v1" and row["seed"] == list(ids).index(name)  # still identified
    assert set(lb.damaged["run_id"]) == {ids[n] for n in DAMAGE}
    assert list(lb.failed["run_id"]) == [ids["unreadable"]] and lb.failed["status"].iloc[0] == "unreadable"
    # Damaged runs are left out of the seed aggregate: only the intact run counts.
    assert lb.aggregate["n_seeds"].tolist() == [1] and lb.aggregate["run_ids"].iloc[0] == ids["intact"]


def test_comparisons_and_reports_never_read_a_damaged_run(damaged_store):
    root, ids = damaged_store
    assert [r.run_id for r in load_runs(root)] == [ids["intact"]]
    everything = {r.run_id for r in load_runs(root, include_damaged=True)}
    assert everything == {v for k, v in ids.items() if k != "unreadable"}


def test_a_run_without_the_record_of_its_files_is_damaged(tmp_path, store_factory):
    """The manifest's sha256 record of a completed run's files is what its numbers are checked against; a
    completed run without one cannot be checked, so it is not reported."""
    root = tmp_path / "runs"
    _, run_dir = store_factory.write_run(root, "s", {}, strength=1.0, n_bootstrap=5)
    assert build_leaderboard(root, expert=False).table["status"].tolist() == ["completed"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["artifacts"]
    atomic_write_json(run_dir / "manifest.json", manifest)
    row = build_leaderboard(root, expert=False).table.iloc[0]
    assert row["status"] == "damaged" and "no record of the run's files" in row["problem"]


def test_cli_reports_damaged_runs_and_still_writes(damaged_store, tmp_path, capsys):
    root, ids = damaged_store
    out = tmp_path / "lb.csv"
    assert main(["leaderboard", "--runs", str(root), "--out", str(out), "--no-expert"]) == 0
    err = capsys.readouterr().err
    assert f"{len(DAMAGE)} damaged run(s)" in err and ids["missing"] in err and "unreadable" in err
    df = read_leaderboard(out).set_index("run_id")
    assert df.loc[ids["intact"], "status"] == "completed" and df.loc[ids["cut_mid_row"], "status"] == "damaged"
