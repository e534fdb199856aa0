"""The demo proves the pipeline learns: wang2017's sample profile has a sanity block on a seeded phantom
release (planted, label-specific lesions) that must score far above chance, while the real-sample runs sit
at chance by construction."""

from __future__ import annotations

import pytest

from cxr_bench.cli import main as cli_main
from cxr_bench.data.release import NIHRelease, materialize_phantom, phantom_release_root
from cxr_bench.errors import MetadataError
from cxr_bench.runner.suite import load_suite
from cxr_bench.utils.io import read_json


def test_the_sanity_block_is_in_the_sample_profile_only():
    suite = load_suite("wang2017")
    sample = [r for r in suite.expand("sample") if "sanity" in r.blocks]
    assert len(sample) == 1 and sample[0].config.data.root == "phantom:0"
    assert not [r for r in suite.expand("paper") if "sanity" in r.blocks]
    # the frozen reading is a paper-profile block
    assert not [r for r in suite.expand("sample") if "backbone-training" in r.blocks]
    assert [r for r in suite.expand("paper") if "backbone-training" in r.blocks]


def test_a_phantom_root_is_made_only_when_asked_once_and_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_BENCH_CACHE", str(tmp_path / "cache"))
    where = phantom_release_root("phantom:3")
    assert where.parent == tmp_path / "cache" / "phantoms"
    with pytest.raises(MetadataError, match=r"phantom release is not made yet .*materialize_phantom"):
        NIHRelease.open("phantom:3")  # opening never writes
    assert not where.exists()
    a = materialize_phantom("phantom:3")
    assert a == where
    first = {p.name: p.read_bytes() for p in sorted((a / "images").glob("*.png"))[:5]}
    mtime = (a / "phantom.json").stat().st_mtime_ns
    assert materialize_phantom("phantom:3") == a and (a / "phantom.json").stat().st_mtime_ns == mtime
    rel = NIHRelease.open("phantom:3")
    assert len(rel.metadata) == 300 and rel.root == a
    assert first and all(len(v) > 0 for v in first.values())
    other = materialize_phantom("phantom:3", tmp_path / "elsewhere")
    assert other == tmp_path / "elsewhere" / "phantoms" / a.name
    assert {p.name: p.read_bytes() for p in sorted((other / "images").glob("*.png"))[:5]} == first
    with pytest.raises(MetadataError, match="phantom:<seed>"):
        NIHRelease.open("phantom:x")


@pytest.mark.slow
def test_the_sanity_run_scores_far_above_chance(tmp_path, capsys):
    assert cli_main(["run", "--suite", "wang2017", "--only", "sanity", "--runs", str(tmp_path), "--no-report"]) == 0
    (run_dir,) = [p for p in (tmp_path / "wang2017").iterdir() if (p / "metrics.json").is_file()]
    m = read_json(run_dir / "metrics.json")
    # Chance is 0.5. The floor is far below what the run reaches (about 0.96) and far above chance, so a
    # pipeline whose labels were misaligned with the images could not pass it.
    assert m["test"]["mean_auc"] > 0.8 and m["val"]["mean_auc"] > 0.8
    assert m["test"]["mean_auc_ci"][0] > 0.6  # the patient-bootstrap interval excludes chance too
