"""Tables for the report notebooks (and the CLI's readable output), built from saved artifacts only.

Each function takes a :class:`~.context.ReportContext` or the tables of :mod:`cxr_bench.results` and returns
a pandas ``Styler`` (through :func:`~.styles.styled`, which escapes every string) ready to display: labels
in the paper's order and spelled one way, AUCs with three decimals, CIs as ``[lo, hi]``, p-values below
0.001 as ``< 0.001`` (:mod:`.formatting`). Every number is read from the runs' metrics.json or from the
results layer's tables; nothing here recomputes a statistic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from ..data.labels import CHESTXRAY14
from ..errors import RunStoreError
from ..results.compare import compare_reference, pair_summary
from ..results.leaderboard import Leaderboard
from ..results.runs import RunRecord
from .context import ReportContext, label_counts
from .escape import esc, message
from .formatting import (
    MIN_CASES,
    at_chance,
    fmt,
    fmt_ci,
    fmt_p,
    label_name,
    num,
    too_few,
    too_few_text,
)
from .runnames import by_label_set, configuration_name, label_set_of, run_label, short_names
from .styles import CMAP, DELTA_CMAP, styled

# ----------------------------------------------------------------------------------------- rankings


MEAN_NOTE = ("Mean AUC: metrics.json's mean over every label with a positive test image, labels marked "
             "'too few' included (the number the CLI and leaderboard.csv show).")
CHANCE_NOTE = "'at chance': the mean AUC's 95% CI reaches 0.5, so the run is listed, not ranked."


def rank_column(chance: Iterable[bool]) -> list[str]:
    """Ranks 1, 2, ... for the runs above chance (in order), 'at chance' for the others."""
    out, k = [], 0
    for c in chance:
        k += not c
        out.append("at chance" if c else str(k))
    return out


def ranking_tables(ctx: ReportContext) -> list[tuple[str, Styler]]:
    """One table per label set, runs ranked by mean test AUC within it: rank, run, id, mean with CI, one
    AUC per label (greyed ``too few`` where the test set has fewer than :data:`MIN_CASES` positives or
    negatives for that label)."""
    out = []
    for label_set, runs in by_label_set(ctx.runs).items():
        names = short_names(runs)
        rows, colours, grey, chance = [], [], [], []
        labels = [lab for lab in CHESTXRAY14 if any(lab in r.labels for r in runs)]
        for r in runs:
            t = r.metrics.get("test") or {}
            per = t.get("per_label") or {}
            counts = label_counts(r)
            ci = t.get("mean_auc_ci") or [None, None]
            row: dict[str, Any] = {"run": names[r.run_id], "run id": r.run_id,
                                   "mean AUC": fmt(t.get("mean_auc")), "95% CI": fmt_ci(*ci[:2])}
            col = [math.nan, math.nan, num(t.get("mean_auc")), math.nan]
            g = [False] * 4
            for lab in labels:
                auc = num((per.get(lab) or {}).get("auc"))
                few = lab in counts and too_few(*counts[lab])
                row[label_name(lab)] = (too_few_text(*counts[lab]) if few else fmt(auc))
                col.append(math.nan if few else auc)
                g.append(few)
            rows.append(row)
            colours.append(col)
            grey.append(g)
            chance.append(at_chance(t.get("mean_auc"), ci[0]))
        order = np.lexsort(([-num(r["mean AUC"]) if r["mean AUC"] else math.inf for r in rows], chance))
        df = pd.DataFrame([rows[i] for i in order])
        df.insert(0, "rank", rank_column([chance[i] for i in order]))
        values = np.array([[math.nan, *colours[i]] for i in order], dtype=float)
        cap = (f"{label_set}: test ROC AUC, ranked by mean AUC within this label set ({len(labels)} labels). "
               f"{MEAN_NOTE} Greyed: fewer than {MIN_CASES} positive or negative test images, no AUC worth "
               f"printing. {CHANCE_NOTE}")
        out.append((label_set, styled(df, cap, hide_index=True, gradients=[(None, values, CMAP, 0.5, 1.0)],
                                      greyed=np.array([[False, *grey[i]] for i in order], dtype=bool),
                                      vertical=[label_name(lab) for lab in labels])))
    return out


def leaderboard_view(lb: pd.DataFrame, runs: Sequence[RunRecord] = ()) -> Styler:
    """The readable columns of a leaderboard: what the run was, mean AUC with CI, cost; ranked within each
    label set (label sets one after another)."""
    names: dict[str, str] = {}
    for group in by_label_set(runs).values():
        names.update(short_names(group))
    rows = []
    for _, r in lb.iterrows():
        rows.append({
            "label set": r["label_set"], "run": names.get(r["run_id"], run_label(r)), "run id": r["run_id"],
            "suite": r["suite"], "split": r["split"], "size": r["image_size"], "loss": r["loss"],
            "pretrained": r["pretrained"], "mean AUC": num(r["mean_auc"]),
            "95% CI": fmt_ci(r["mean_auc_ci_lo"], r["mean_auc_ci_hi"]),
            "params (M)": fmt(num(r["param_count"]) / 1e6, 2), "GMACs": fmt(r["gmacs"], 2),
            "img/s": fmt(r["train_images_per_s"], 1), "epochs": r["epochs"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return styled(pd.DataFrame({"": ["no completed run"]}), hide_index=True)
    df["chance"] = [at_chance(m, lo) for m, lo in zip(lb["mean_auc"], lb["mean_auc_ci_lo"])]
    df = df.sort_values(["label set", "chance", "mean AUC"], ascending=[True, True, False], kind="mergesort")
    df.insert(0, "rank", [r for _, g in df.groupby("label set", sort=False) for r in rank_column(g["chance"])])
    df = df.drop(columns="chance")
    values = df["mean AUC"].to_numpy(dtype=float)
    df["mean AUC"] = [fmt(v) for v in values]
    return styled(df.reset_index(drop=True), "Completed runs on real data, ranked by mean test AUC within each "
                  f"label set. {MEAN_NOTE} {CHANCE_NOTE}",
                  hide_index=True, gradients=[(["mean AUC"], values, CMAP, 0.5, 1.0)])


def failed_view(lb: Leaderboard) -> Styler | None:
    """Runs that did not complete, with their recorded error (escaped: an error message is arbitrary text)."""
    f = lb.failed
    if f is None or not len(f):
        return None
    f = f.copy()
    if "run_name" not in f.columns and "run_dir" in f.columns:
        f["run_name"] = [_run_name(d) for d in f["run_dir"]]
    cols = [c for c in ("suite", "run_id", "run_name", "status", "error") if c in f.columns]
    return styled(f[cols].fillna("").astype(str).rename(columns={"run_id": "run id", "run_name": "name"}),
                  "Runs without results, with the error each recorded", hide_index=True)


def _run_name(run_dir: Any) -> str:
    try:
        rec = RunRecord.load(run_dir)
    except (RunStoreError, OSError, TypeError):
        return ""
    return str(rec.manifest.get("name") or rec.cfg("name") or "")


# ----------------------------------------------------------------------------------------- replication

NO_COUNTERPART = ("no run of this store has a published counterpart (the papers report AlexNet, GoogLeNet, "
                  "VGG-16 and ResNet-50 on 8 labels, ResNet-50 and DenseNet-121 on 14)")


def replication_comparison(ctx: ReportContext, references: tuple[str, ...] = ("wang2017", "chexnet"),
                           ) -> pd.DataFrame:
    """:func:`~cxr_bench.results.compare.compare_reference` of the context's leaderboard, all references."""
    frames = [compare_reference(ctx.table, ref) for ref in references]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else compare_reference(ctx.table.iloc[:0])


def replication_runs(ctx: ReportContext, cmp: pd.DataFrame) -> list[RunRecord]:
    """The runs a replication figure shows: those held against a paper and the others of their suite
    blocks (e.g. all five backbones of a replication grid); every run when none has a counterpart."""
    matched = {_first_id(x) for v in cmp["run_id"] for x in str(v).split(";")} if not cmp.empty else set()
    if not matched:
        return list(ctx.runs)
    blocks = {b for r in ctx.runs if r.run_id in matched for b in _blocks(r)}
    return [r for r in ctx.runs if r.run_id in matched or (blocks & set(_blocks(r)))]


def _blocks(rec: RunRecord) -> list[str]:
    s = rec.manifest.get("suite")
    return [str(b) for b in (s.get("blocks") or [])] if isinstance(s, dict) else []


def reference_sources(cmp: pd.DataFrame, ctx: ReportContext | None = None) -> Styler:
    """One row per matched run: which table, and whether the protocols make the comparison fair."""
    if cmp.empty:
        return styled(pd.DataFrame({"": [NO_COUNTERPART]}), hide_index=True)
    g = cmp.drop_duplicates(["run_id", "source"])
    why = [w if isinstance(w, str) and w else n for w, n in zip(g.get("why_not", g["note"]), g["note"])]
    df = pd.DataFrame({
        "run": [f"{b} / {ls}" for b, ls in zip(g["backbone"], g["label_set"])],
        "run id": g["run_id"].astype(str).str.replace(";", "\n").to_numpy(),
        "seeds": g["n_seeds"].astype(str).to_numpy() if "n_seeds" in g else "1",
        "compared with": [f"{src}: {s}" for src, s in zip(g["source"], g["setting"])],
        "comparable": g["comparable"].map({True: "yes", False: "no"}).fillna("?").to_numpy(),
        "why (not)": [str(w) for w in why],
    })
    return styled(df, hide_index=True)


def _first_id(run_id: Any) -> str:
    """The first run of a configuration (the comparison lists a configuration's seeds as ``a;b;c``)."""
    return str(run_id).split(";")[0]


def _verdict_word(v: Any) -> str:
    """The library's per-label verdict ('consistent with paper', 'below paper (not comparable)', ...) as a
    cell line; empty for the 'no verdict' cases, which the caption explains once."""
    v = str(v) if isinstance(v, str) else ""
    return "" if not v or v.startswith("no ") else v.replace(" with paper", "").replace(" paper", "")


def reference_tables(ctx: ReportContext, cmp: pd.DataFrame) -> list[tuple[str, Styler]]:
    """Ours beside the paper, one table per label set: rows = labels (then the mean), two columns per
    matched configuration: ours with its 95% CI, and the paper's value with Δ = ours - paper and the
    library's verdict (:func:`~cxr_bench.results.compare.compare_reference`: with one seed there is none,
    because a one-model CI covers test sampling only). Ours is coloured on the AUC scale, the paper's cell
    green where the verdict is 'consistent'. Labels with too few test cases say so instead of an AUC."""
    if cmp.empty:
        return []
    names = ctx.run_names()
    out = []
    for label_set, g_ls in cmp.groupby("label_set", sort=True):
        order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(g_ls["label"])]
        cols: dict[str, list[str]] = {}
        aucs, consistent, grey = [], [], []
        for (rid, setting), g in g_ls.groupby(["run_id", "setting"], sort=False):
            counts = label_counts(ctx.run(_first_id(rid)))
            g = g.set_index("label").reindex(order)
            verdicts = g["verdict"] if "verdict" in g else pd.Series([""] * len(order), index=order)
            n_seeds = num(g["n_seeds"].iloc[0]) if "n_seeds" in g else 1.0
            seeds = f" ({int(n_seeds)} seeds)" if math.isfinite(n_seeds) and n_seeds > 1 else ""
            name = names.get(_first_id(rid), str(rid))
            head = f"{configuration_name(name) if seeds else name}{seeds} vs {setting}"
            few = [lab != "mean" and lab in counts and too_few(*counts[lab]) for lab in order]
            cols[f"{head}\nours [95% CI]"] = [
                too_few_text(*counts[lab]) if f else f"{fmt(r.ours)}\n{fmt_ci(r.ours_ci_lo, r.ours_ci_hi)}"
                for lab, f, r in zip(order, few, g.itertuples())]
            cells = []
            for f, r, v in zip(few, g.itertuples(), verdicts):
                lines = [fmt(r.paper)]
                if not f and math.isfinite(num(r.delta)):
                    lines.append(f"Δ {num(r.delta):+.3f}")
                if not f and _verdict_word(v):
                    lines.append(_verdict_word(v))
                cells.append("\n".join(lines))
            cols[f"{head}\npaper (Δ)"] = cells
            aucs += [[math.nan if f else num(v) for f, v in zip(few, g["ours"])], [math.nan] * len(order)]
            consistent += [[math.nan] * len(order),
                           [1.0 if (not f and str(v).startswith("consistent")) else math.nan
                            for f, v in zip(few, verdicts)]]
            grey += [few, [False] * len(order)]
        df = pd.DataFrame(cols, index=[label_name(lab) for lab in order])
        cap = f"{label_set}: ours (95% CI) vs the paper; Δ = ours - paper. "
        if "verdict" in g_ls and g_ls["verdict"].astype(str).str.startswith("no verdict (1 seed)").all():
            cap += ("One seed per configuration: the interval covers test sampling only (not training "
                    "variance), so no verdict is given; run several seeds for one. ")
        else:
            cap += "Green paper cell: the verdict is 'consistent' (the paper's value inside our interval). "
        cap += f"Greyed: fewer than {MIN_CASES} positive or negative test images."
        out.append((label_set, styled(df, cap, gradients=[(None, np.array(aucs).T, CMAP, 0.5, 1.0),
                                                          (None, np.array(consistent).T, "Greens", 0.0, 4.0)],
                                      greyed=np.array(grey, dtype=bool).T)))
    return out


# ----------------------------------------------------------------------------------------- ablations


def ablations(ctx: ReportContext) -> pd.DataFrame:
    """The paired ablations of the context's runs, computed once per render (:meth:`.Analysis.ablations`);
    sanity runs are never paired."""
    table = ctx.analysis.ablations()
    if ctx.sanity_runs and len(table):
        ids = {r.run_id for r in ctx.sanity_runs}
        keep = [not (set(str(a).split(";")) | set(str(b).split(";"))) & ids
                for a, b in zip(table["run_a"], table["run_b"])]
        table = table[keep].reset_index(drop=True)
    return table


P_COLUMNS = {  # the library's p-value columns, in the order and with the names a reader sees
    "p_bootstrap": "p bootstrap", "p_bootstrap_holm": "p bootstrap\n(Holm)", "p_clustered": "p clustered",
    "p_clustered_holm": "p clustered\n(Holm)", "p_delong_image_level": "p DeLong\n(image level)",
    "p": "p", "p_holm": "p (Holm)",
}


def _delta_limit(delta: Iterable[Any]) -> float:
    """The half-width of the diverging scale: the largest difference shown (so -0.035 and -0.139 differ)."""
    values = np.abs(np.array([num(v) for v in delta], dtype=float))
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    return top if top > 0 else 0.05


def _rejected(delta: pd.Series, verdict: pd.Series | None) -> np.ndarray:
    """Δ where the Holm-adjusted test rejects (verdict better/worse), NaN (no colour) elsewhere."""
    d = delta.to_numpy(dtype=float)
    if verdict is None:
        return np.full(d.shape, np.nan)
    return np.where(verdict.astype(str).isin(("better", "worse")).to_numpy(), d, np.nan)


def ablation_summary_view(table: pd.DataFrame) -> Styler:
    """One row per pair: variant - baseline mean AUC with CI, p and verdict, and how many labels the
    library's Holm-adjusted verdicts call better / worse / no evidence."""
    s = pair_summary(table)
    if s.empty:
        return styled(pd.DataFrame({"": ["no paired ablations (runs differing in exactly one factor) here"]}),
                      hide_index=True)
    df = pd.DataFrame({
        "factor": s["factor"].astype(str), "baseline": s["value_a"].astype(str),
        "variant": s["value_b"].astype(str), "mean AUC (baseline)": [fmt(v) for v in s["mean_a"]],
        "mean AUC (variant)": [fmt(v) for v in s["mean_b"]],
        "Δ": [f"{num(v):+.3f}" if math.isfinite(num(v)) else "" for v in s["delta"]],
        "95% CI of Δ": [fmt_ci(a, b) for a, b in zip(s["ci_lo"], s["ci_hi"])],
        "p (bootstrap)": [fmt_p(p) for p in s["p"]],
    })
    if "verdict" in s:
        df["verdict"] = s["verdict"].fillna("").astype(str)
    for c in s.columns:
        if c.startswith("labels_"):
            df[c[len("labels_"):].replace("_", " ").replace("p lt 0.05", "p < 0.05") + "\n(labels)"] = \
                s[c].astype(str)
    return styled(df, "Paired ablations: variant minus baseline mean AUC on the same test images; Δ coloured "
                  "(scale centred on zero) only where the Holm-adjusted test rejects",
                  hide_index=True,
                  gradients=[(["Δ"], _rejected(s["delta"], s["verdict"] if "verdict" in s else None),
                              DELTA_CMAP, -_delta_limit(s["delta"]), _delta_limit(s["delta"]))])


def ablation_few(table: pd.DataFrame, counts: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                 ) -> set[tuple[str, str, str, str]]:
    """(factor, value_a, value_b, label) of the ablation rows with too few test cases: from the table's own
    ``n_pos``/``n_neg`` when it has them, else from the baseline run's counts."""
    out = set()
    for _, r in table.iterrows():
        if r["label"] == "mean":
            continue
        if "n_pos" in table.columns and pd.notna(r.get("n_pos")):
            few = too_few(r["n_pos"], r.get("n_neg"))
        else:
            c = (counts or {}).get(_first_id(r.get("run_a")), {})
            few = r["label"] in c and too_few(*c[r["label"]])
        if few:
            out.add((str(r["factor"]), str(r["value_a"]), str(r["value_b"]), str(r["label"])))
    return out


def ablation_detail_view(table: pd.DataFrame, few: Iterable[tuple[str, str, str, str]] = ()
                         ) -> list[tuple[str, Styler]]:
    """Per-label differences, one table per pair (rows: labels): Δ AUC with its paired patient-bootstrap
    CI, every p-value column the library provides (bootstrap, clustered, Holm-adjusted, image-level
    DeLong) and the verdict. Rows in ``few`` (:func:`ablation_few`) are greyed and their numbers withheld."""
    if table.empty:
        return []
    few = set(few)
    pcols = [c for c in P_COLUMNS if c in table.columns]
    out = []
    for (factor, va, vb), g in table.groupby(["factor", "value_a", "value_b"], sort=False):
        g = g.drop_duplicates("label").set_index("label")
        order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in g.index]
        order += [lab for lab in g.index if lab not in order]
        g = g.loc[order]
        df = pd.DataFrame({"Δ AUC": [f"{num(v):+.3f}" if math.isfinite(num(v)) else "" for v in g["delta"]],
                           "95% CI": [fmt_ci(a, b) for a, b in zip(g["ci_lo"], g["ci_hi"])]},
                          index=[label_name(lab) for lab in order])
        for c in pcols:
            df[P_COLUMNS[c]] = [fmt_p(v) for v in g[c]]
        if "verdict" in g:
            df["verdict"] = g["verdict"].fillna("").astype(str).to_numpy()
        is_few = [(str(factor), str(va), str(vb), lab) in few for lab in order]
        for i, f in enumerate(is_few):
            if f:
                df.iloc[i, :] = ["too few test cases"] + [""] * (df.shape[1] - 1)
        grey = np.repeat(np.array(is_few, dtype=bool)[:, None], df.shape[1], axis=1)
        delta = np.where(is_few, np.nan, _rejected(g["delta"], g["verdict"] if "verdict" in g else None))
        head = f"{factor}: {vb} vs {va}"
        cap = f"{head}: Δ AUC = variant - baseline (paired patient-bootstrap CI)"
        if any(is_few):
            cap += f"; greyed: fewer than {MIN_CASES} positive or negative test images"
        gradient = (["Δ AUC"], delta, DELTA_CMAP, -_delta_limit(table["delta"]), _delta_limit(table["delta"]))
        out.append((head, styled(df, cap, gradients=[gradient], greyed=grey)))
    return out


# ----------------------------------------------------------------------------------------- expert labels


EXPERT_VIEW_COLUMNS = ("suite", "run_id", "backbone", "target", "scored_from", "n", "expert_pos", "nih_pos",
                       "expert_auc", "nih_auc", "nih_minus_expert")


def expert_results(ctx: ReportContext) -> pd.DataFrame:
    """One row per (run, expert target), read from the leaderboard's expert-label columns
    (:data:`cxr_bench.results.expert.EXPERT_COLUMNS`), so the expert labels are scored once per render, by
    the leaderboard: ``n`` (the covered test images), positives under each label source, the AUC against
    each and NIH minus expert."""
    from ..results.expert import EXPERT_MAPPING

    rows = []
    labels = {r.run_id: set(r.labels) for r in ctx.runs}
    for _, r in ctx.table.iterrows():
        n = num(r.get("expert_n"))
        if not n > 0:
            continue
        for target, members in EXPERT_MAPPING.items():
            present = [m for m in members if m in labels.get(str(r["run_id"]), set())]
            expert_auc, nih_auc = num(r.get(f"expert_auc_{target}")), num(r.get(f"nih_auc_{target}_same_images"))
            if not present or not math.isfinite(num(r.get(f"expert_pos_{target}"))):
                continue
            rows.append({
                "suite": r["suite"], "run_id": r["run_id"], "backbone": r.get("backbone"), "target": target,
                "scored_from": "max(" + ", ".join(present) + ")", "n": int(n),
                "expert_pos": int(num(r[f"expert_pos_{target}"])),
                "nih_pos": int(num(r.get(f"nih_pos_{target}_same_images"))), "expert_auc": expert_auc,
                "nih_auc": nih_auc,
                "nih_minus_expert": nih_auc - expert_auc,
            })
    return pd.DataFrame(rows, columns=list(EXPERT_VIEW_COLUMNS))


def expert_enough(df: pd.DataFrame) -> pd.Series:
    """Per row of :func:`expert_results`: True when both label sources have at least :data:`MIN_CASES`
    positives and negatives on the covered images."""
    if df.empty:
        return pd.Series([], dtype=bool)
    n = df["n"].astype(float)
    return pd.Series([not (too_few(ep, nn - ep) or too_few(npos, nn - npos))
                      for ep, npos, nn in zip(df["expert_pos"], df["nih_pos"], n)], index=df.index)


def expert_view(ctx: ReportContext, df: pd.DataFrame | None = None) -> Styler:
    """AUC against radiologist labels beside AUC against NIH labels, same images and same scores; rows
    with too few positives or negatives say so instead of an AUC of 0 or 1."""
    df = expert_results(ctx) if df is None else df
    if df.empty:
        return styled(pd.DataFrame({"": [("no test image of these runs is covered by the Google 2019 expert "
                                         "labels")]}), hide_index=True)
    ok = expert_enough(df)
    sets = {r.run_id: label_set_of(r) for r in ctx.runs}
    if not ok.any():  # every row would read 'too few': show the counts that say why, once per label set
        counts = pd.DataFrame({
            "target": df["target"].map(label_name),
            "label set": df["run_id"].map(lambda r: sets.get(r, "")), "score": df["scored_from"],
            "images": df["n"], "expert +": df["expert_pos"], "NIH +": df["nih_pos"],
        }).drop_duplicates().reset_index(drop=True)
        return styled(counts, "Why no AUC is shown: positives under each label source on the covered test "
                      f"images (at least {MIN_CASES} positives and {MIN_CASES} negatives are needed)",
                      hide_index=True)
    names = ctx.run_names()

    def auc(v: Any, good: bool) -> str:
        return fmt(v) if good else "too few"

    view = pd.DataFrame({
        "run": df["run_id"].map(lambda rid: names.get(rid, rid)),
        "label set": df["run_id"].map(lambda rid: sets.get(rid, "")),
        "target": df["target"].map(label_name), "score": df["scored_from"], "images": df["n"],
        "expert +": df["expert_pos"], "NIH +": df["nih_pos"],
        "AUC vs expert": [auc(v, g) for v, g in zip(df["expert_auc"], ok)],
        "AUC vs NIH": [auc(v, g) for v, g in zip(df["nih_auc"], ok)],
        "NIH - expert": [f"{num(v):+.3f}" if g and math.isfinite(num(v)) else "" for v, g in
                         zip(df["nih_minus_expert"], ok)],
    })
    grey = np.zeros(view.shape, dtype=bool)
    grey[:, 7:] = ~ok.to_numpy()[:, None]
    return styled(view, "Same predictions, two label sources (Google 2019 radiologist labels vs NIH NLP "
                  f"labels); 'too few': fewer than {MIN_CASES} positive or negative images under a label "
                  "source",
                  hide_index=True, greyed=grey)


def expert_note(df: pd.DataFrame) -> str:
    """A sentence (HTML) when no row of the expert table has enough cases to mean anything."""
    if df.empty:
        return message("No test image of these runs is covered by the Google 2019 expert labels.")
    if expert_enough(df).any():
        return ""
    n = int(df["n"].max())
    return message(f"Only {n} test image(s) of these runs carry the Google 2019 expert labels, with at most "
                   f"{int(df['expert_pos'].max())} expert-positive image(s) per target: too few for an AUC "
                   f"(at least {MIN_CASES} positives and {MIN_CASES} negatives are needed), so no AUC is "
                   "shown. On the full release the expert labels cover 1,962 test images.")


# ------------------------------------------------------------------------------------ localization
def localized_runs(ctx: ReportContext) -> list[RunRecord]:
    """Runs with a ``localization.csv`` (written by ``cxr-bench localize`` or at the end of a sweep)."""
    return [r for r in ctx.runs if (r.run_dir / "localization.csv").is_file()]


def localization_summary(ctx: ReportContext) -> Styler | None:
    """Accuracy at each T(IoBB), averaged over the box labels, one row per localized run, under the same
    average of Wang et al.'s Table 4 (ResNet-50). None when no run was localized."""
    from ..results.localization import table4_comparison
    from ..results.references import wang2017_table4

    runs = localized_runs(ctx)
    if not runs:
        return None
    names = ctx.run_names()
    rows, scored, boxes = {}, set(), {}
    for rec in sorted(runs, key=lambda r: names.get(r.run_id, r.run_id)):
        long = table4_comparison(pd.read_csv(rec.run_dir / "localization.csv"))
        long = long[long["n_gt"] > 0]
        scored |= set(long["label"])
        rows[names.get(rec.run_id, rec.run_id)] = long.groupby("t_iobb")["accuracy"].mean()
        boxes[names.get(rec.run_id, rec.run_id)] = int(long.drop_duplicates("label")["n_gt"].sum())
    ref = wang2017_table4()
    # The paper's mean over the same labels ours are averaged over (those with boxes in the test images).
    ref = ref[[lab for lab in ref.columns if lab in scored]]
    paper = "Wang et al. 2017, ResNet-50 (Table 4)"
    rows[paper] = ref.mean(axis=1).set_axis(ref.index.astype(float).round(4))
    df = pd.DataFrame(rows).T
    values = df.to_numpy(dtype=float)
    df.columns = [f"T(IoBB)={t:g}" for t in df.columns]
    df = df.map(fmt)
    df.insert(0, "boxes", [str(boxes.get(i, "")) for i in df.index])
    return styled(df, "Localization accuracy (a ground-truth box is hit when IoBB > T), mean over the box "
                  "labels that have boxes in the test images",
                  gradients=[(list(df.columns[1:]), values, CMAP, 0.0, 1.0)])


def localization_detail(ctx: ReportContext) -> tuple[str, Styler, Path | None, str] | None:
    """The per-label table beside Table 4 for the run closest to the paper's (ResNet-50, 8 labels, Wang
    head; else the first localized run), its heatmap figure if there is one, and a note (HTML, may be
    empty) on what the heatmaps can resolve and how many boxes each label has."""
    from ..results.localization import localization_report_table

    runs = localized_runs(ctx)
    if not runs:
        return None

    def closeness(rec: RunRecord) -> tuple[int, int, int]:
        return (rec.cfg("model.backbone") != "resnet50", rec.cfg("data.label_set") != "chestxray8",
                rec.cfg("model.head") != "wang2017")

    rec = min(runs, key=closeness)
    wide = localization_report_table(rec.run_dir, wide=True)
    if wide is None:
        return None
    n_gt = _localization_counts(rec)
    labels = [c for c in wide.columns if not str(c).endswith("(paper)")]
    rows, values, grey = [], [], []
    for lab in labels:
        few = n_gt.get(lab, MIN_CASES) < MIN_CASES
        row: dict[str, str] = {"label": label_name(lab), "boxes": str(n_gt.get(lab, ""))}
        vals: list[float] = [math.nan, math.nan]
        for t in wide.index:
            ours = num(wide.loc[t, lab])
            paper = num(wide.loc[t, f"{lab} (paper)"]) if f"{lab} (paper)" in wide else math.nan
            row[f"T={t:g}\nours"] = fmt(ours)
            row[f"T={t:g}\npaper"] = fmt(paper)
            vals += [math.nan if few else ours, paper]
        rows.append(row)
        values.append(vals)
        grey.append([False, False] + [few, False] * len(wide.index))
    styled_table = styled(pd.DataFrame(rows), "Accuracy at T(IoBB) per label: ours vs Wang et al. 2017 "
                          "Table 4 (ResNet-50); boxes: ground-truth boxes scored. Greyed: fewer than "
                          f"{MIN_CASES} boxes.",
                          hide_index=True, gradients=[(None, np.array(values), CMAP, 0.0, 1.0)],
                          greyed=np.array(grey, dtype=bool))
    fig = rec.run_dir / "figures" / "localization.png"
    return (ctx.run_names().get(rec.run_id, rec.run_id), styled_table, fig if fig.is_file() else None,
            localization_note(rec))


def localization_heading(name: str, note: str) -> str:
    """HTML above the per-label localization table: which run it shows (escaped) and its ``note`` (HTML
    from :func:`localization_note`)."""
    return f"<p>Per label for <b>{esc(name)}</b>, beside the paper:</p>{note}"


def _localization_json(rec: RunRecord) -> dict[str, Any]:
    import json

    try:
        obj = json.loads((rec.run_dir / "localization.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _localization_counts(rec: RunRecord) -> dict[str, int]:
    try:
        long = pd.read_csv(rec.run_dir / "localization.csv")
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in long.drop_duplicates("label").set_index("label")["n_gt"].items()}


def localization_note(rec: RunRecord) -> str:
    """HTML: a warning when the heatmaps are too coarse to localize anything (a 2 x 2 map has four cells,
    so every detected box is a quarter or half of the image), and when labels have few boxes."""
    info = _localization_json(rec)
    shape = info.get("heatmap_shape")
    notes = []
    if isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) for s in shape):
        h, w = shape
        size = rec.cfg("data.image_size")
        if h * w <= 16:
            notes.append(f"The heatmaps of this run are {h} x {w} cells ({size}-px input, a stride-32 "
                         f"backbone): every detected box is a union of {1024 // max(h, 1)}-px squares of the "
                         "1024-px frame, so these accuracies measure the coarse grid, not the model's "
                         "localization. The paper's heatmaps are 32 x 32 (1024-px input).")
        else:
            notes.append(f"Heatmaps: {h} x {w} cells ({size}-px input).")
    n_boxes = info.get("n_boxes")
    if isinstance(n_boxes, int) and n_boxes < 100:
        notes.append(f"Only {n_boxes} ground-truth boxes (the full release has 984): one box moves a label's "
                     "accuracy by many points.")
    return "".join(message(n) for n in notes)


# ------------------------------------------------------------------------------ subgroups and calibration
# The readers live in cxr_bench.metrics (``calibration_table``, ``subgroup_table``, ``underdiagnosis_table``:
# a metrics.json split block -> DataFrame); a run whose metrics.json has no such block is left out, said so.


def split_tables(runs: Sequence[RunRecord], block: str, reader: str, split: str = "test",
                 ) -> tuple[dict[str, pd.DataFrame], str]:
    """``run id -> reader(metrics.json split block)`` for ``runs`` (``block``: ``calibration`` or
    ``subgroups``, the key the reader reads; ``reader``: the name of the cxr_bench.metrics function), and
    a note (HTML, may be empty) naming the runs left out and why."""
    from ..metrics.extended import BLOCK_TABLES

    fn = BLOCK_TABLES[reader]
    out: dict[str, pd.DataFrame] = {}
    missing = []
    for r in runs:
        blk = r.metrics.get(split) or {}
        if block not in blk:
            missing.append(f"{r.run_id} (its metrics.json has no '{block}' block: re-evaluate it with "
                           "`cxr-bench run`)")
            continue
        table = fn(blk)
        if len(table):
            out[r.run_id] = table
        else:
            missing.append(f"{r.run_id} (no '{block}' results)")
    if not missing:
        return out, ""
    return out, message(f"Left out: {'; '.join(missing)}." if out else
                        f"No '{block}' results for these runs, so the section is empty: {'; '.join(missing)}.")


def _usable(g: pd.DataFrame) -> pd.Series:
    return pd.Series([math.isfinite(num(a)) and not too_few(p, n)
                      for a, p, n in zip(g["auc"], g["n_pos"], g["n_neg"])], index=g.index)


def subgroup_summary(tables: Mapping[str, pd.DataFrame], names: Mapping[str, str]) -> Styler:
    """Rows = runs, columns = subgroups: mean AUC over the labels with at least MIN_CASES positives and
    negatives in every group of the attribute (so the groups' means cover the same labels), and the
    largest minus the smallest group mean."""
    rows, values = [], []
    for rid, df in tables.items():
        row: dict[str, Any] = {"run": names.get(rid, rid)}
        vals: list[float] = [math.nan]
        for attr, g in df.groupby("attribute", sort=False):
            g = g.assign(ok=_usable(g))
            groups = list(dict.fromkeys(g["group"]))
            per_label = g.groupby("label")["ok"].agg(["all", "size"])
            labels = set(per_label.index[(per_label["all"]) & (per_label["size"] == len(groups))])
            means = {}
            for grp in groups:
                sel = g[(g["group"] == grp) & g["label"].isin(labels)]
                means[grp] = float(pd.to_numeric(sel["auc"]).mean()) if len(sel) else math.nan
                row[f"{attr}: {grp}"] = fmt(means[grp]) if labels else "too few"
                vals.append(means[grp])
            finite = [m for m in means.values() if math.isfinite(m)]
            row[f"{attr}: gap"] = (fmt(max(finite) - min(finite)) + f"\n({len(labels)} labels)"
                                   if len(finite) >= 2 else "")
            vals.append(math.nan)
        rows.append(row)
        values.append(vals)
    if not rows:
        return styled(pd.DataFrame({"": ["no subgroup results"]}), hide_index=True)
    df = pd.DataFrame(rows).fillna("")
    vals_arr = np.array([v + [math.nan] * (df.shape[1] - len(v)) for v in values], dtype=float)
    return styled(df, f"Mean test AUC per subgroup over the labels with at least {MIN_CASES} positive and "
                  "negative images in every group of the attribute; gap = largest - smallest group mean",
                  hide_index=True, gradients=[(None, vals_arr, CMAP, 0.5, 1.0)])


def subgroup_view(df: pd.DataFrame) -> Styler:
    """One run's subgroup table: rows = labels, a column per attribute: group, cells 'AUC [CI]' and the
    gap to the attribute's reference group (the library's patient-bootstrap interval), or why there is no
    AUC (too few cases)."""
    order = [lab for lab in CHESTXRAY14 if lab in set(df["label"])]
    order += [lab for lab in dict.fromkeys(df["label"]) if lab not in order]
    cols: dict[str, list[str]] = {}
    values, grey = [], []
    for (attr, grp), g in df.groupby(["attribute", "group"], sort=False):
        g = g.drop_duplicates("label").set_index("label").reindex(order)
        ref = g["reference"].dropna().iloc[0] if "reference" in g and g["reference"].notna().any() else None
        cells, vals, gr = [], [], []
        for _, r in g.iterrows():
            auc = num(r["auc"])
            if pd.isna(r["n_pos"]):
                cells.append("")
                vals.append(math.nan)
                gr.append(False)
            elif not math.isfinite(auc) or too_few(r["n_pos"], r["n_neg"]):
                cells.append(too_few_text(r["n_pos"], r["n_neg"]))
                vals.append(math.nan)
                gr.append(True)
            else:
                gap = num(r.get("gap"))
                cells.append(f"{fmt(auc)} {fmt_ci(r['ci_low'], r['ci_high'], 2)}"
                             + (f"\ngap {gap:+.2f} {fmt_ci(r.get('gap_ci_low'), r.get('gap_ci_high'), 2)}"
                                if math.isfinite(gap) else ""))
                vals.append(auc)
                gr.append(False)
        cols[f"{attr}: {grp}" + (" (reference)" if grp == ref else "")] = cells
        values.append(vals)
        grey.append(gr)
    view = pd.DataFrame(cols, index=[label_name(lab) for lab in order])
    return styled(view, "Test ROC AUC [95% patient-bootstrap CI] per subgroup; gap = AUC minus the reference "
                  f"group's, with its interval on the same resamples. Greyed: fewer than {MIN_CASES} "
                  "positive or negative images in the group.",
                  gradients=[(None, np.array(values, dtype=float).T, CMAP, 0.5, 1.0)],
                  greyed=np.array(grey, dtype=bool).T)


def underdiagnosis_view(df: pd.DataFrame, names: Mapping[str, str]) -> Styler:
    """Underdiagnosis rate by subgroup: rows = attribute: group, a column per run, cells 'rate [CI]
    (underdiagnosed / with a finding)' or the reason there is no rate."""
    cols: dict[str, list[str]] = {}
    keys = list(dict.fromkeys(zip(df["attribute"], df["group"])))
    for rid, g in df.groupby("run_id", sort=False):
        g = g.drop_duplicates(["attribute", "group"]).set_index(["attribute", "group"])
        cells = []
        for k in keys:
            if k not in g.index:
                cells.append("")
                continue
            r = g.loc[k]
            rate = num(r["rate"])
            count = f"({fmt(r.get('n_underdiagnosed'), 0)} of {fmt(r.get('n_finding'), 0)})"
            lo, hi = num(r["ci_low"]), num(r["ci_high"])
            if not math.isfinite(rate):
                cells.append(str(r.get("reason") or "no rate"))
            elif num(r.get("n_finding")) < MIN_CASES:
                cells.append(f"too few\n{count}")
            elif lo == hi:  # every resample gives the same rate (0 or all): an interval would mislead
                cells.append(f"{fmt(rate)}\n{count}")
            else:
                cells.append(f"{fmt(rate)} {fmt_ci(lo, hi, 2)}\n{count}")
        cols[names.get(rid, rid)] = cells
    view = pd.DataFrame(cols, index=["all test images" if a == "all" else f"{a}: {g}" for a, g in keys])
    return styled(view, "Underdiagnosis rate: share of the images with a finding that the model calls normal "
                  "(every label below its validation-chosen threshold), after Seyyed-Kalantari et al. 2021; "
                  "95% patient-bootstrap CI")


def underdiagnosis_note(df: pd.DataFrame) -> str:
    """A sentence (HTML) when the underdiagnosis rates cannot tell groups apart because no run calls any
    image with a finding normal (every rate 0): the figure would be a column of zeros. Empty otherwise."""
    rates = pd.to_numeric(df.get("rate", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(rates) and (rates == 0).all():
        return message("No run calls any test image with a finding normal at its validation-chosen "
                       "thresholds (every rate is 0): a model near chance puts almost every image above some "
                       "label's threshold, so underdiagnosis cannot differ between subgroups here and no "
                       "figure is drawn.")
    return ""


def calibration_summary(tables: Mapping[str, pd.DataFrame], names: Mapping[str, str]) -> Styler:
    """Rows = runs: mean Brier score and ECE over labels, and the label with the worst ECE."""
    rows = []
    for rid, cal in tables.items():
        per = cal.drop_duplicates("label")
        ece = pd.to_numeric(per["ece"], errors="coerce")
        worst = per.iloc[int(np.nanargmax(ece.to_numpy()))] if ece.notna().any() else None
        worst_text = "" if worst is None else f"{fmt(worst['ece'])} ({label_name(worst['label'])})"
        rows.append({"run": names.get(rid, rid), "labels": str(len(per)),
                     "mean Brier": fmt(pd.to_numeric(per["brier"], errors="coerce").mean()),
                     "mean ECE": fmt(ece.mean()), "worst ECE": worst_text})
    if not rows:
        return styled(pd.DataFrame({"": ["no calibration results"]}), hide_index=True)
    return styled(pd.DataFrame(rows), "Calibration on the test set, lower is better (ECE: 15 equal-width "
                  "score bins, Guo et al. 2017)", hide_index=True)


def best_run(ctx: ReportContext, run_ids: Iterable[str]) -> str:
    """The run of ``run_ids`` with the highest test mean AUC (the first on ties or without metrics)."""
    ids = list(run_ids)

    def mean(rid: str) -> float:
        r = ctx.run(rid)
        v = num((r.metrics.get("test") or {}).get("mean_auc"))
        return v if math.isfinite(v) else -math.inf

    return max(ids, key=mean)


def stack_runs(tables: Mapping[str, pd.DataFrame], runs: Sequence[RunRecord] = ()) -> pd.DataFrame:
    """``run id -> table`` as one table with a ``run_id`` column (and ``backbone``, from ``runs``)."""
    backbone = {r.run_id: str(r.cfg("model.backbone")) for r in runs}
    frames = [t.assign(run_id=rid, backbone=backbone.get(rid, "")) for rid, t in tables.items()
              if t is not None and len(t)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
