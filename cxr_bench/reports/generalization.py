"""The generalization report section (``reports/generalization.ipynb``): NIH test AUC against external-set AUC.

Thin functions over :mod:`cxr_bench.results.generalization` for the notebook's cells. Every string from a
run store or a metrics file goes through :func:`.tables.esc` / :func:`.tables.styled` before it reaches HTML.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pandas.io.formats.style import Styler

from ..results.generalization import compare_external, external_records, generalization_table
from ..results.runs import RunRecord
from .escape import esc, message
from .formatting import MIN_CASES, fmt_ci, fmt_p
from .formatting import fmt as _fmt
from .runnames import short_names
from .styles import styled

__all__ = ["GeneralizationContext", "load", "intro_html", "generalization_view", "mapping_view", "drop_plot",
           "paired_views"]


@dataclass
class GeneralizationContext:
    runs: list[RunRecord]
    table: pd.DataFrame
    names: dict[str, str]

    @property
    def datasets(self) -> list[str]:
        return sorted(set(self.table["dataset"]))


def load(runs_dir: str | Path, suite: str | None = None) -> GeneralizationContext:
    runs = external_records(runs_dir, suite or None)
    return GeneralizationContext(runs, generalization_table(runs), short_names(runs) if runs else {})


def intro_html(ctx: GeneralizationContext) -> str:
    """What was scored on which set, how it was chosen, and the loud warnings (sets made of NIH images)."""
    if not ctx.runs:
        return message("No run of this store has been scored on an external set.")
    parts = []
    for dataset in ctx.datasets:
        recs = [r for r in ctx.runs if dataset in r.external_datasets()]
        data = recs[0].external_metrics(dataset).get("data") or {}
        excluded = "; ".join(f"{k}: {v:,}" for k, v in (data.get("excluded") or {}).items()) or "none"
        parts.append(
            f"<h4>{esc(data.get('title') or dataset)}</h4><ul>"
            f"<li>{len(recs)} run(s); {int(data.get('n_images') or 0):,} frontal images, "
            f"{int(data.get('n_patients') or 0):,} bootstrap clusters ({esc(data.get('patient_unit'))})</li>"
            f"<li>Views: {esc(data.get('views'))}. Left out: {esc(excluded)}</li>"
            f"<li>Labels: {esc(data.get('label_source'))}</li>"
            f"<li>Subgroup attributes recorded: {esc(', '.join(data.get('attributes') or []) or 'none')}</li></ul>")
        if data.get("nih_overlap"):
            parts.append(f'<p style="color:#b00;font-weight:bold">WARNING: {esc(data["nih_overlap"])}</p>')
    return "".join(parts)


def generalization_view(ctx: GeneralizationContext, dataset: str) -> Styler:
    """Per run and label: NIH test AUC [CI], external AUC [CI], the drop; greyed below MIN_CASES positives."""
    t = ctx.table[ctx.table["dataset"] == dataset]
    df = pd.DataFrame({
        "run": [ctx.names.get(r, r) for r in t["run_id"]], "label": t["label"],
        "NIH test AUC [95% CI]": [f"{_fmt(a)} {fmt_ci(lo, hi)}" for a, lo, hi in zip(t["nih_auc"], t["nih_lo"], t["nih_hi"])],
        f"{dataset} AUC [95% CI]": [f"{_fmt(a)} {fmt_ci(lo, hi)}" for a, lo, hi in zip(t["ext_auc"], t["ext_lo"], t["ext_hi"])],
        "drop": [_fmt(d) for d in t["drop"]],
        "positives": [str(int(n)) if n == n and n is not None else "" for n in t["n_ext_positive"]],
        "images": [str(int(n)) if n == n and n is not None else "" for n in t["n_ext_images"]],
    })
    few = pd.to_numeric(t["n_ext_positive"], errors="coerce").fillna(0).to_numpy() < MIN_CASES
    greyed = np.repeat(few[:, None], df.shape[1], axis=1)
    note = t["ci_accounts_for"].iloc[0] if len(t) else ""
    return styled(df, f"{dataset}: drop = NIH AUC - external AUC. Intervals: {note}", hide_index=True,
                  gradients=[(["drop"], -pd.to_numeric(t["drop"], errors="coerce").to_numpy(), "RdBu", -0.3, 0.3)],
                  greyed=greyed)


def mapping_view(dataset: str) -> Styler:
    """The label mapping table of ``dataset``: NIH name -> theirs, scored or dropped, and why."""
    from ..data.external import mapping_table

    m = mapping_table(dataset)
    m = m.assign(scored=np.where(m["scored"], "yes", "no")).drop(columns=["dataset"])
    return styled(m, f"{dataset}: NIH label -> the set's label (only shared labels are scored)", hide_index=True)


def drop_plot(ctx: GeneralizationContext) -> Figure:
    """External AUC against NIH test AUC, one point per run and label, one panel per external set."""
    from .figures import _figure, palette

    sets = ctx.datasets
    fig = _figure(figsize=(4.2 * max(len(sets), 1) + 1.5, 4.2))
    axes = fig.subplots(1, max(len(sets), 1), squeeze=False)[0]
    runs = sorted(set(ctx.table["run_id"]))
    colours = dict(zip(runs, palette(len(runs))))
    for ax, dataset in zip(axes, sets):
        t = ctx.table[ctx.table["dataset"] == dataset]
        for run_id, g in t.groupby("run_id", sort=True):
            ax.scatter(g["nih_auc"], g["ext_auc"], color=colours[run_id], label=ctx.names.get(run_id, run_id), s=22)
        ax.plot([0, 1], [0, 1], color="#888", lw=0.8, ls="--")
        ax.set(xlim=(0.3, 1.0), ylim=(0.3, 1.0), xlabel="NIH test AUC", ylabel=f"{dataset} AUC", title=dataset)
    if runs:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return fig


def paired_views(ctx: GeneralizationContext, n_bootstrap: int = 1000, seed: int = 0,
                 max_pairs: int = 6) -> list[tuple[str, Styler]]:
    """Run B - run A on the same external set (paired patient bootstrap, clustered test, Holm), per set."""
    out = []
    for dataset in ctx.datasets:
        recs = [r for r in ctx.runs if dataset in r.external_datasets()]
        for a, b in list(itertools.combinations(recs, 2))[:max_pairs]:
            df = compare_external(a, b, dataset, n_bootstrap=n_bootstrap, seed=seed)
            view = pd.DataFrame({
                "label": df["label"], "AUC A": [_fmt(v) for v in df["auc_a"]], "AUC B": [_fmt(v) for v in df["auc_b"]],
                "B - A [95% CI]": [f"{_fmt(d)} {fmt_ci(lo, hi)}" for d, lo, hi in zip(df["delta"], df["ci_lo"], df["ci_hi"])],
                "p (bootstrap, Holm)": [fmt_p(p) for p in df["p_bootstrap_holm"]],
                "p (clustered, Holm)": [fmt_p(p) for p in df["p_clustered_holm"]],
                "verdict": df["verdict"], "note": df["reason"].fillna("")})
            title = f"{dataset}: B = {ctx.names.get(b.run_id, b.run_id)} vs A = {ctx.names.get(a.run_id, a.run_id)}"
            out.append((title, styled(view, title, hide_index=True)))
    return out
