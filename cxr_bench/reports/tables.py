"""Tables for the report notebooks (and the CLI's readable output), built from saved artifacts only.

Each function takes the objects of :mod:`cxr_bench.results` and returns a pandas ``Styler`` or DataFrame
ready to display: labels as rows in the paper's order, AUCs with three decimals, CIs as ``[lo, hi]``.
The notebooks call these and nothing else, so a report is as testable as the library.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from ..data.labels import CHESTXRAY14
from ..results.compare import ablation_table, compare_reference, pair_summary
from ..results.expert import expert_table
from ..results.leaderboard import Leaderboard, build_leaderboard
from ..results.runs import RunRecord, load_runs

CMAP = "RdYlGn"  # AUC colour scale (low red, high green), shared by tables and heatmaps
DELTA_CMAP = "RdBu"


def run_label(row: dict[str, Any] | pd.Series | RunRecord) -> str:
    """A short human name for a run: the factors that usually differ inside a suite."""
    if isinstance(row, RunRecord):
        get = row.cfg
        parts = [get("model.backbone"), get("model.head"), get("data.label_set"), get("data.grayscale"),
                 get("data.channels")]
        seed = get("seed")
    else:
        parts = [row.get("backbone"), row.get("head"), row.get("label_set"), row.get("grayscale"),
                 row.get("channels")]
        seed = row.get("seed")
    name = " / ".join(str(p) for p in parts if p not in (None, ""))
    return f"{name} (seed {seed})" if seed not in (None, 0, "0") else name


def _fmt(v: Any, nd: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return "" if math.isnan(f) else f"{f:.{nd}f}"


def _ci(lo: Any, hi: Any, nd: int = 3) -> str:
    a, b = _fmt(lo, nd), _fmt(hi, nd)
    return f"[{a},\u00a0{b}]" if a and b else ""


@dataclass
class ReportContext:
    """Everything a report reads, loaded once: the runs of a store (optionally one suite) and the
    leaderboard built from them."""

    runs_dir: Path
    suite: str | None
    runs: list[RunRecord]
    leaderboard: Leaderboard

    @classmethod
    def load(cls, runs_dir: str | Path, suite: str | None = None) -> ReportContext:
        suite = suite or None
        runs = load_runs(runs_dir, suite)
        return cls(Path(runs_dir), suite, runs, build_leaderboard(runs_dir, suite))

    @property
    def table(self) -> pd.DataFrame:
        return self.leaderboard.table

    @property
    def sample_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.is_bundled_sample]

    def banner_html(self) -> str:
        """A loud warning when runs trained on the bundled sample; a one-line scope note otherwise."""
        scope = (f"Run store <code>{html.escape(str(self.runs_dir))}</code>"
                 + (f", suite <b>{html.escape(self.suite)}</b>" if self.suite else ", all suites")
                 + f": {len(self.runs)} completed run(s), {len(self.leaderboard.failed)} not completed.")
        sample = self.sample_runs
        if not sample:
            return f"<p>{scope}</p>"
        profiles = sorted({str(r.manifest.get('suite', {}).get('profile') or 'sample') for r in sample
                           if isinstance(r.manifest.get('suite', {}), dict)})
        return (
            '<div style="border:3px solid #b00020;background:#fdecea;padding:12px 16px;margin:8px 0;'
            'font-size:1.1em">'
            f"<b>&#9888; NOT COMPARABLE WITH THE PAPERS.</b> {len(sample)} of {len(self.runs)} run(s) were "
            "trained and tested on the <b>bundled sample</b> (1,673 NIH images at 256 px, profile "
            f"{html.escape(', '.join(profiles))}): a smoke test of the pipeline. Their AUCs, intervals and "
            "p-values describe a few hundred test images and say nothing about the published results. Run "
            "the suite with <code>--data-root</code> on the full NIH release for a replication.</div>"
            f"<p>{scope}</p>"
        )


# ----------------------------------------------------------------------------------------- leaderboard


def auc_table(lb: pd.DataFrame) -> Styler:
    """Per-label test AUC (rows: labels in the paper's order; columns: runs) with the mean on top."""
    cols = {}
    for _, row in lb.iterrows():
        values = [row.get("mean_auc")] + [row.get(f"auc_{lab}") for lab in CHESTXRAY14]
        cols[run_label(row)] = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
    df = pd.DataFrame(cols, index=["mean AUC", *CHESTXRAY14])
    df = df.dropna(how="all")
    return (df.style.format(precision=3, na_rep="")
            .background_gradient(cmap=CMAP, vmin=0.5, vmax=1.0, axis=None)
            .highlight_null(props="background-color: white")
            .set_caption("Test ROC AUC per label (empty: label not in the run's label set or no positive)"))


def leaderboard_view(lb: pd.DataFrame) -> Styler:
    """The readable columns of a leaderboard: what the run was, mean AUC with CI, cost."""
    rows = []
    for _, r in lb.iterrows():
        rows.append({
            "suite": r["suite"], "run": run_label(r), "run id": r["run_id"], "split": r["split"],
            "size": r["image_size"], "loss": r["loss"], "pretrained": r["pretrained"],
            "mean AUC": r["mean_auc"], "95% CI": _ci(r["mean_auc_ci_lo"], r["mean_auc_ci_hi"]),
            "params (M)": (r["param_count"] / 1e6) if pd.notna(r["param_count"]) else np.nan,
            "GMACs": r["gmacs"], "img/s": r["train_images_per_s"], "epochs": r["epochs"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df.style
    df = df.sort_values("mean AUC", ascending=False, kind="mergesort").reset_index(drop=True)
    df.index = df.index + 1
    return (df.style.format({"mean AUC": "{:.3f}", "params (M)": "{:.2f}", "GMACs": "{:.2f}",
                             "img/s": "{:.1f}"}, na_rep="")
            .bar(subset=["mean AUC"], color="#9ecae1", vmin=0.5, vmax=1.0)
            .set_caption("Completed runs, best mean test AUC first"))


def failed_view(lb: Leaderboard) -> pd.DataFrame:
    return lb.failed[["suite", "run_id", "status", "error"]]


# ----------------------------------------------------------------------------------------- replication


def reference_view(cmp: pd.DataFrame) -> Styler:
    """Ours beside the paper: rows = labels (then the mean), one column group per matched run."""
    if cmp.empty:
        return pd.DataFrame({"": ["no run of this store has a published counterpart"]}).style.hide(axis="index")
    blocks = []
    for (run_id, setting, source), g in cmp.groupby(["run_id", "setting", "source"], sort=False):
        head = f"{g['backbone'].iloc[0]} / {g['label_set'].iloc[0]} vs {setting}"
        g = g.set_index("label")
        blocks.append(pd.DataFrame({
            (head, "ours"): g["ours"].map(_fmt),
            (head, "95% CI"): [_ci(a, b) for a, b in zip(g["ours_ci_lo"], g["ours_ci_hi"])],
            (head, "paper"): g["paper"].map(lambda v: _fmt(v, 4)),
            (head, "Δ"): g["delta"].map(lambda v: f"{float(v):+.3f}" if pd.notna(v) else ""),
            (head, "paper in CI"): g["paper_in_ci"].map({True: "yes", False: "no"}).fillna(""),
        }))
    df = pd.concat(blocks, axis=1).fillna("")
    order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in df.index]
    return df.loc[order].style.set_caption("Per-label test ROC AUC: ours (95% patient-bootstrap CI) vs the paper")


def reference_sources(cmp: pd.DataFrame) -> pd.DataFrame:
    """One row per matched run: which table, and whether the protocols make the comparison fair."""
    if cmp.empty:
        return pd.DataFrame(columns=["run", "compared with", "comparable", "why"])
    g = cmp.drop_duplicates("run_id")
    return pd.DataFrame({
        "run": [f"{b} / {ls} ({rid})" for b, ls, rid in zip(g["backbone"], g["label_set"], g["run_id"])],
        "compared with": [f"{src}: {s}" for src, s in zip(g["source"], g["setting"])],
        "comparable": g["comparable"].map({True: "yes", False: "no"}).to_numpy(),
        "why": g["note"].to_numpy(),
    })


def replication_comparison(ctx: ReportContext, references: tuple[str, ...] = ("wang2017", "chexnet"),
                           ) -> pd.DataFrame:
    """:func:`~cxr_bench.results.compare.compare_reference` of the context's leaderboard, all references."""
    frames = [compare_reference(ctx.table, ref) for ref in references]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else compare_reference(ctx.table.iloc[:0])


# ----------------------------------------------------------------------------------------- ablations


def ablations(ctx: ReportContext, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    return ablation_table(ctx.runs, n_bootstrap=n_bootstrap, seed=seed)


def ablation_summary_view(table: pd.DataFrame) -> Styler:
    """One row per pair: variant - baseline mean AUC with CI and p, and labels with DeLong p < 0.05."""
    s = pair_summary(table)
    if s.empty:
        return pd.DataFrame({"": ["no paired ablations (runs differing in exactly one factor) in this store"]}
                            ).style.hide(axis="index")
    df = pd.DataFrame({
        "factor": s["factor"], "baseline": s["value_a"], "variant": s["value_b"],
        "mean AUC (baseline)": s["mean_a"], "mean AUC (variant)": s["mean_b"], "Δ": s["delta"],
        "95% CI of Δ": [_ci(a, b) for a, b in zip(s["ci_lo"], s["ci_hi"])], "p (bootstrap)": s["p"],
        "labels with DeLong p<0.05": s["labels_p_lt_0.05"],
    })
    return (df.style.format({"mean AUC (baseline)": "{:.3f}", "mean AUC (variant)": "{:.3f}", "Δ": "{:+.3f}",
                             "p (bootstrap)": "{:.3f}"}, na_rep="")
            .background_gradient(subset=["Δ"], cmap=DELTA_CMAP, vmin=-0.05, vmax=0.05)
            .hide(axis="index")
            .set_caption("Paired ablations: variant minus baseline on the same test images"))


def ablation_detail_view(table: pd.DataFrame) -> Styler:
    """Per-label differences of every pair (rows: labels; column groups: pairs)."""
    if table.empty:
        return pd.DataFrame().style
    blocks = []
    for (factor, va, vb), g in table.groupby(["factor", "value_a", "value_b"], sort=False):
        head = f"{factor}: {vb} vs {va}"
        g = g.set_index("label")
        blocks.append(pd.DataFrame({
            (head, "Δ AUC"): g["delta"].map(lambda v: f"{float(v):+.3f}" if pd.notna(v) else ""),
            (head, "95% CI"): [_ci(a, b) for a, b in zip(g["ci_lo"], g["ci_hi"])],
            (head, "p"): [(_fmt(p) + (" (boot)" if t == "bootstrap" else "")) for p, t in zip(g["p"], g["test"])],
        }))
    df = pd.concat(blocks, axis=1).fillna("")
    order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in df.index]
    return df.loc[order].style.set_caption("Per label: Δ AUC (paired patient-bootstrap CI), DeLong p")


# ----------------------------------------------------------------------------------------- expert labels


def expert_results(ctx: ReportContext) -> pd.DataFrame:
    """:func:`~cxr_bench.results.expert.expert_table` of the context's runs."""
    return expert_table(ctx.runs)


def run_labels(ctx: ReportContext) -> dict[str, str]:
    return {r.run_id: run_label(r) for r in ctx.runs}


def expert_view(ctx: ReportContext, df: pd.DataFrame | None = None) -> Styler:
    """AUC against radiologist labels beside AUC against NIH labels, same images and same scores."""
    df = expert_table(ctx.runs) if df is None else df
    if df.empty:
        return pd.DataFrame({"": ["no test image of these runs is covered by the Google 2019 expert labels"]}
                            ).style.hide(axis="index")
    view = pd.DataFrame({
        "run": df["run_id"].map(run_labels(ctx)),
        "target": df["target"].str.replace("_", " "), "score": df["scored_from"], "images": df["n"],
        "expert +": df["expert_pos"], "NIH +": df["nih_pos"], "AUC vs expert": df["expert_auc"],
        "AUC vs NIH": df["nih_auc"], "NIH - expert": df["nih_minus_expert"],
    })
    return (view.style.format({"AUC vs expert": "{:.3f}", "AUC vs NIH": "{:.3f}", "NIH - expert": "{:+.3f}"},
                              na_rep="n/a")
            .hide(axis="index")
            .set_caption("Same predictions, two label sources (Google 2019 radiologist labels vs NIH NLP labels)"))


# ----------------------------------------------------------------------------------------- plain text


def text_table(df: pd.DataFrame, decimals: int = 4, max_colwidth: int = 40) -> str:
    """A DataFrame as aligned text for the terminal (floats with ``decimals``, NaN empty)."""
    if df.empty:
        return "(no rows)"

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{decimals}f}"
        return str(v)[:max_colwidth]

    return df.to_string(index=False, formatters={c: fmt for c in df.columns})


# ------------------------------------------------------------------------------------ localization
def localized_runs(ctx: ReportContext) -> list[RunRecord]:
    """Runs with a ``localization.csv`` (written by ``cxr-bench localize`` or at the end of a sweep)."""
    return [r for r in ctx.runs if (r.run_dir / "localization.csv").is_file()]


def localization_summary(ctx: ReportContext) -> Styler | None:
    """Accuracy at each T(IoBB), averaged over the box labels, one row per localized run, under the same
    average of Wang et al.'s Table 4 (ResNet-50). None when no run was localized."""
    from ..localize import table4_comparison
    from ..results.references import wang2017_table4

    runs = localized_runs(ctx)
    if not runs:
        return None
    rows, scored = {}, set()
    for rec in sorted(runs, key=run_label):
        long = table4_comparison(pd.read_csv(rec.run_dir / "localization.csv"))
        long = long[long["n_gt"] > 0]
        scored |= set(long["label"])
        rows[run_label(rec)] = long.groupby("t_iobb")["accuracy"].mean()
    ref = wang2017_table4()
    # The paper's mean over the same labels ours are averaged over (those with boxes in the test images).
    ref = ref[[lab for lab in ref.columns if lab in scored]]
    rows["Wang et al. 2017, ResNet-50 (Table 4)"] = ref.mean(axis=1).set_axis(ref.index.astype(float).round(4))
    df = pd.DataFrame(rows).T
    df.columns = [f"T(IoBB)={t:g}" for t in df.columns]
    return (df.style.format(precision=3, na_rep="")
            .background_gradient(cmap=CMAP, vmin=0.0, vmax=1.0, axis=None)
            .set_caption("Localization accuracy (a ground-truth box is hit when IoBB > T), mean over the box "
                         "labels that have boxes in the test images"))


def localization_detail(ctx: ReportContext) -> tuple[str, Styler, Path | None] | None:
    """The per-label table beside Table 4 for the run closest to the paper's (ResNet-50, 8 labels, Wang
    head; else the first localized run), with its heatmap figure if there is one."""
    from ..localize import localization_report_table

    runs = localized_runs(ctx)
    if not runs:
        return None

    def closeness(rec: RunRecord) -> tuple[int, int, int]:
        return (rec.cfg("model.backbone") != "resnet50", rec.cfg("data.label_set") != "chestxray8",
                rec.cfg("model.head") != "wang2017")

    rec = min(runs, key=closeness)
    table = localization_report_table(rec.run_dir, wide=True)
    table.index = pd.Index([f"{t:g}" for t in table.index], name="T(IoBB)")
    styled = (table.style.format(precision=3, na_rep="")
              .set_caption("Accuracy at T(IoBB) per label; '(paper)': Wang et al. 2017 Table 4, ResNet-50"))
    fig = rec.run_dir / "figures" / "localization.png"
    return run_label(rec), styled, fig if fig.is_file() else None
