"""Benchmarks (cxr_bench.bench, benchmarks/*.py, benchmarks/run_all.py): the files and arithmetic, never timings.

The scripts run for real at a tiny setting (one backbone, 32 px, 2 steps): the assertions are on what
they write (columns, positive numbers, the machine in the sidecar), the power-law fit, the cost extrapolation and the
README rendering; no test asserts how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bench_cost  # benchmarks/ is on pytest's pythonpath: the scripts are plain modules
import numpy as np
import pandas as pd
import pytest
import run_all

import cxr_bench
from cxr_bench.bench.args import comma_ints, comma_strs
from cxr_bench.bench.measure import MODEL_COLUMNS, fit_power_law, timed
from cxr_bench.bench.readme import README_END, README_START, render_markdown_table, update_readme
from cxr_bench.bench.results import BUNDLED_FIGURES, bundled_figures, read_results_csv, write_results_csv
from cxr_bench.runner.suite import load_suite
from cxr_bench.utils.io import sidecar_path


def test_power_law_fit_recovers_the_exponent():
    x = np.array([128, 224, 320, 512])
    b, a, r2 = fit_power_law(x, 3e-5 * x**2.0)
    assert b == pytest.approx(2.0) and a == pytest.approx(3e-5) and r2 == pytest.approx(1.0)
    b, _, r2 = fit_power_law([256, 512, 1024], [1.0, 2.1, 3.9])
    assert 0.9 < b < 1.1 and 0.9 < r2 <= 1.0
    with pytest.raises(ValueError):
        fit_power_law([1], [1])


def test_results_csv_is_plain_and_its_sidecar_keeps_the_machine(tmp_path):
    rows = [{"value": 1.5, "model": "a+gap", "img_size": 224}, {"value": 2.0, "model": "b+gap", "img_size": 512}]
    meta = {"cpu": "Some CPU # 2", "cpu_usable": 2, "gpu": None, "git_dirty": False}
    path = write_results_csv(tmp_path / "r.csv", rows, meta, columns=("model", "img_size"))
    assert path.read_text().splitlines()[0] == "model,img_size,value"  # header first, given columns first
    df, back = read_results_csv(path)
    assert back == meta  # typed values and a '#' kept as they were
    assert json.loads(sidecar_path(path).read_text())["provenance"] == meta
    assert list(df.columns) == ["model", "img_size", "value"] and df["value"].tolist() == [1.5, 2.0]
    assert pd.read_csv(path).equals(df)
    with pytest.raises(ValueError, match="lack columns"):
        write_results_csv(tmp_path / "bad.csv", rows, {}, columns=("model", "missing"))
    assert not (tmp_path / "bad.csv").exists()
    # without a sidecar (a table from elsewhere) the table still reads, with no provenance
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert read_results_csv(tmp_path / "other.csv")[1] == {}


def test_committed_results_are_plain_csvs_with_their_machine_beside_them():
    """Every benchmarks/results/*.csv is read by pandas with no options (no '#' banner), and each of the
    benchmark tables that name a machine has it in its sidecar, with the commit."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for path in sorted(results.glob("*.csv")):
        text = path.read_text(encoding="utf-8")
        assert not text.startswith("#") and "\n#" not in text, path.name
        df = pd.read_csv(path)
        assert len(df) > 0 and not any(str(c).startswith("#") for c in df.columns), path.name
    for name in ("cost_curve", "data_pipeline", "harness_overhead", "metrics", "models_cpu"):
        df, meta = read_results_csv(results / f"{name}.csv")
        assert json.loads(sidecar_path(results / f"{name}.csv").read_text())["columns"] == list(df.columns)
        assert meta["cpu"] and meta["cpu_usable"] >= 1 and len(meta["git_commit"]) == 40, name


def test_comma_list_arguments():
    assert comma_ints("128, 224,") == (128, 224) and comma_strs("resnet50,,gap") == ("resnet50", "gap")
    with pytest.raises(ValueError):
        comma_ints("224,big")


def test_timed_counts_the_cpu_of_a_waited_for_child():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    rc, wall, cpu = timed(lambda: subprocess.run([sys.executable, "-c", burn], check=True).returncode)
    assert rc == 0 and cpu >= 0.3 and wall >= 0.3


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


def test_a_failing_script_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    calls = []

    def ok(argv):
        calls.append(("ok", argv))
        return 0

    def boom(argv):
        calls.append(("boom", argv))
        raise RuntimeError("broken script")

    monkeypatch.setitem(run_all.BENCHMARKS, "x_boom", ("x_boom_mod", "fails"))
    monkeypatch.setitem(run_all.BENCHMARKS, "x_ok", ("x_ok_mod", "works"))
    import sys
    import types

    monkeypatch.setitem(sys.modules, "x_boom_mod", types.SimpleNamespace(main=boom))
    monkeypatch.setitem(sys.modules, "x_ok_mod", types.SimpleNamespace(main=ok))
    rc = run_all.main(["--only", "x_boom", "--only", "x_ok", "--out", str(tmp_path), "--no-readme"])
    assert rc == 1  # one failed
    assert [c[0] for c in calls] == ["boom", "ok"] and calls[1][1] == ["--out", str(tmp_path)]
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert machine["outcomes"]["x_boom"]["status"] == "failed"
    assert "broken script" in machine["outcomes"]["x_boom"]["message"]
    assert machine["outcomes"]["x_ok"]["status"] == "ok" and machine["cpu_count"] >= 1
    # a later --only run into the same folder keeps the earlier outcomes
    assert run_all.main(["--only", "x_ok", "--out", str(tmp_path), "--no-readme"]) == 0
    assert set(json.loads((tmp_path / "machine.json").read_text())["outcomes"]) == {"x_boom", "x_ok"}


def test_script_arguments_need_exactly_one_benchmark(tmp_path):
    with pytest.raises(SystemExit):
        run_all.main(["--out", str(tmp_path), "--no-readme", "--", "--iters", "2"])


@pytest.mark.slow  # spawns a fresh interpreter per setting (for the memory mark): torch imports dominate
def test_bench_quick_models_writes_the_timm_style_csv(tmp_path):
    out = tmp_path / "results"
    rc = run_all.main(["--quick", "--only", "models", "--out", str(out), "--no-readme", "--",
                       "--backbones", "mobilenet_v1", "--heads", "gap,wang2017", "--sizes", "32", "--iters", "2",
                       "--batch-size", "2", "--threads", "1"])
    assert rc == 0
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


def test_cost_extrapolation_arithmetic():
    cost = bench_cost
    epoch, run = cost.estimate_run_seconds(1000, 100, 300, batch_size=16, epochs=10, t_train=0.5, t_infer=0.1)
    # 62 full batches of 16 (the last partial batch is dropped), then a validation pass
    assert epoch == pytest.approx(62 * 16 * 0.5 + 100 * 0.1)
    assert run == pytest.approx(10 * epoch + 300 * 0.1)
    epoch, _ = cost.estimate_run_seconds(1000, 0, 0, batch_size=16, epochs=1, t_train=1.0, t_infer=0.0,
                                         max_steps_per_epoch=3, accum_steps=5)
    assert epoch == pytest.approx(15 * 16)


@pytest.mark.slow
def test_bench_cost_quick_measures_every_section(tmp_path):
    """The paper profile from the real wang2017 suite (sizes capped at 32 px), image-size and dataset-size
    scaling through the real harness at tiny sizes; all numbers positive, fits present."""
    cost = bench_cost
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
    # The official train_val list, counted here from the bundled file, minus the validation carve of about
    # 10% of its patients (data.val_fraction), every run the same.
    listing = Path(cxr_bench.__file__).parent / "bundled" / "nih" / "train_val_list.txt"
    n_train_val = sum(1 for line in listing.read_text().splitlines() if line.strip())
    assert n_train_val == 86_524
    assert prof["n_images"].nunique() == 1 and 0.86 * n_train_val < prof["n_images"].iloc[0] < 0.94 * n_train_val
    total = df[df["section"] == "paper_profile_total"].iloc[0]
    assert total["seconds"] == pytest.approx(prof["seconds"].sum(), rel=1e-4)
    assert (df[df["section"].isin(["image_size", "dataset_size"])]["seconds"].fillna(1) > 0).all()
    fits = df[df["section"].str.endswith("_fit")]
    assert len(fits) == 3 and fits["exponent"].notna().all()
    assert meta["benchmark"] == "bench_cost"


def test_measure_model_in_process_row():
    from cxr_bench.bench.measure import measure_model

    row = measure_model("mobilenet_v1", "gap", 32, batch_size=2, iters=1, warmup=0, device="cpu", threads=1,
                        freeze_backbone=True)
    assert set(MODEL_COLUMNS) <= set(row)
    assert row["frozen_backbone"] is True and row["mem_method"] == "maxrss_delta"
    assert row["train_batch_size"] == 2 and row["train_iters"] == 1
    assert row["train_samples_per_sec"] > 0 and row["infer_step_time"] > 0 and row["gmacs"] > 0


def test_analysis_benchmark_at_a_tiny_size(tmp_path):
    import bench_analysis

    from cxr_bench.results.runs import load_runs

    store = tmp_path / "store"
    facts = bench_analysis.build_store(store, 3, n_test=120, metrics_bootstrap=5)
    runs = load_runs(store)
    assert facts["runs"] == len(runs) == 3 and facts["test_images"] == 120
    assert all(not r.problems and r.metrics["test"]["expert"]["predictions_sha256"] == r.predictions_sha256()
               for r in runs)  # built like a real run: artifacts recorded, expert block current
    assert any(r.manifest["suite"]["pairs"] for r in runs)  # a pair even at this size
    rows = bench_analysis.measure_store(store, tmp_path, ["leaderboard", "ablations"], bootstrap=20)
    assert [r["step"] for r in rows] == ["leaderboard", "ablations"]
    for r in rows:
        assert r["returncode"] == 0 and r["cpu_s"] > 0 and r["wall_s"] > 0 and 20 < r["peak_rss_mb"] < 4000
    assert pd.read_csv(store / "wang2017" / "leaderboard.csv")["run_id"].nunique() == 3
    assert len(pd.read_csv(tmp_path / "ablations.csv")) > 0


def test_the_shipped_figures_are_the_committed_results():
    """cxr_bench/bundled/benchmarks.json (what a dry run reads, present in a wheel) is what the committed
    benchmarks/results/*.csv give, row for row: each paper-profile row of each cost CSV, counted here."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    shipped = json.loads(BUNDLED_FIGURES.read_text())
    assert shipped == json.loads(json.dumps(bundled_figures(results)))
    for source in shipped["sources"]:
        table, meta = read_results_csv(results.parent.parent / source["file"])
        rows = table[table["section"] == "paper_profile"]
        assert len(source["runs"]) == len(rows) > 0 and source["machine"]["hostname"] == meta["hostname"]
        assert [r["hours"] for r in source["runs"]] == pytest.approx(rows["hours"].tolist())
        assert [r["frozen_backbone"] for r in source["runs"]] == rows["frozen_backbone"].tolist()
