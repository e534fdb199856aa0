"""The generalization report section's functions on a small store with external metrics: every string from a
file is escaped, the views and paired comparisons are built."""

from __future__ import annotations

from pathlib import Path

import external_sets  # tests/helpers is on pytest's pythonpath

from cxr_bench.reports import generalization as rg


def test_report_section_escapes_text_from_files(tmp_path: Path, store_factory) -> None:
    root, _ = external_sets.scored_factory_store(tmp_path / "runs", store_factory)
    ctx = rg.load(root)
    assert ctx.datasets == ["openi"]
    html = rg.intro_html(ctx)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    view = rg.generalization_view(ctx, "openi").to_html()
    assert "NIH test AUC [95% CI]" in view and "<script>" not in view
    assert len(rg.paired_views(ctx, n_bootstrap=50)) == 1
    assert "Consolidation" in rg.mapping_view("openi").to_html()
    fig = rg.drop_plot(ctx)
    assert len(fig.axes) == 1


def test_no_external_metrics_says_so(tmp_path: Path, store_factory) -> None:
    store_factory.write_run(tmp_path / "runs", "plain", {"optim.epochs": 3}, strength=1.0)
    ctx = rg.load(tmp_path / "runs")
    assert ctx.runs == [] and "No run of this store has been scored" in rg.intro_html(ctx)
