"""Benchmarks (cxr_bench.bench, benchmarks/*.py, `cxr-bench bench`): the files and arithmetic, never timings.

The scripts run for real at a tiny setting (one backbone, 32 px, 2 steps): the assertions are on what
they write (columns, positive numbers, machine lines), the power-law fit, the cost extrapolation and the
README rendering; no test asserts how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_bench.bench import (MODEL_COLUMNS, README_END, README_START, find_benchmarks_dir, fit_power_law,
                             load_script, read_results_csv, render_markdown_table, run_benchmarks,
                             update_readme, write_results_csv)
from cxr_bench.cli import main as cli_main
from cxr_bench.errors import ConfigError
from cxr_bench.suite import load_suite

BENCH_DIR = find_benchmarks_dir()
needs_checkout = pytest.mark.skipif(BENCH_DIR is None, reason="benchmarks/ is in a source checkout only")


def test_power_law_fit_recovers_the_exponent():
    x = np.array([128, 224, 320, 512])
    b, a, r2 = fit_power_law(x, 3e-5 * x**2.0)
    assert b == pytest.approx(2.0) and a == pytest.approx(3e-5) and r2 == pytest.approx(1.0)
    b, _, r2 = fit_power_law([256, 512, 1024], [1.0, 2.1, 3.9])
    assert 0.9 < b < 1.1 and 0.9 < r2 <= 1.0
    with pytest.raises(ValueError):
        fit_power_law([1], [1])


def test_results_csv_round_trip_keeps_machine_lines(tmp_path):
    rows = [{"model": "a+gap", "img_size": 224, "value": 1.5}, {"model": "b+gap", "img_size": 512, "value": 2.0}]
    path = write_results_csv(tmp_path / "r.csv", rows, {"cpu": "Some CPU # 2", "torch": "2.x"},
                             columns=("model", "img_size"))
    df, meta = read_results_csv(path)
    assert meta == {"cpu": "Some CPU no. 2", "torch": "2.x"}  # '#' would end the field for comment readers
    assert list(df.columns) == ["model", "img_size", "value"]
    assert df["value"].tolist() == [1.5, 2.0]
    assert pd.read_csv(path, comment="#").equals(df)
    with pytest.raises(ValueError, match="lack columns"):
        write_results_csv(tmp_path / "bad.csv", rows, {}, columns=("model", "missing"))


def test_markdown_table_and_readme_block(tmp_path):
    df = pd.DataFrame({"model": ["x|y"], "rate": [1234.5678], "small": [0.012345], "none": [np.nan]})
    md = render_markdown_table(df)
    assert md.splitlines()[0] == "| model | rate | small | none |"
    assert md.splitlines()[2] == "| x\\|y | 1,235 | 0.0123 |  |"

    results = tmp_path / "results"
    write_results_csv(results / "models_cpu.csv", [{"model": "m+gap", "img_size": 32, "gmacs": 0.5}],
                      {"cpu": "CPU-X", "loadavg_1m": 1.5})
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nold\n{README_END}\ntail\n", encoding="utf-8")
    assert update_readme(readme, results)
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.startswith("# Title") and text.endswith("tail\n")
    assert "### `models_cpu.csv`" in text and "| m+gap | 32 |" in text and "CPU-X" in text

    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n", encoding="utf-8")
    assert not update_readme(plain, results)
    assert plain.read_text(encoding="utf-8") == "no markers\n"


def test_missing_script_is_reported_not_fatal(tmp_path):
    (tmp_path / "bench").mkdir()
    outcomes = run_benchmarks(only=["data", "metrics"], bench_dir=tmp_path / "bench", out_dir=tmp_path / "out")
    assert [o.status for o in outcomes] == ["missing", "missing"]
    assert "bench_data.py is not available" in outcomes[0].message
    machine = json.loads((tmp_path / "out" / "machine.json").read_text())
    assert machine["outcomes"]["data"]["status"] == "missing" and machine["cpu_count"] >= 1
    # a later --only run into the same folder keeps the earlier outcomes
    run_benchmarks(only=["train"], bench_dir=tmp_path / "bench", out_dir=tmp_path / "out")
    machine = json.loads((tmp_path / "out" / "machine.json").read_text())
    assert set(machine["outcomes"]) == {"data", "metrics", "train"}
    with pytest.raises(ConfigError, match="does not exist"):
        run_benchmarks(only=["data"], bench_dir=tmp_path / "nope", out_dir=tmp_path / "out")


def test_unknown_benchmark_name_is_a_one_line_error(capsys):
    assert cli_main(["bench", "--only", "nope", "--no-readme"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


@needs_checkout
@pytest.mark.slow  # spawns a fresh interpreter per setting (for the memory mark): torch imports dominate
def test_bench_quick_models_writes_the_timm_style_csv(tmp_path, capsys):
    out = tmp_path / "results"
    rc = cli_main(["bench", "--quick", "--only", "models", "--out", str(out), "--no-readme", "--",
                   "--backbones", "mobilenet_v1", "--heads", "gap,wang2017", "--sizes", "32", "--iters", "2",
                   "--batch-size", "2", "--threads", "1"])
    assert rc == 0, capsys.readouterr()
    df, meta = read_results_csv(out / "models_cpu.csv")
    assert list(df.columns) == list(MODEL_COLUMNS)
    assert df["model"].tolist() == ["mobilenet_v1+gap", "mobilenet_v1+wang2017"]
    for col in ("infer_samples_per_sec", "infer_step_time", "train_samples_per_sec", "train_step_time",
                "param_count", "gmacs"):
        assert (df[col] > 0).all(), col
    assert (df["train_peak_mem_mb"] >= 0).all() and (df["img_size"] == 32).all()
    assert (df["train_iters"] >= 1).all() and (df["threads"] == 1).all()
    # the wang2017 head adds a transition layer: more parameters than the plain head on the same backbone
    assert df["param_count"].iloc[1] > df["param_count"].iloc[0]
    assert meta["benchmark"] == "bench_models" and meta["torch"] and meta["cpu_usable"]
    assert json.loads((out / "machine.json").read_text())["outcomes"]["models"]["status"] == "ok"


@needs_checkout
def test_cost_extrapolation_arithmetic():
    cost = load_script(BENCH_DIR / "bench_cost.py")
    epoch, run = cost.estimate_run_seconds(1000, 100, 300, batch_size=16, epochs=10, t_train=0.5, t_infer=0.1)
    # 62 full batches of 16 (the last partial batch is dropped), then a validation pass
    assert epoch == pytest.approx(62 * 16 * 0.5 + 100 * 0.1)
    assert run == pytest.approx(10 * epoch + 300 * 0.1)
    epoch, _ = cost.estimate_run_seconds(1000, 0, 0, batch_size=16, epochs=1, t_train=1.0, t_infer=0.0,
                                         max_steps_per_epoch=3, accum_steps=5)
    assert epoch == pytest.approx(15 * 16)


@needs_checkout
@pytest.mark.slow
def test_bench_cost_quick_measures_every_section(tmp_path):
    """The paper profile from the real wang2017 suite (sizes capped at 32 px), image-size and dataset-size
    scaling through the real harness at tiny sizes; all numbers positive, fits present."""
    cost = load_script(BENCH_DIR / "bench_cost.py")
    rc = cost.main(["--quick", "--out", str(tmp_path), "--profile-size-cap", "32", "--sizes", "32,48",
                    "--scaling-backbone", "mobilenet_v1", "--dataset-sizes", "16,32", "--harness-size", "32",
                    "--iters", "1", "--threads", "1"])
    assert rc == 0
    df, meta = read_results_csv(tmp_path / "cost_curve.csv")
    assert list(df.columns) == list(cost.COLUMNS)
    prof = df[df["section"] == "paper_profile"]
    n_runs = len(load_suite("wang2017").expand("paper"))
    assert n_runs >= 16 and len(prof) == n_runs  # one row per run of the wang2017 paper profile
    assert (prof["seconds"] > 0).all() and (prof["epoch_seconds"] > 0).all()
    assert (prof["n_images"] == 78_146).sum() == n_runs  # official split, 10% of train_val patients to val
    total = df[df["section"] == "paper_profile_total"].iloc[0]
    assert total["seconds"] == pytest.approx(prof["seconds"].sum(), rel=1e-4)
    assert (df[df["section"].isin(["image_size", "dataset_size"])]["seconds"].fillna(1) > 0).all()
    fits = df[df["section"].str.endswith("_fit")]
    assert len(fits) == 3 and fits["exponent"].notna().all()
    assert meta["benchmark"] == "bench_cost"


def test_benchmarks_dir_is_found_from_a_checkout():
    assert BENCH_DIR is None or (Path(BENCH_DIR) / "bench_models.py").is_file()


def test_measure_model_in_process_row():
    from cxr_bench.bench import measure_model

    row = measure_model("mobilenet_v1", "gap", 32, batch_size=2, iters=1, warmup=0, device="cpu", threads=1,
                        freeze_backbone=True)
    assert set(MODEL_COLUMNS) <= set(row)
    assert row["frozen_backbone"] is True and row["mem_method"] == "maxrss_delta"
    assert row["train_batch_size"] == 2 and row["train_iters"] == 1
    assert row["train_samples_per_sec"] > 0 and row["infer_step_time"] > 0 and row["gmacs"] > 0
