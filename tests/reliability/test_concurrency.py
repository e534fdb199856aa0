"""Concurrency: two ``cxr-bench run`` processes started together on one run store (and one empty image cache)
run each run exactly once between them and leave every file whole."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import reliability_harness as H


@pytest.mark.slow
def test_two_sweeps_at_once_run_each_run_once(phantom_root, tmp_path):
    suite = H.write_suite(tmp_path / "race.toml", "race", {"optim.lr": [0.01, 0.02, 0.03]})
    cache = tmp_path / "cache"  # empty: both processes reach the cache build at the same moment too
    args = ["-m", "cxr_bench", "run", "--suite", suite, "--data-root", phantom_root, "--runs", tmp_path / "runs",
            "--no-report", "-v"]  # -v: the sweep's summary table, parsed below
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [H.spawn(args, log=log, extra_env={"CXR_BENCH_CACHE": str(cache)}) for log in logs]
    try:
        for proc, log in zip(procs, logs):
            assert proc.wait(timeout=H.DEADLINE_S) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            H.kill_group(proc)

    runs = H.run_dirs(tmp_path / "runs" / "race")
    assert len(runs) == 3
    outputs = [log.read_text() for log in logs]
    for run_id, run in runs.items():
        m = H.strict_json(run / "manifest.json")
        assert m["status"] == "completed"
        assert len(m["attempts"]) == 1, m["attempts"]  # started once, by one process
        assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]
        starts = re.findall(rf"run {run_id} \(.*\): starting", (run / "log.txt").read_text())
        assert len(starts) == 1
        # The sweep summaries: one process completed it, the other skipped it (locked or done).
        statuses = [re.search(rf"^{run_id}\s+\S+\s+(\w+)", out, re.M).group(1) for out in outputs]
        assert sorted(statuses) == ["completed", "skipped"], statuses
        assert H.finite(H.strict_json(run / "metrics.json")["test"]["mean_auc"])
    n_json, n_csv = H.check_files_parse(tmp_path / "runs")
    assert n_json >= 3 * 3 and n_csv >= 3 * 3
    # One image cache, complete and readable, whoever built it.
    n_json, n_csv = H.check_files_parse(cache)
    assert n_json >= 1 and n_csv >= 1
