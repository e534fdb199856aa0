"""The report's "accuracy against cost" section: the figure and the two tables of results/accuracy_cost.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from pandas.io.formats.style import Styler

from .formatting import fmt as _fmt
from .formatting import fmt_ci as _ci
from .formatting import fmt_p
from .styles import styled

__all__ = ["accuracy_cost_plot", "accuracy_cost_view", "cost_note", "versus_view"]

# One colour per backbone (as in every figure), one marker per head: a configuration is backbone/head.
HEAD_MARKERS = {"gap": "o", "wang2017": "s", "attention": "^", "simple": "v"}
COST_AXES = (("gmacs", "GMACs per image (log scale)", "pareto_gmacs"),
             ("cpu_latency_ms", "measured CPU batch-1 latency, ms (log scale)", "pareto_latency"))


def _colours(names: Sequence[str]) -> dict[str, Any]:
    from .styles import backbone_colour

    return {n: backbone_colour(n) for n in set(names)}


def accuracy_cost_plot(acc: pd.DataFrame) -> Figure:
    """Mean test AUC (seed-aware interval) against GMACs and against measured CPU latency, one point per
    configuration, one row of panels per label set; the Pareto frontier joined by a line; the paper's
    mean AUC for the same backbone as an open diamond at the same cost."""
    if acc.empty:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no completed run on real data", ha="center", va="center")
        return fig
    label_sets = sorted(acc["label_set"].astype(str).unique())
    colours = _colours(acc["backbone"].astype(str).tolist())
    fig = plt.figure(layout="constrained", figsize=(11, 3.6 * len(label_sets) + 0.6))
    axes = fig.subplots(len(label_sets), 2, squeeze=False)
    for row, ls in zip(axes, label_sets):
        g = acc[acc["label_set"].astype(str) == ls]
        for ax, (col, xlabel, front) in zip(row, COST_AXES):
            x = pd.to_numeric(g[col], errors="coerce")
            ok = x > 0
            if not ok.any():
                ax.text(0.5, 0.5, f"{col}: not measured", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            for (_, r), xi in zip(g[ok].iterrows(), x[ok]):
                c = colours[str(r["backbone"])]
                lo, hi = r["ci_lo"], r["ci_hi"]
                if pd.notna(lo) and pd.notna(hi):
                    ax.plot([xi, xi], [lo, hi], color=c, lw=1.5)
                ax.plot(xi, r["mean_auc"], HEAD_MARKERS.get(str(r["head"]), "P"), color=c, ms=7, ls="",
                        label=str(r["config"]))
                if pd.notna(r["paper_mean_auc"]):
                    ax.plot(xi, r["paper_mean_auc"], "D", mfc="none", mec=c, ms=7)
            f = g[ok & g[front].astype(bool)].assign(_x=x[ok]).sort_values("_x")
            if len(f) > 1:
                ax.plot(f["_x"], f["mean_auc"], "-", color="0.3", lw=1, zorder=0)
            ax.set_xscale("log")
            # Plain numbers: the report's style turns mathtext off, so the default 10^k labels would print raw.
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel("mean test ROC AUC")
            ax.set_title(f"{ls}: AUC against {'GMACs' if col == 'gmacs' else 'CPU latency'}", loc="left", fontsize=9)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="0.3", lw=1), Line2D([], [], marker="D", ls="", mfc="none", mec="0.3")]
    labels += ["Pareto frontier", "paper (Wang et al. 2017)"]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    return fig


def accuracy_cost_view(acc: pd.DataFrame) -> Styler:
    """The table behind the figure."""
    rows = [{
        "label set": r["label_set"], "configuration": r["config"], "size": r["image_size"], "seeds": r["n_seeds"],
        "mean AUC [CI]": f"{_fmt(r['mean_auc'], 3)} {_ci(r['ci_lo'], r['ci_hi'])}", "interval": r["interval"],
        "params (M)": _fmt(r["param_count"] / 1e6, 2) if pd.notna(r["param_count"]) else "",
        "GMACs": _fmt(r["gmacs"], 3), "CPU ms": _fmt(r["cpu_latency_ms"], 1),
        "ONNX Runtime ms": _fmt(r["onnx_cpu_latency_ms"], 1),
        "Pareto (GMACs / latency)": f"{'yes' if r['pareto_gmacs'] else 'no'} / {'yes' if r['pareto_latency'] else 'no'}",
        "paper": _fmt(r["paper_mean_auc"], 3),
    } for _, r in acc.iterrows()]
    return styled(pd.DataFrame(rows), "mean test AUC over seeds against cost, one row per configuration",
                  hide_index=True)


def _ratio(v: Any) -> str:
    f = float(v) if v is not None and pd.notna(v) else math.nan
    return f"{f:.2f}x" if np.isfinite(f) else ""


def versus_view(vs: pd.DataFrame) -> Styler:
    """MobileNetV1 against each baseline: paired AUC difference [CI] beside the cost ratios."""
    rows = [{
        "block": r["block"], "label set": r["label_set"], "baseline": r["baseline"],
        "seeds (base / MobileNet)": f"{r['seeds_baseline']} / {r['seeds_mobilenet']}",
        "AUC base": _fmt(r["auc_baseline"], 3), "AUC MobileNet": _fmt(r["auc_mobilenet"], 3),
        "difference [CI]": f"{_fmt(r['delta'], 3)} {_ci(r['ci_lo'], r['ci_hi'])}", "p": fmt_p(r["p_bootstrap"]),
        "verdict": r["verdict"], "params": _ratio(r["params_ratio"]), "GMACs": _ratio(r["gmacs_ratio"]),
        "CPU latency": _ratio(r["cpu_latency_ratio"]), "also differs": r["also_differs"],
    } for _, r in vs.iterrows()]
    return styled(pd.DataFrame(rows), "MobileNetV1 minus each baseline (paired on the same test images, "
                  "patients as clusters); cost ratios are MobileNet / baseline", hide_index=True)


def cost_note(acc: pd.DataFrame) -> str:
    """Where the latencies were measured, as one escaped sentence."""
    from .escape import message

    if acc.empty or not pd.to_numeric(acc["cpu_latency_ms"], errors="coerce").notna().any():
        return message("No run measured its inference cost (eval.cost_repeats = 0, or runs made before it "
                       "existed): only GMACs are shown.")
    return message("Latency: median of timed batch-1 forward passes on the machine that evaluated each run "
                   "(its CPU model and thread count are in the run's cost.json); GMACs count multiply-adds "
                   "and do not depend on the machine. A point on the Pareto frontier has no other "
                   "configuration of its label set that is at least as accurate and at most as costly.")

