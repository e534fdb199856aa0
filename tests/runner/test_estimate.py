"""runner/estimate.py: a dry run's time per run, from the benchmark figures the package ships."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pandas as pd

import cxr_bench
from cxr_bench.bench.results import write_bundled_figures, write_results_csv
from cxr_bench.config import RunConfig
from cxr_bench.runner.estimate import estimate_runs, load_sources
from cxr_bench.runner.planning import plan_sweep

GPU_BOX = {"hostname": "gpu-box", "gpu": "NVIDIA H200", "timestamp_utc": "2026-12-01T00:00:00+00:00"}
COST_CSV = """section,backbone,head,image_size,n_images,batch_size,epochs,frozen_backbone,hours,note
paper_profile,mobilenet_v1,gap,32,100,8,1,False,0.25,x
paper_profile,mobilenet_v1,wang2017,32,100,8,1,True,250.0,"y; frozen backbone: False"
image_size,resnet50,gap,128,,2,,,,
"""


def figures_file(tmp_path: Path, machine: dict = GPU_BOX) -> Path:
    """A cost CSV as bench_cost.py writes it (the machine in its sidecar) and the figures file made from it."""
    write_results_csv(tmp_path / "results" / "cost.csv", pd.read_csv(io.StringIO(COST_CSV)), machine)
    return write_bundled_figures(tmp_path / "results", tmp_path / "figures.json")


def test_estimates_show_measured_figures_with_their_machine_and_say_unmeasured(write_suite, two_heads,
                                                                               phantom_root, tmp_path):
    figures = figures_file(tmp_path)
    plan = plan_sweep(write_suite(two_heads), data_root=phantom_root)
    configs = {r.run_id: r.config for r in plan.runs}
    gap, lse = (next(i for i, c in configs.items() if c.model.head == h) for h in ("gap", "wang2017"))
    est = estimate_runs(configs, figures)
    # gap matches the first row (0.25 h); the wang2017 row is for a frozen backbone, which these runs are not
    # (the frozen_backbone column decides, never the free-text note)
    assert est.cells == {gap: "15 min GPU", lse: "unmeasured"}
    assert est.gpu[gap] is not None and est.gpu[gap].hours == 0.25 and est.cpu[gap] is None
    assert any("gpu-box (NVIDIA H200) on 2026-12-01" in n for n in est.notes())
    assert not any("no GPU has been benchmarked" in n for n in est.notes())

    frozen = {lse: RunConfig.from_dict(configs[lse].to_dict()).replace(**{"model.freeze_backbone": True})}
    assert estimate_runs(frozen, figures).cells == {lse: "250 h (10 d) GPU"}
    assert estimate_runs(configs, tmp_path / "none.json").cells == {gap: "unmeasured", lse: "unmeasured"}


def test_a_cpu_figure_says_cpu_and_that_no_gpu_was_measured(write_suite, two_heads, phantom_root, tmp_path):
    figures = figures_file(tmp_path, {**GPU_BOX, "gpu": None, "cpu": "AMD EPYC"})
    plan = plan_sweep(write_suite(two_heads), data_root=phantom_root)
    est = estimate_runs({r.run_id: r.config for r in plan.runs}, figures)
    assert sorted(est.cells.values()) == ["15 min CPU", "unmeasured"]
    assert all(f is None for f in est.gpu.values())
    assert any("no GPU has been benchmarked" in n for n in est.notes())


def test_the_shipped_figures_load_and_hold_no_gpu_yet():
    """No GPU has been benchmarked in this project: the shipped file says so rather than holding a guess."""
    sources = load_sources()
    assert sources and all(s.gpu is None for s in sources)
    assert all(s.hours for s in sources)


def test_the_runner_never_imports_the_benchmark_package():
    """bench sits above runner (it measures through the engine and records provenance); runner reads the
    figures through the shipped JSON, so no runner module imports cxr_bench.bench."""
    runner = Path(cxr_bench.__file__).parent / "runner"
    for path in runner.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                assert not target.startswith(("..bench", "cxr_bench.bench")), f"{path.name} imports {target}"
