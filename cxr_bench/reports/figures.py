"""Figures for the report notebooks: seaborn, one style, built from saved artifacts only.

Every function returns a matplotlib ``Figure`` (the notebook displays it; a script can ``savefig`` it) and
answers one question. Rules they share, because a reader must be able to read them: legends sit outside
the axes (constrained layout's ``outside`` locations), runs get distinct colours (:func:`palette`), panels
are labelled by what tells the runs apart (:func:`~.tables.short_names`), and a panel whose numbers would
rest on too few cases says so instead of drawing them (:data:`~.tables.MIN_CASES`). Colours: a categorical
palette for runs, the red-yellow-green scale of the tables for AUC values, a diverging red-blue scale for
differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..data.labels import CHESTXRAY14
from ..errors import RunStoreError
from ..results.runs import RunRecord
from .formatting import MIN_CASES, at_chance, label_name, num, too_few, too_few_text
from .runnames import configuration_name, short_names
from .styles import DELTA_CMAP, backbone_colour

PALETTE = "colorblind"


def set_style() -> None:
    """The one style of every report figure. Mathtext is off: run names are text from the store, and a
    ``$`` in one must print as a dollar sign, not fail the figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.titleweight": "bold",
                         "legend.frameon": False, "text.parse_math": False})


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours that stay distinct: the colour-blind palette up to 10, tab20 up to 20, then HUSL."""
    if n <= 10:
        return list(sns.color_palette(PALETTE, n))
    if n <= 20:
        return list(sns.color_palette("tab20", n))
    return list(sns.color_palette("husl", n))


def show(fig: Figure, alt: str = "") -> None:
    """Display ``fig`` once in a notebook and free it (pyplot would otherwise show it again at cell end).
    ``alt`` (default: the figure's titles) becomes the HTML image's alternative text."""
    from IPython.display import display

    if not alt:
        titles = [fig.get_suptitle()]
        titles += [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_title()][:6]
        alt = "; ".join(t for t in titles if t) or "figure"
    display(fig, metadata={"image/png": {"alt": alt[:300]}})
    plt.close(fig)


def _figure(**kwargs: Any) -> Figure:
    return plt.figure(layout="constrained", **kwargs)


def _empty(message: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _nice(label: str) -> str:
    return label_name(label)


# ----------------------------------------------------------------------------------------------- ROC


def roc_curves(runs: Sequence[RunRecord], split: str = "test", ncols: int = 4, title: str = "",
               names: Mapping[str, str] | None = None) -> Figure:
    """ROC curve of every label (one panel each, the paper's order), one line per run in its backbone's
    colour (:func:`~.styles.backbone_colour`), for runs of one label set (call once per label set, with one
    run per backbone). Each panel's legend gives every run's AUC as its metrics.json records it. A label
    with fewer than MIN_CASES test positives or negatives gets a note, not a staircase of two steps."""
    runs = [r for r in runs if r.predictions_path(split).is_file()]
    if not runs:
        return _empty("no saved predictions to draw ROC curves from")
    from sklearn.metrics import roc_curve

    names = dict(names or short_names(runs))
    preds = {r.run_id: r.predictions(split) for r in runs}
    labels = [lab for lab in CHESTXRAY14 if any(lab in p.labels for p in preds.values())]
    nrows = math.ceil(len(labels) / ncols)
    fig = _figure(figsize=(2.9 * ncols + 0.4, 2.9 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for ax, lab in zip(axes.flat, labels):
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6")
        ax.set_title(_nice(lab), fontsize=9)
        ax.set_aspect("equal")
        drawn, note = 0, ""
        for rec in runs:
            p = preds[rec.run_id]
            if lab not in p.labels:
                continue
            y, s = p.y_true[:, p.labels.index(lab)], p.y_prob[:, p.labels.index(lab)]
            n_pos = int(y.sum())
            if too_few(n_pos, len(y) - n_pos):
                note = too_few_text(n_pos, len(y) - n_pos)
                continue
            fpr, tpr, _ = roc_curve(y, s)
            auc = num((((rec.metrics.get(split) or {}).get("per_label") or {}).get(lab) or {}).get("auc"))
            ax.plot(fpr, tpr, color=backbone_colour(rec.cfg("model.backbone")), lw=1.3,
                    label=f"{names.get(rec.run_id, rec.run_id)}  {auc:.3f}")
            drawn += 1
        if drawn:
            ax.legend(loc="lower right", fontsize=6.5, title="AUC", title_fontsize=6.5, handlelength=1.2,
                      borderaxespad=0.2)
        else:
            ax.text(0.5, 0.55, note, ha="center", va="center", fontsize=8, color="0.3",
                    bbox={"facecolor": "white", "edgecolor": "0.7"})
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("1 - specificity")
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ------------------------------------------------------------------------------------ ours vs paper


def ours_vs_paper(cmp: pd.DataFrame, names: Mapping[str, str] | None = None,
                  counts: Mapping[str, Mapping[str, tuple[float, float]]] | None = None) -> Figure:
    """Do we reproduce the paper, label by label? One panel per run held against a paper (a row of
    panels per label set): the paper's AUC (black diamond) and ours with its 95% CI (dot and bar) for
    each label and the mean. No text labels on points, so nothing overlaps; labels with too few test
    cases (``counts``: run id -> label -> (pos, neg)) are marked 'too few' instead of a dot."""
    if cmp.empty:
        return _empty("no run with a published counterpart")
    names, counts = dict(names or {}), dict(counts or {})
    groups = [(ls, g) for ls, g in cmp.groupby("label_set", sort=True)]
    panels = [[(rid, setting, gg) for (rid, setting), gg in g.groupby(["run_id", "setting"], sort=False)]
              for _, g in groups]
    ncols = max(len(p) for p in panels)
    heights = [1 + g["label"].nunique() * 0.28 for _, g in groups]
    fig = _figure(figsize=(2.6 * ncols + 1.6, sum(heights) + 1.0))
    axes = fig.subplots(len(groups), ncols, squeeze=False, gridspec_kw={"height_ratios": heights})
    lo = float(np.nanmin(cmp[["paper", "ours_ci_lo", "ours"]].to_numpy(dtype=float))) - 0.05
    lo = max(0.0, min(lo, 0.45))
    ours_color = sns.color_palette(PALETTE)[0]
    for row, ((label_set, g), row_panels) in enumerate(zip(groups, panels)):
        order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(g["label"])]
        for col in range(ncols):
            ax = axes[row, col]
            if col >= len(row_panels):
                ax.axis("off")
                continue
            rid, setting, gg = row_panels[col]
            ours_color = backbone_colour(gg["backbone"].iloc[0]) if "backbone" in gg else ours_color
            gg = gg.set_index("label").reindex(order)
            c = counts.get(str(rid).split(";")[0], {})
            ax.axvline(0.5, color="0.6", lw=0.8, ls=":")
            for y, lab in enumerate(order):
                r = gg.loc[lab]
                ax.plot(r["paper"], y, "D", color="black", ms=4.5, mfc="none", zorder=3)
                if lab != "mean" and lab in c and too_few(*c[lab]):
                    ax.text(lo + 0.01, y, "too few", va="center", fontsize=7, color="0.45", style="italic")
                    continue
                if pd.notna(r["ours_ci_lo"]):
                    ax.plot([r["ours_ci_lo"], r["ours_ci_hi"]], [y, y], color=ours_color, lw=1.5)
                ax.plot(r["ours"], y, "o", color=ours_color, ms=5 if lab != "mean" else 7, zorder=4)
            ax.set_yticks(range(len(order)))
            ax.set_yticklabels([_nice(lab) for lab in order] if col == 0 else [], fontsize=8)
            ax.set_ylim(len(order) - 0.5, -0.5)
            ax.set_xlim(lo, 1.02)
            name = names.get(str(rid).split(";")[0], str(rid))
            name = configuration_name(name) if ";" in str(rid) else name
            ax.set_title(f"{name}\nvs {setting}", fontsize=8.5)
            ax.set_xlabel("test ROC AUC", fontsize=8)
        axes[row, 0].set_ylabel(label_set, fontsize=9)
    handles = [Line2D([], [], marker="o", color="0.3", lw=1.5, label="ours (95% CI), backbone's colour"),
               Line2D([], [], marker="D", color="black", mfc="none", lw=0, label="paper"),
               Line2D([], [], color="0.6", ls=":", label="chance (0.5)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------- ablations


def forest_plot(table: pd.DataFrame, few: Iterable[tuple[str, str, str, str]] = ()) -> Figure:
    """Paired ablations as a forest plot: Δ AUC (variant - baseline) with 95% CI per label and the mean,
    one panel per pair. A filled marker is a difference the library calls ``better``/``worse`` (its
    verdict, from Holm-adjusted p) or, without verdicts, p < 0.05. Rows in ``few`` ((factor, value_a,
    value_b, label), too few test cases) are marked 'too few' instead of drawn."""
    few = set(few)
    if table.empty:
        return _empty("no paired ablations in this run store")
    pcol = next((c for c in ("p_bootstrap_holm", "p_holm", "p_bootstrap", "p") if c in table.columns), None)
    pairs = list(table.groupby(["factor", "value_a", "value_b"], sort=False))
    order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(table["label"])]
    ncols = min(3, len(pairs))  # wider rows would shrink the labels below legibility on a page
    nrows = math.ceil(len(pairs) / ncols)
    fig = _figure(figsize=(3.8 * ncols + 1.4, (0.3 * len(order) + 1.2) * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    ypos = {lab: i for i, lab in enumerate(order)}
    base, mean_c = "0.35", "black"  # pairs, not backbones: no backbone's colour
    for ax, ((factor, va, vb), g) in zip(axes.flat, pairs):
        ax.axvline(0, color="0.4", lw=1)
        g = g[g["label"].isin(ypos)]
        key = (str(factor), str(va), str(vb))
        skip = g["label"].map(lambda lab, key=key: (*key, lab) in few)
        for _, r in g[skip].iterrows():
            ax.text(0, ypos[r["label"]], "too few", ha="center", va="center", fontsize=7, color="0.45",
                    style="italic")
        for _, r in g[~skip].iterrows():
            y = ypos[r["label"]]
            if "verdict" in g.columns:
                sig = str(r["verdict"]) in ("better", "worse")
            else:
                sig = pcol is not None and pd.notna(r[pcol]) and r[pcol] < 0.05
            color = mean_c if r["label"] == "mean" else base
            if pd.notna(r["ci_lo"]):
                ax.plot([r["ci_lo"], r["ci_hi"]], [y, y], color=color, lw=1.6)
            ax.plot(r["delta"], y, "D" if r["label"] == "mean" else "o", ms=6, color=color,
                    mfc=color if sig else "white", mew=1.4)
        ax.set_title(f"{str(factor).split('.')[-1]}: {vb} vs {va}", fontsize=9)
        ax.set_xlabel("Δ AUC (variant - baseline)")
        shown = g[~skip][["ci_lo", "ci_hi", "delta"]].to_numpy(dtype=float)
        lim = float(np.nanmax(np.abs(shown))) * 1.1 if np.isfinite(shown).any() else math.nan
        lim = lim if math.isfinite(lim) and lim > 0 else 0.05
        ax.set_xlim(-lim, lim)
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([_nice(o) for o in order])
    axes[0, 0].set_ylim(len(order) - 0.5, -0.5)
    which = ("verdict better/worse (Holm-adjusted p < 0.05)" if "verdict" in table.columns
             else f"{pcol} < 0.05, not adjusted" if pcol else "p < 0.05")
    handles = [Line2D([], [], marker="o", color=base, mfc=base, lw=0, label=which),
               Line2D([], [], marker="o", color=base, mfc="white", lw=0, label="no evidence"),
               Line2D([], [], marker="D", color=mean_c, lw=1.6, label="mean AUC (bar: 95% CI)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    return fig


def _rejects(table: pd.DataFrame) -> np.ndarray:
    """Rows whose adjusted test rejects: the library's verdict ``better``/``worse`` (Holm-adjusted p)."""
    if "verdict" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table["verdict"].astype(str).isin(("better", "worse")).to_numpy()


def ablation_heatmap(table: pd.DataFrame, few: Iterable[tuple[str, str, str, str]] = ()) -> Figure:
    """Which labels does each factor change? Rows = ablation pairs, columns = labels and the mean, cell =
    Δ AUC (variant - baseline). Colour (a diverging scale centred on zero, as wide as the largest
    difference, so -0.035 and -0.139 look different) only where the Holm-adjusted test rejects (verdict
    better/worse); other cells print their Δ in grey on white, and cells with too few test cases say so."""
    from matplotlib.colors import TwoSlopeNorm

    if table.empty:
        return _empty("no paired ablations in this run store")
    few = set(few)
    pairs = list(table.groupby(["factor", "value_a", "value_b"], sort=False))
    order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(table["label"])]
    delta = np.full((len(pairs), len(order)), np.nan)
    sig = np.zeros_like(delta, dtype=bool)
    is_few = np.zeros_like(delta, dtype=bool)
    for i, ((factor, va, vb), g) in enumerate(pairs):
        g = g.drop_duplicates("label").set_index("label")
        rej = pd.Series(_rejects(g), index=g.index)
        for j, lab in enumerate(order):
            if lab not in g.index:
                continue
            delta[i, j] = num(g.at[lab, "delta"])
            sig[i, j] = bool(rej[lab])
            is_few[i, j] = (str(factor), str(va), str(vb), lab) in few
    lim = float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 0.05
    lim = lim if lim > 0 else 0.05
    shown = np.where(sig & ~is_few, delta, np.nan)
    fig = _figure(figsize=(0.62 * len(order) + 3.6, 0.42 * len(pairs) + 1.9))
    ax = fig.subplots()
    cmap = plt.get_cmap(DELTA_CMAP).with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto")
    for i in range(len(pairs)):
        for j in range(len(order)):
            if is_few[i, j]:
                ax.text(j, i, "few", ha="center", va="center", fontsize=6.5, color="0.5", style="italic")
            elif np.isfinite(delta[i, j]):
                strong = sig[i, j]
                dark = strong and abs(delta[i, j]) > 0.6 * lim
                ax.text(j, i, f"{delta[i, j]:+.3f}".replace("0.", "."), ha="center", va="center", fontsize=6.5,
                        color=("white" if dark else "black") if strong else "0.55",
                        fontweight="bold" if strong else "normal")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([_nice(lab) for lab in order], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels([f"{str(f).split('.')[-1]}: {vb} vs {va}" for (f, va, vb), _ in pairs], fontsize=8)
    ax.set_xticks(np.arange(-0.5, len(order)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(pairs)), minor=True)
    ax.grid(which="minor", color="0.85", lw=0.5)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(im, ax=ax, shrink=0.9)
    bar.set_label("Δ AUC where the Holm-adjusted test rejects", fontsize=8)
    ax.set_title("Δ AUC (variant - baseline) per label; coloured and bold: Holm-adjusted test rejects; "
                 "grey: no evidence", fontsize=8.5, loc="left")
    return fig


# ------------------------------------------------------------------------------------- leaderboard


def mean_auc_plot(lb: pd.DataFrame, names: Mapping[str, str] | None = None) -> Figure:
    """Mean test AUC of every run with its 95% patient-bootstrap CI, in its backbone's colour, ranked within
    each label set (one panel per label set: a mean over 8 labels is not a mean over 14). Runs at chance
    (:func:`~.formatting.at_chance`) come last, unranked, below a line."""
    if lb.empty:
        return _empty("no completed runs")
    names = dict(names or {})
    groups = []
    for ls, g in lb.groupby("label_set", sort=True):
        g = g.sort_values("mean_auc", ascending=False, kind="mergesort")
        chance = np.array([at_chance(m, lo) for m, lo in zip(g["mean_auc"], g["mean_auc_ci_lo"])], dtype=bool)
        groups.append((ls, pd.concat([g[~chance], g[chance]]), int((~chance).sum())))
    fig = _figure(figsize=(8.5, 0.7 * len(groups) + 0.22 * len(lb) + 0.9))
    axes = fig.subplots(len(groups), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [0.6 + 0.22 * len(g) for _, g, _ in groups]})[:, 0]
    for ax, (label_set, g, n_ranked) in zip(axes, groups):
        for y, (_, r) in enumerate(g.iterrows()):
            color = backbone_colour(r.get("backbone"))
            if pd.notna(r["mean_auc_ci_lo"]):
                ax.plot([r["mean_auc_ci_lo"], r["mean_auc_ci_hi"]], [y, y], color=color, lw=2)
            ax.plot(r["mean_auc"], y, "o", color=color, ms=5, mfc=color if y < n_ranked else "white")
        ax.axvline(0.5, color="0.5", ls=":", lw=1)
        if 0 < n_ranked < len(g):
            ax.axhline(n_ranked - 0.5, color="0.3", lw=0.8)
        ax.set_yticks(range(len(g)))
        ax.set_yticklabels([f"{i + 1}. {names.get(rid, rid)}" if i < n_ranked else
                            f"at chance: {names.get(rid, rid)}" for i, rid in enumerate(g["run_id"])],
                           fontsize=7.5)
        ax.set_ylim(len(g) - 0.5, -0.5)
        ax.set_title(f"{label_set}: {n_ranked} ranked, {len(g) - n_ranked} at chance (CI reaches 0.5; "
                     "not ranked)", fontsize=9, loc="left")
    handles = [Line2D([], [], marker="o", color=backbone_colour(b), lw=2, label=str(b))
               for b in dict.fromkeys(lb["backbone"] if "backbone" in lb else [])]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="backbone", title_fontsize=8)
    axes[-1].set_xlabel("mean test ROC AUC (95% patient-bootstrap CI); dotted: chance")
    return fig


def expert_plot(df: pd.DataFrame, labels: Mapping[str, str] | None = None) -> Figure:
    """Per run and expert target: AUC vs NIH labels and vs radiologist labels, joined by a line. Rows with
    too few cases under either label source are left out (the table says 'too few')."""
    if df.empty:
        return _empty("no image covered by the expert labels")
    ok = [not (too_few(ep, n - ep) or too_few(npos, n - npos))
          for ep, npos, n in zip(df["expert_pos"], df["nih_pos"], df["n"].astype(float))]
    df = df[ok]
    if df.empty:
        return _empty(f"too few expert-labelled test images for an AUC (fewer than {MIN_CASES} positives or "
                      "negatives)")
    labels = dict(labels or {})
    targets = list(dict.fromkeys(df["target"]))
    runs = list(dict.fromkeys(df["run_id"]))
    fig = _figure(figsize=(3.4 * len(targets) + 2.4, 1.2 + 0.35 * len(runs)))
    axes = fig.subplots(1, len(targets), squeeze=False, sharey=True)
    pal = ["black", "0.45"]  # label sources, not backbones: no backbone's colour
    for ax, t in zip(axes[0], targets):
        g = df[df["target"] == t].set_index("run_id")
        for y, rid in enumerate(runs):
            if rid not in g.index:
                continue
            r = g.loc[rid]
            ax.plot([r["nih_auc"], r["expert_auc"]], [y, y], color="0.7", lw=1.2, zorder=0)
            ax.plot(r["nih_auc"], y, "o", color=pal[0])
            ax.plot(r["expert_auc"], y, "s", color=pal[1], mfc="white")
        ax.set_title(f"{t.replace('_', ' ')} (n={int(g['n'].max())})", fontsize=9)
        ax.set_xlabel("test ROC AUC")
        ax.set_xlim(0, 1.02)
    axes[0, 0].set_yticks(range(len(runs)))
    axes[0, 0].set_yticklabels([labels.get(r, r) for r in runs], fontsize=8)
    axes[0, 0].invert_yaxis()
    handles = [Line2D([], [], marker="o", color=pal[0], lw=0, label="vs NIH labels"),
               Line2D([], [], marker="s", color=pal[1], mfc="white", lw=0, label="vs radiologists")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


def _configuration(rec: RunRecord) -> str:
    """The seed-free configuration a run belongs to (the runner records it in the manifest)."""
    suite = rec.manifest.get("suite")
    if isinstance(suite, dict) and suite.get("configuration"):
        return str(suite["configuration"])
    from ..runner.suite import configuration_id

    return configuration_id(rec.config)


def _block(rec: RunRecord) -> str:
    suite = rec.manifest.get("suite")
    blocks = suite.get("blocks") if isinstance(suite, dict) else None
    return "+".join(str(b) for b in blocks) if isinstance(blocks, list) and blocks else "runs"


def history_plot(runs: Sequence[RunRecord]) -> Figure:
    """Validation mean AUC per epoch (history.csv), one panel per suite block, one line per configuration
    in its backbone's colour: the mean over its seeds, with a band from the lowest to the highest seed.
    Configurations of one backbone in a panel differ in line style; the panel's legend names them."""
    curves: dict[str, dict[str, list[pd.DataFrame]]] = {}
    first: dict[str, RunRecord] = {}
    for r in runs:
        try:
            h = r.history()
        except RunStoreError:  # a run without history is simply not drawn
            continue
        if "val_mean_auc" not in h or not len(h):
            continue
        key = _configuration(r)
        first.setdefault(key, r)
        curves.setdefault(_block(r), {}).setdefault(key, []).append(h[["epoch", "val_mean_auc"]])
    if not curves:
        return _empty("no training history")
    # Named among the configurations drawn (label set included where it differs), not per label set.
    all_names = short_names(list(first.values()))
    blocks = sorted(curves)
    ncols = 2 if len(blocks) > 1 else 1
    nrows = math.ceil(len(blocks) / ncols)
    # Each panel's legend goes below it (two columns), never over the curves: rows grow with the longest.
    legend_rows = max(math.ceil(len(curves[b]) / 2) for b in blocks)
    fig = _figure(figsize=(6.2 * ncols + 0.4, (3.0 + 0.17 * legend_rows) * nrows + 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    styles = ("-", "--", ":", "-.")
    for ax, block in zip(axes.flat, blocks):
        used: dict[str, int] = {}
        for key, hs in curves[block].items():
            rec = first[key]
            backbone = rec.cfg("model.backbone")
            ls = styles[used.get(str(backbone), 0) % len(styles)]
            used[str(backbone)] = used.get(str(backbone), 0) + 1
            wide = pd.concat([h.groupby("epoch")["val_mean_auc"].mean() for h in hs], axis=1)
            color = backbone_colour(backbone)
            name = all_names.get(rec.run_id, rec.run_id)
            name = configuration_name(name) + (f" ({len(hs)} seeds)" if len(hs) > 1 else "")
            ax.plot(wide.index, wide.mean(axis=1), ls, color=color, lw=1.5, label=name)
            if len(hs) > 1:
                ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=color, alpha=0.15, lw=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("val mean AUC")
        ax.set_xlabel("epoch")
        ax.set_title(f"block: {block}", fontsize=9, loc="left")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7, frameon=False,
                  borderaxespad=0.0)
    for ax in list(axes.flat)[len(blocks):]:
        ax.axis("off")
    fig.suptitle("Validation mean AUC per epoch: line = mean over seeds, band = lowest to highest seed",
                 fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------- subgroups

_MARKERS = ("o", "s", "^", "D", "v", "P")
SUBGROUP_COLUMNS = ("attribute", "group", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg", "reason")


def subgroup_plot(df: pd.DataFrame, title: str = "") -> Figure:
    """Per-label AUC in each subgroup (``subgroup_table`` of cxr_bench.metrics, for one run): one panel per
    attribute (sex, age band, view), labels down the side, one marker and 95% CI bar per group. A group
    with too few cases for a label is not drawn (the table gives the reason)."""
    missing = [c for c in SUBGROUP_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"subgroup table lacks columns {missing}")
    if df.empty:
        return _empty("no subgroup results")
    attrs = list(dict.fromkeys(df["attribute"]))
    labels = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(df["label"])]
    labels += [lab for lab in dict.fromkeys(df["label"]) if lab not in labels]
    fig = _figure(figsize=(3.3 * len(attrs) + 0.8, 0.3 * len(labels) + 1.6))
    axes = fig.subplots(1, len(attrs), squeeze=False, sharey=True)[0]
    for ax, attr in zip(axes, attrs):
        g = df[df["attribute"] == attr]
        groups = list(dict.fromkeys(g["group"]))
        # Groups, not backbones: shades of grey told apart by marker, so no backbone's colour is reused.
        colors = list(sns.color_palette("Greys", len(groups) + 2))[2:]
        offsets = np.linspace(-0.25, 0.25, len(groups)) if len(groups) > 1 else np.zeros(1)
        for k, (color, off, grp) in enumerate(zip(colors, offsets, groups)):
            gg = g[g["group"] == grp].set_index("label")
            ys, xs, lo, hi = [], [], [], []
            for y, lab in enumerate(labels):
                if lab not in gg.index:
                    continue
                r = gg.loc[lab]
                auc = float(r["auc"]) if pd.notna(r["auc"]) else math.nan
                if not math.isfinite(auc) or too_few(r["n_pos"], r["n_neg"]):
                    continue
                ys.append(y + off)
                xs.append(auc)
                lo.append(float(r["ci_low"]) if pd.notna(r["ci_low"]) else auc)
                hi.append(float(r["ci_high"]) if pd.notna(r["ci_high"]) else auc)
            if xs:
                ax.errorbar(xs, ys, xerr=[np.subtract(xs, lo), np.subtract(hi, xs)], fmt=_MARKERS[k % len(_MARKERS)], ms=4,
                            color=color, elinewidth=1, capsize=0, label=str(grp))
            else:
                ax.plot([], [], _MARKERS[k % len(_MARKERS)], color=color, label=f"{grp} (too few)")
        ax.axvline(0.5, color="0.6", ls=":", lw=0.8)
        ax.set_title(str(attr), fontsize=9)
        ax.set_xlabel("test ROC AUC (95% CI)")
        ax.set_xlim(0, 1.0)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(len(labels), 1)), fontsize=7.5,
                  ncol=min(3, len(groups)), borderaxespad=0)
    axes[0].set_yticks(range(len(labels)))
    axes[0].set_yticklabels([_nice(lab) for lab in labels], fontsize=8)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


UNDERDIAGNOSIS_COLUMNS = ("attribute", "group", "rate", "ci_low", "ci_high", "n_finding", "reason")


def underdiagnosis_plot(df: pd.DataFrame, names: Mapping[str, str] | None = None) -> Figure:
    """Underdiagnosis rate by subgroup (images with a finding called normal at the validation-chosen
    thresholds; Seyyed-Kalantari et al. 2021): one panel per attribute, one row per group, one colour per
    run (``run_id`` column), with its 95% CI. Groups without a rate or with fewer than MIN_CASES images
    with a finding are left out, and so is the all-images row."""
    missing = [c for c in (*UNDERDIAGNOSIS_COLUMNS, "run_id") if c not in df.columns]
    if missing:
        raise ValueError(f"underdiagnosis table lacks columns {missing}")
    keep = pd.to_numeric(df["rate"], errors="coerce").notna() & (pd.to_numeric(df["n_finding"]) >= MIN_CASES)
    df = df[keep & (df["attribute"] != "all")]
    if df.empty:
        return _empty("no subgroup with enough images with a finding for an underdiagnosis rate")
    names = dict(names or {})
    attrs = list(dict.fromkeys(df["attribute"]))
    runs = list(dict.fromkeys(df["run_id"]))
    backbones = (df.drop_duplicates("run_id").set_index("run_id")["backbone"] if "backbone" in df.columns
                 else pd.Series(dtype=object))
    colors = {r: (backbone_colour(backbones[r]) if r in backbones.index else c)
              for r, c in zip(runs, palette(len(runs)))}
    n_groups = max(df[df["attribute"] == a]["group"].nunique() for a in attrs)
    fig = _figure(figsize=(3.0 * len(attrs) + 2.8, 0.3 * n_groups + 0.12 * n_groups * len(runs) + 1.4))
    axes = fig.subplots(1, len(attrs), squeeze=False)[0]
    offsets = np.linspace(-0.25, 0.25, len(runs)) if len(runs) > 1 else np.zeros(1)
    top = pd.to_numeric(df["ci_high"], errors="coerce").fillna(pd.to_numeric(df["rate"])).max()
    right = min(1.02, float(top) * 1.25 + 0.02)  # rates are often small: use the width for them
    for ax, attr in zip(axes, attrs):
        g = df[df["attribute"] == attr]
        groups = list(dict.fromkeys(g["group"]))
        for off, rid in zip(offsets, runs):
            gg = g[g["run_id"] == rid].drop_duplicates("group").set_index("group")
            present = [grp for grp in groups if grp in gg.index]
            if not present:
                continue
            ys = [groups.index(grp) + off for grp in present]
            xs = gg.loc[present, "rate"].astype(float).to_numpy()
            lo = gg.loc[present, "ci_low"].astype(float).fillna(pd.Series(xs, index=present)).to_numpy()
            hi = gg.loc[present, "ci_high"].astype(float).fillna(pd.Series(xs, index=present)).to_numpy()
            ax.errorbar(xs, ys, xerr=[np.maximum(xs - lo, 0), np.maximum(hi - xs, 0)], fmt="o", ms=4,
                        color=colors[rid], elinewidth=1, capsize=0)
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels([str(x) for x in groups], fontsize=8)
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xlim(-0.01, right)
        ax.set_title(str(attr), fontsize=9)
        ax.set_xlabel("underdiagnosis rate (95% CI)")
    handles = [Line2D([], [], marker="o", color=colors[r], lw=1, label=names.get(r, r)) for r in runs]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="run", title_fontsize=8)
    return fig


# -------------------------------------------------------------------------------------- calibration

CALIBRATION_COLUMNS = ("label", "brier", "ece", "bin", "bin_lo", "bin_hi", "n", "mean_score", "frac_pos")


def pooled_reliability(cal: pd.DataFrame) -> pd.DataFrame:
    """Reliability bins pooled over labels: per bin, the image-label pairs' count, mean score and observed
    fraction positive (count-weighted means of the per-label bins, i.e. the micro-average)."""
    missing = [c for c in CALIBRATION_COLUMNS if c not in cal.columns]
    if missing:
        raise ValueError(f"calibration table lacks columns {missing}")
    d = cal[pd.to_numeric(cal["n"], errors="coerce") > 0].copy()
    d["n"] = d["n"].astype(float)
    d["s"] = d["mean_score"].astype(float) * d["n"]
    d["f"] = d["frac_pos"].astype(float) * d["n"]
    g = d.groupby(["bin", "bin_lo", "bin_hi"], as_index=False)[["n", "s", "f"]].sum()
    return pd.DataFrame({"bin": g["bin"], "bin_lo": g["bin_lo"], "bin_hi": g["bin_hi"], "n": g["n"],
                         "mean_score": g["s"] / g["n"], "frac_pos": g["f"] / g["n"]})


def reliability_diagram(tables: Mapping[str, pd.DataFrame], ncols: int = 4) -> Figure:
    """Reliability diagram per run (``name -> calibration_table``): the observed fraction of positives
    against the mean predicted score in each score bin, pooled over labels (:func:`pooled_reliability`),
    marker area proportional to the bin's count; on the diagonal a score is a probability. The panel title
    gives the mean Brier score and ECE over labels."""
    tables = {k: v for k, v in tables.items() if v is not None and not v.empty}
    if not tables:
        return _empty("no calibration results")
    n = len(tables)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(figsize=(2.9 * ncols + 0.4, 3.0 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    color = "0.2"  # one panel per run, named in its title
    for ax, (name, cal) in zip(axes.flat, tables.items()):
        pooled = pooled_reliability(cal)
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
        ax.plot(pooled["mean_score"], pooled["frac_pos"], "-", color=color, lw=1.2)
        sizes = 200 * pooled["n"] / max(float(pooled["n"].max()), 1.0)
        ax.scatter(pooled["mean_score"], pooled["frac_pos"], s=np.maximum(sizes, 6), color=color, zorder=3)
        per = cal.drop_duplicates("label")
        ax.set_title(f"{name}\nBrier {per['brier'].astype(float).mean():.3f}, "
                     f"ECE {per['ece'].astype(float).mean():.3f}", fontsize=8.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("mean predicted score")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction positive")
    return fig
