"""The sanity run on synthetic data stays out of every ranking and table and shows in its own box."""

from __future__ import annotations

import pandas as pd

from cxr_bench.reports import context, tables


def test_synthetic_runs_are_kept_apart(tmp_path, store_factory):
    root = tmp_path / "runs"
    real, _ = store_factory.write_run(root, "s", {"data.image_size": 64}, strength=0.3)
    phantom, _ = store_factory.write_run(root, "s", {"data.image_size": 64, "data.root": "phantom:0",
                                                     "model.backbone": "alexnet"}, strength=3.0)
    ctx = context.ReportContext.load(root)
    assert [r.run_id for r in ctx.runs] == [real]
    assert [r.run_id for r in ctx.sanity_runs] == [phantom]
    assert list(ctx.table["run_id"]) == [real]
    for _, styler in tables.ranking_tables(ctx):
        assert list(styler.data["run id"]) == [real]
    assert phantom not in tables.leaderboard_view(ctx.table, ctx.runs).to_html()
    assert set(tables.expert_results(ctx)["run_id"]) <= {real}
    box = ctx.sanity_html()
    assert phantom in box and "phantom:0" in box and "learns (CI above 0.5)" in box
    assert "Sanity check" in ctx.banner_html()


def test_the_leaderboard_synthetic_column_decides_when_present():
    table = pd.DataFrame({"run_id": ["a", "b", "c"], "synthetic": [True, False, "True"]})
    assert context.synthetic_ids(table) == {"a", "c"}
