"""The sections of the report notebooks, one function each: a notebook cell is one call into here.

Each function displays its tables and figures (IPython ``display``) for a :class:`~.context.ReportContext`;
values that several sections of one report share (the comparison with the papers, the runs shown, the
ablation table) are computed once per context (:meth:`~.context.ReportContext.shared`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from . import figures, tables
from .context import ReportContext, all_label_counts
from .escape import message
from .runnames import by_label_set, one_per_backbone


def _display(*objs: Any) -> None:
    from IPython.display import HTML, display

    for obj in objs:
        display(HTML(obj) if isinstance(obj, str) else obj)


def open_report(runs_dir: str, suite: str, cache_dir: str = "", inputs_key: str = "") -> ReportContext:
    """The report's context (the render's shared analysis through ``cache_dir``/``inputs_key``), with the
    figure style set and the scope, sample warning and sanity box shown."""
    figures.set_style()
    ctx = ReportContext.load(runs_dir, suite, cache_dir or None, inputs_key)
    _display(ctx.banner_html())
    return ctx


def footer(ctx: ReportContext) -> None:
    _display(ctx.footer_html())


# ------------------------------------------------------------------------------------------ replication


def _comparison(ctx: ReportContext) -> pd.DataFrame:
    return ctx.shared("comparison", lambda: tables.replication_comparison(ctx))


def _shown(ctx: ReportContext) -> list[Any]:
    return ctx.shared("shown", lambda: tables.replication_runs(ctx, _comparison(ctx)))


def published_counterparts(ctx: ReportContext) -> None:
    _display(tables.reference_sources(_comparison(ctx)))


def ours_vs_paper(ctx: ReportContext) -> None:
    figures.show(figures.ours_vs_paper(_comparison(ctx), ctx.run_names(), all_label_counts(ctx)))


def reference_tables(ctx: ReportContext) -> None:
    out = tables.reference_tables(ctx, _comparison(ctx))
    _display(*(t for _, t in out))
    if not out:
        _display(message("No run of this store has a published counterpart."))


def rankings(ctx: ReportContext) -> None:
    _display(*(t for _, t in tables.ranking_tables(ctx)))


def roc_curves(ctx: ReportContext) -> None:
    names = ctx.run_names()
    for label_set, group in by_label_set(_shown(ctx)).items():
        figures.show(figures.roc_curves(one_per_backbone(group), title=f"{label_set}: test ROC curves",
                                        names=names))


def subgroups(ctx: ReportContext) -> None:
    names, per_backbone = ctx.run_names(), one_per_backbone(_shown(ctx))
    sub, note = tables.split_tables(per_backbone, "subgroups", "subgroup_table")
    _display(note)
    if sub:
        best = tables.best_run(ctx, sub)
        _display(tables.subgroup_summary(sub, names))
        figures.show(figures.subgroup_plot(sub[best], title=f"Per-label AUC by subgroup: {names[best]}"))
        _display(tables.subgroup_view(sub[best]))
    under, note = tables.split_tables(per_backbone, "subgroups", "underdiagnosis_table")
    _display(note)
    if under:
        under_df = tables.stack_runs(under, per_backbone)
        flat = tables.underdiagnosis_note(under_df)
        _display(tables.underdiagnosis_view(under_df, names), flat)
        if not flat:
            figures.show(figures.underdiagnosis_plot(under_df, names))


def calibration(ctx: ReportContext) -> None:
    names = ctx.run_names()
    cal, note = tables.split_tables(one_per_backbone(_shown(ctx)), "calibration", "calibration_table")
    _display(note)
    if cal:
        _display(tables.calibration_summary(cal, names))
        figures.show(figures.reliability_diagram({names[rid]: table for rid, table in cal.items()}))


def localization(ctx: ReportContext) -> None:
    summary = tables.localization_summary(ctx)
    if summary is None:
        _display(message("No run has been localized yet: cxr-bench localize --run-dir RUN_DIR."))
        return
    _display(summary)
    detail = tables.localization_detail(ctx)
    if detail is None:
        return
    name, view, fig, note = detail
    _display(tables.localization_heading(name, note), view)
    if fig is not None:
        _localization_image(fig)


def _localization_image(path: Path) -> None:
    from IPython.display import Image, display

    _display("<p>Heatmap, ground-truth box (green) and detected boxes (red, dashed) on a few test images:</p>")
    display(Image(filename=str(path)), metadata={"image/png": {"alt": "localization examples"}})


# ------------------------------------------------------------------------------------------ ablations


def _ablations(ctx: ReportContext) -> tuple[pd.DataFrame, set[tuple[str, str, str, str]]]:
    def compute() -> tuple[pd.DataFrame, set[tuple[str, str, str, str]]]:
        abl = tables.ablations(ctx)
        return abl, tables.ablation_few(abl, all_label_counts(ctx))

    return ctx.shared("ablations", compute)


def ablation_summary(ctx: ReportContext) -> None:
    _display(tables.ablation_summary_view(_ablations(ctx)[0]))


def ablation_heatmap(ctx: ReportContext) -> None:
    figures.show(figures.ablation_heatmap(*_ablations(ctx)))


def forest_plot(ctx: ReportContext) -> None:
    figures.show(figures.forest_plot(*_ablations(ctx)))


def ablation_details(ctx: ReportContext) -> None:
    _display(*(t for _, t in tables.ablation_detail_view(*_ablations(ctx))))


# ------------------------------------------------------------------------------------------ leaderboard


def leaderboard(ctx: ReportContext) -> None:
    _display(tables.leaderboard_view(ctx.table, ctx.runs))
    figures.show(figures.mean_auc_plot(ctx.table, ctx.run_names()))


def expert_labels(ctx: ReportContext) -> None:
    ex = tables.expert_results(ctx)
    _display(tables.expert_note(ex))
    if len(ex):
        _display(tables.expert_view(ctx, ex))
    if tables.expert_enough(ex).any():
        figures.show(figures.expert_plot(ex, ctx.run_names()))


def training(ctx: ReportContext) -> None:
    figures.show(figures.history_plot(ctx.runs))


def accuracy_cost(ctx: ReportContext) -> None:
    """Mean AUC against GMACs and measured CPU latency, and MobileNetV1 paired against each baseline."""
    from ..results.accuracy_cost import accuracy_cost_table, mobilenet_vs_baselines
    from .cost import accuracy_cost_plot, accuracy_cost_view, cost_note, versus_view

    acc = accuracy_cost_table(ctx.table)
    _display(cost_note(acc))
    figures.show(accuracy_cost_plot(acc))
    if len(acc):
        _display(accuracy_cost_view(acc))
    vs = mobilenet_vs_baselines(ctx.runs, ctx.table)
    _display(versus_view(vs) if len(vs) else message(
        "No MobileNetV1 configuration has a baseline trained in the same block, label set and image size."))


def not_completed(ctx: ReportContext) -> None:
    failed = tables.failed_view(ctx.leaderboard)
    _display(failed if failed is not None else message("All runs completed."))

