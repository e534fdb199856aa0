"""Figures for the report notebooks: seaborn, one style, built from saved artifacts only.

Every function returns a matplotlib ``Figure`` (the notebook displays it; a script can ``savefig`` it).
:func:`set_style` is called once at the top of every notebook so all reports share fonts, palette and
size. Colours: one categorical palette for runs, the red-yellow-green scale of the tables for AUC values,
a diverging red-blue scale for differences.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..data.labels import CHESTXRAY14
from ..errors import RunStoreError
from ..results.runs import RunRecord
from .tables import CMAP, run_label

PALETTE = "colorblind"


def set_style() -> None:
    """The one style of every report figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.titleweight": "bold",
                         "legend.frameon": False})


def show(fig: Figure) -> None:
    """Display ``fig`` once in a notebook and free it (pyplot would otherwise show it again at cell end)."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def _empty(message: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def roc_curves(runs: list[RunRecord], split: str = "test", ncols: int = 4) -> Figure:
    """ROC curve of every label (one panel each, the paper's order), one line per run, AUC in the legend."""
    runs = [r for r in runs if r.predictions_path(split).is_file()]
    if not runs:
        return _empty("no saved predictions to draw ROC curves from")
    preds = {r.run_id: r.predictions(split) for r in runs}
    labels = [lab for lab in CHESTXRAY14 if any(lab in p.labels for p in preds.values())]
    nrows = math.ceil(len(labels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False,
                             sharex=True, sharey=True)
    colors = sns.color_palette(PALETTE, len(runs))
    for ax, lab in zip(axes.flat, labels):
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6")
        for color, rec in zip(colors, runs):
            p = preds[rec.run_id]
            if lab not in p.labels:
                continue
            j = p.labels.index(lab)
            y, s = p.y_true[:, j], p.y_prob[:, j]
            if y.min() == y.max():
                continue
            fpr, tpr = _roc_points(y, s)
            auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
            ax.plot(fpr, tpr, color=color, lw=1.4, label=f"{auc:.3f}")
        ax.set_title(lab.replace("_", " "))
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=7, title="AUC", title_fontsize=7)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("1 - specificity")
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity")
    handles = [plt.Line2D([], [], color=c, lw=2) for c in colors]
    fig.legend(handles, [run_label(r) for r in runs], loc="upper center", ncol=min(3, len(runs)),
               bbox_to_anchor=(0.5, 1.0 + 0.04 * math.ceil(len(runs) / 3)))
    fig.tight_layout()
    return fig


def ours_vs_paper(cmp: pd.DataFrame) -> Figure:
    """Our per-label AUC (with its 95% CI) against the paper's; points on the diagonal replicate."""
    df = cmp[cmp["label"] != "mean"] if not cmp.empty else cmp
    if df.empty:
        return _empty("no run with a published counterpart")
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    df = df.assign(run=[f"{b} / {ls} vs {s}" for b, ls, s in zip(df["backbone"], df["label_set"], df["setting"])])
    lo = float(np.nanmin([df["paper"].min(), df["ours_ci_lo"].min(), df["ours"].min()])) - 0.03
    hi = float(np.nanmax([df["paper"].max(), df["ours_ci_hi"].max(), df["ours"].max()])) + 0.03
    lo, hi = max(0.0, lo), min(1.0, hi)
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.5", lw=1, zorder=0)
    colors = dict(zip(df["run"].unique(), sns.color_palette(PALETTE, df["run"].nunique())))
    for run, g in df.groupby("run", sort=False):
        yerr = np.vstack([g["ours"] - g["ours_ci_lo"], g["ours_ci_hi"] - g["ours"]])
        ax.errorbar(g["paper"], g["ours"], yerr=np.where(np.isfinite(yerr), yerr, 0), fmt="o", ms=5,
                    color=colors[run], ecolor=colors[run], elinewidth=0.8, capsize=2, label=run, alpha=0.9)
        for _, r in g.iterrows():
            ax.annotate(r["label"].replace("_", " ")[:12], (r["paper"], r["ours"]), fontsize=6.5,
                        xytext=(3, 2), textcoords="offset points", color="0.3")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("paper's AUC")
    ax.set_ylabel("our AUC (95% CI)")
    ax.set_title("Ours vs the paper, per label (above the diagonal: we do better)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncol=1)
    fig.tight_layout()
    return fig


def forest_plot(table: pd.DataFrame) -> Figure:
    """Paired ablations as a forest plot: Δ AUC (variant - baseline) with 95% CI per label and the mean,
    one panel per pair; filled markers where p < 0.05 (DeLong per label, bootstrap for the mean)."""
    if table.empty:
        return _empty("no paired ablations in this run store")
    pairs = list(table.groupby(["factor", "value_a", "value_b"], sort=False))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 0.32 * 16 + 1.2), squeeze=False,
                             sharey=True)
    order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(table["label"])]
    ypos = {lab: i for i, lab in enumerate(order)}
    for ax, ((factor, va, vb), g) in zip(axes[0], pairs):
        ax.axvline(0, color="0.4", lw=1)
        for _, r in g.iterrows():
            y = ypos[r["label"]]
            sig = pd.notna(r["p"]) and r["p"] < 0.05
            color = sns.color_palette(PALETTE)[3 if r["label"] == "mean" else 0]
            if pd.notna(r["ci_lo"]):
                ax.plot([r["ci_lo"], r["ci_hi"]], [y, y], color=color, lw=1.6)
            ax.plot(r["delta"], y, "D" if r["label"] == "mean" else "o", ms=6, color=color,
                    mfc=color if sig else "white", mew=1.4)
        ax.set_title(f"{factor.split('.')[-1]}: {vb} vs {va}", fontsize=10)
        ax.set_xlabel("Δ AUC (variant - baseline)")
        lim = float(np.nanmax(np.abs(g[["ci_lo", "ci_hi", "delta"]].to_numpy(dtype=float)))) * 1.1 or 0.05
        ax.set_xlim(-lim, lim)
    axes[0, 0].set_yticks(range(len(order)))
    axes[0, 0].set_yticklabels([o.replace("_", " ") if o != "mean" else "MEAN AUC" for o in order])
    axes[0, 0].invert_yaxis()
    fig.text(0.01, 0.005, "filled: p < 0.05 (DeLong per label, paired patient bootstrap for the mean); "
             "bars: 95% paired patient-bootstrap CI", fontsize=7.5, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def auc_heatmap(lb: pd.DataFrame) -> Figure:
    """Runs x labels heatmap of test AUC, the table's colour scale, values printed."""
    if lb.empty:
        return _empty("no completed runs")
    labels = [lab for lab in CHESTXRAY14 if f"auc_{lab}" in lb and lb[f"auc_{lab}"].notna().any()]
    data = lb[["mean_auc", *(f"auc_{lab}" for lab in labels)]].apply(pd.to_numeric, errors="coerce")
    data.columns = ["MEAN", *(lab.replace("_", " ") for lab in labels)]
    data.index = [f"{s}: {run_label(r)}" for s, (_, r) in zip(lb["suite"], lb.iterrows())]
    fig, ax = plt.subplots(figsize=(3.0 + 0.8 * data.shape[1], 2.4 + 0.5 * data.shape[0]))
    sns.heatmap(data, annot=True, fmt=".2f", cmap=CMAP, vmin=0.5, vmax=1.0, linewidths=0.5, ax=ax,
                cbar_kws={"label": "test ROC AUC", "shrink": 0.8}, annot_kws={"fontsize": 8})
    ax.set_xticklabels(ax.get_xticklabels(), rotation=40, ha="right")
    ax.set_title("Test AUC per label")
    fig.tight_layout()
    return fig


def mean_auc_plot(lb: pd.DataFrame) -> Figure:
    """Mean test AUC of every run with its 95% CI, best first."""
    if lb.empty:
        return _empty("no completed runs")
    df = lb.assign(run=[f"{s}: {run_label(r)}" for s, (_, r) in zip(lb["suite"], lb.iterrows())])
    df = df.sort_values("mean_auc", ascending=False, kind="mergesort")
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.4 * len(df)))
    colors = dict(zip(df["suite"].unique(), sns.color_palette(PALETTE, df["suite"].nunique())))
    for y, (_, r) in enumerate(df.iterrows()):
        c = colors[r["suite"]]
        if pd.notna(r["mean_auc_ci_lo"]):
            ax.plot([r["mean_auc_ci_lo"], r["mean_auc_ci_hi"]], [y, y], color=c, lw=2)
        ax.plot(r["mean_auc"], y, "o", color=c, ms=7)
    ax.set_yticks(range(len(df)))
    ax.set_yticklabels(df["run"])
    ax.invert_yaxis()
    ax.set_xlabel("mean test ROC AUC (95% patient-bootstrap CI)")
    ax.set_title("Mean AUC per run")
    fig.tight_layout()
    return fig


def expert_plot(df: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Per run and expert target: AUC vs NIH labels and vs radiologist labels, joined by a line."""
    if df.empty:
        return _empty("no image covered by the expert labels")
    labels = labels or {}
    targets = list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 1.8 + 0.45 * df["run_id"].nunique()),
                             squeeze=False, sharey=True)
    runs = list(dict.fromkeys(df["run_id"]))
    pal = sns.color_palette(PALETTE, 2)
    for ax, t in zip(axes[0], targets):
        g = df[df["target"] == t].set_index("run_id")
        for y, rid in enumerate(runs):
            if rid not in g.index:
                continue
            r = g.loc[rid]
            ax.plot([r["nih_auc"], r["expert_auc"]], [y, y], color="0.7", lw=1.2, zorder=0)
            ax.plot(r["nih_auc"], y, "o", color=pal[0], label="NIH labels" if y == 0 else None)
            ax.plot(r["expert_auc"], y, "s", color=pal[1], label="radiologists" if y == 0 else None)
        ax.set_title(f"{t.replace('_', ' ')} (n={int(g['n'].max())})")
        ax.set_xlabel("test ROC AUC")
        ax.set_xlim(0, 1.02)
    axes[0, 0].set_yticks(range(len(runs)))
    axes[0, 0].set_yticklabels([labels.get(r, r) for r in runs])
    axes[0, 0].invert_yaxis()
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=2, fontsize=8,
               bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return fig


def history_plot(runs: list[RunRecord]) -> Figure:
    """Validation mean AUC per epoch of every run (from history.csv)."""
    rows: list[dict[str, Any]] = []
    for r in runs:
        try:
            h = r.history()
        except RunStoreError:  # a run without history is simply not drawn
            continue
        if "val_mean_auc" in h:
            rows += [{"run": run_label(r), "epoch": e, "val mean AUC": v}
                     for e, v in zip(h["epoch"], h["val_mean_auc"])]
    if not rows:
        return _empty("no training history")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.lineplot(pd.DataFrame(rows), x="epoch", y="val mean AUC", hue="run", marker="o", ax=ax)
    ax.legend(fontsize=7, loc="lower right")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Validation mean AUC during training")
    fig.tight_layout()
    return fig
