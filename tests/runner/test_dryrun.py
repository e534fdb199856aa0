"""runner/dryrun.py: the plan a dry run ends with (runs, hours, disk, what is already there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cxr_bench
from cxr_bench.cli import main as cli_main
from cxr_bench.data.release import NIHRelease
from cxr_bench.runner.caches import prepare_caches
from cxr_bench.runner.dryrun import make_dry_run
from cxr_bench.runner.planning import plan_specs, plan_sweep
from cxr_bench.runner.precheck import check_sweep, run_image_names
from cxr_bench.runner.store import RunStore
from cxr_bench.runner.suite import load_suite

NIH = Path(cxr_bench.__file__).parent / "bundled" / "nih"


def test_paper_profile_plan_counts_hours_and_every_cache_by_hand(tmp_path):
    """Hand count: every NIH image is listed once in train_val_list or test_list; the paper profile reads
    them all at 1024 px in three tone curves (identity, gamma, lstar) and at 224 px once (chexnet), one
    byte per pixel: about 358 GB of caches beside the 42 GB of images."""
    n_images = sum(1 for f in ("train_val_list.txt", "test_list.txt")
                   for line in (NIH / f).read_text().splitlines() if line.strip())
    assert n_images == 112_120
    pixels = 3 * n_images * 1024**2 + n_images * 224**2
    sweep = plan_sweep("wang2017", profile="paper", dry_run=True)
    store = RunStore(tmp_path / "runs", sweep.suite.name)
    dry = make_dry_run(sweep, store, check_sweep(plan_specs(sweep.suite, sweep.runs, sweep.profile, store.root),
                                                 store, data=False))
    plan = json.loads(json.dumps(dry.to_json()))  # what --json prints
    caches = plan["disk"]["caches"]
    assert sorted((c["image_size"], c["grayscale"]) for c in caches) == [
        (224, "identity"), (1024, "gamma"), (1024, "identity"), (1024, "lstar")]
    assert all(c["n_images"] == n_images for c in caches)
    # the pixels, plus at most 1 KB per image of name, journal and header
    assert pixels <= plan["disk"]["cache_bytes"] <= pixels + 4 * n_images * 1024
    assert 357e9 < plan["disk"]["cache_bytes"] < 360e9
    n_runs = len(load_suite("wang2017").expand("paper"))
    assert plan["totals"]["runs"] == plan["totals"]["todo"] == len(plan["runs"]) == n_runs
    assert plan["disk"]["checkpoint_bytes"] > 0 and plan["disk"]["prediction_bytes"] > 0
    assert plan["disk"]["total_bytes"] == sum(plan["disk"][k] for k in ("cache_bytes", "checkpoint_bytes",
                                                                          "prediction_bytes"))
    # No GPU was ever benchmarked: every GPU figure is missing, never guessed; CPU figures where measured.
    assert plan["totals"]["gpu_hours"] == 0 and plan["totals"]["gpu_unmeasured"] == n_runs
    measured = [r["cpu"]["hours"] for r in plan["runs"] if r["cpu"]]
    assert measured and plan["totals"]["cpu_hours"] == pytest.approx(sum(measured))
    assert plan["totals"]["cpu_unmeasured"] == n_runs - len(measured)
    assert {b["name"] for b in plan["blocks"]} == {b for r in plan["runs"] for b in r["blocks"]}
    assert not store.root.exists()

    # The text view: a narrow table, then the plan's closing lines.
    table = dry.table().splitlines()
    text = "\n".join(dry.summary())
    assert len(table) == n_runs + 2 and max(map(len, table)) <= 120
    assert table[0].split() == ["run", "id", "block", "differs", "status", "est.", "time"]
    assert f"plan: {n_runs} runs, 0 done, {n_runs} to do" in text
    assert "GPU time: not measured" in text and "bench_cost.py --sections paper_profile --device cuda" in text
    assert f"x {n_images:,} images x" in text and "besides the NIH images themselves (about 42 GB)" in text


def test_plan_says_which_caches_are_already_there(write_suite, two_heads, phantom_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_BENCH_CACHE", str(tmp_path / "cache"))  # empty: the session's may hold this cache
    plan = plan_sweep(write_suite(two_heads), data_root=phantom_root)
    store = RunStore(tmp_path / "runs", plan.suite.name)
    specs = plan_specs(plan.suite, plan.runs, plan.profile, tmp_path / "runs")
    before = make_dry_run(plan, store, check_sweep(specs, store))
    (cache,) = before.disk.caches
    assert cache.n_images == len(run_image_names(plan.runs[0].config, NIHRelease.open(str(phantom_root))))
    assert cache.bytes_needed == cache.bytes > 0 and len(cache.runs) == 2
    assert "already there: 0 of 1 image caches" in "\n".join(before.summary())
    assert set(before.status.values()) == {"to do"}

    prepare_caches(specs, progress=False)
    after = make_dry_run(plan, store, check_sweep(specs, store))
    assert after.disk.caches[0].bytes_needed == 0
    assert "already there: 1 of 1 image caches" in "\n".join(after.summary())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_missing_gpu_is_one_precheck_line_not_a_failure_per_run(tmp_path, capsys):
    out = tmp_path / "runs"
    rc = cli_main(["run", "--suite", "smoke", "--device", "cuda", "--runs", str(out), "--no-report"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("cxr-bench: error: device = 'cuda'") and "no CUDA GPU is visible" in errors[0]
    assert not (out / "smoke").exists()
