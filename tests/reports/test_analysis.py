"""The shared analysis of a render: its inputs key, and parts read back from the cache as computed."""

from __future__ import annotations

import json
import math

import pandas as pd

from cxr_bench.reports.analysis import Analysis, frame_from_json, frame_to_json, inputs_key
from cxr_bench.results.compare import ablation_table
from cxr_bench.results.leaderboard import build_leaderboard


def test_frames_round_trip_through_json():
    df = pd.DataFrame({"run_id": ["1e5", "0abc"], "auc": [0.123456789012345, math.nan], "n": [3, 4],
                       "flag": [True, False], "text": ['<b>"x"</b>', None]})
    df.attrs["banner"] = ["line one"]
    back = frame_from_json(json.loads(json.dumps(frame_to_json(df))))
    assert list(back["run_id"]) == ["1e5", "0abc"]  # hex-like ids stay text
    assert back["auc"].iloc[0] == df["auc"].iloc[0] and math.isnan(back["auc"].iloc[1])
    assert list(back["n"]) == [3, 4] and list(back["flag"]) == [True, False]
    assert back["text"].iloc[0] == '<b>"x"</b>' and back.attrs["banner"] == ["line one"]


def test_inputs_key_follows_what_reports_read_and_ignores_logs(tmp_path, store_factory):
    root = tmp_path / "runs"
    rid, run_dir = store_factory.write_run(root, "s", {"data.image_size": 64}, strength=1.0)
    key = inputs_key(root)
    (run_dir / "log.txt").write_text("re-run: already completed\n")
    (root / "s" / "leaderboard.csv").write_text("suite,run_id\n")
    assert inputs_key(root) == key
    assert inputs_key(root, "s") != key  # the suite is a parameter of the reports
    m = json.loads((run_dir / "metrics.json").read_text())
    m["test"]["mean_auc"] = 0.5
    (run_dir / "metrics.json").write_text(json.dumps(m))
    assert inputs_key(root) != key


def test_parts_are_computed_once_and_read_back(tmp_path, store_factory):
    root = tmp_path / "runs"
    ids = store_factory.make_run_store(root, with_failed=True)
    cache = tmp_path / "cache"
    first = Analysis(root, cache_dir=cache)
    lb = first.leaderboard()
    abl = first.ablations(n_bootstrap=50)
    assert sorted(p.name.split("-")[0] for p in cache.glob("*.json")) == ["ablations", "leaderboard", "runs"]
    # A second analysis with the same key reads the parts back: equal to a fresh computation by results/.
    second = Analysis(root, cache_dir=cache, key=first.key)
    expected = build_leaderboard(root).table
    got = second.leaderboard().table
    assert list(got.columns) == list(expected.columns) and list(got["run_id"]) == list(expected["run_id"])
    pd.testing.assert_series_equal(got["mean_auc"].astype(float), expected["mean_auc"].astype(float))
    assert list(second.leaderboard().failed["run_id"]) == [ids["failed"]]
    fresh = ablation_table(second.runs(), n_bootstrap=50)
    pd.testing.assert_frame_equal(second.ablations(n_bootstrap=50)[["label", "delta", "p_bootstrap_holm"]],
                                  fresh[["label", "delta", "p_bootstrap_holm"]], check_dtype=False)
    assert second.ablations(n_bootstrap=50).attrs["banner"] == abl.attrs["banner"]
    assert {r.run_id for r in second.runs()} == {r.run_id for r in first.runs()} and second.n_not_completed == 1
    assert len(lb.table) == len(got)


def test_a_new_key_replaces_the_old_parts_and_a_damaged_part_is_recomputed(tmp_path, store_factory):
    root = tmp_path / "runs"
    store_factory.write_run(root, "s", {"data.image_size": 64}, strength=1.0)
    cache = tmp_path / "cache"
    Analysis(root, cache_dir=cache, key="a" * 32).leaderboard()
    (cache / f"leaderboard-{'b' * 32}.json").write_text("{not json")
    lb = Analysis(root, cache_dir=cache, key="b" * 32).leaderboard()
    assert len(lb.table) == 1
    assert [p.name for p in cache.glob("leaderboard-*.json")] == [f"leaderboard-{'b' * 32}.json"]
