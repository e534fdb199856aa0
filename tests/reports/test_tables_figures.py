from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from cxr_bench.reports import figures, tables  # noqa: E402


@pytest.fixture(scope="module")
def ctx(run_store):
    root, _ = run_store
    return tables.ReportContext.load(root)


def test_tables_show_the_numbers(ctx, run_store):
    _, ids = run_store
    cmp = tables.replication_comparison(ctx)
    html = tables.reference_view(cmp).to_html()
    row = ctx.table.set_index("run_id").loc[ids["resnet50_14"]]
    assert f"{row['auc_Effusion']:.3f}" in html and "0.7585" in html and "Pleural_Thickening" in html
    assert "Emphysema" in tables.auc_table(ctx.table).to_html()
    assert ids["gamma"] in tables.leaderboard_view(ctx.table).to_html()
    assert "NOT COMPARABLE" in ctx.banner_html()
    assert "Table 17" in tables.reference_sources(cmp).to_string()
    abl = tables.ablations(ctx, n_bootstrap=50)
    assert "gamma" in tables.ablation_summary_view(abl).to_html()
    assert "attention vs gap" in tables.ablation_detail_view(abl).to_html()
    assert "airspace opacity" in tables.expert_view(ctx).to_html()
    assert "no rows" in tables.text_table(ctx.table.iloc[:0])


def test_figures_draw_every_panel(ctx):
    figures.set_style()
    cmp = tables.replication_comparison(ctx)
    roc = figures.roc_curves(ctx.runs)
    assert sum(1 for ax in roc.axes if ax.get_title()) == 14  # one panel per ChestX-ray14 label
    assert len(figures.ours_vs_paper(cmp).axes[0].collections) >= 1
    abl = tables.ablations(ctx, n_bootstrap=50)
    assert len(figures.forest_plot(abl).axes) == 2  # one panel per pair
    assert figures.auc_heatmap(ctx.table).axes[0].get_title() == "Test AUC per label"
    figures.mean_auc_plot(ctx.table)
    figures.expert_plot(tables.expert_results(ctx), tables.run_labels(ctx))
    figures.history_plot(ctx.runs)
    empty = figures.forest_plot(abl.iloc[:0])
    assert "no paired ablations" in empty.axes[0].texts[0].get_text()
    plt.close("all")
