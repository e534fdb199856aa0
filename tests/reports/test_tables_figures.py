"""Report tables and figures, checked against values derived here: counts of what must be drawn, positions
taken from the input frames, areas and means recomputed by brute force, legends located outside every
axes, and table widths estimated from the cells."""

from __future__ import annotations

import dataclasses
import html
import json
from itertools import product

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from cxr_bench.config import RunConfig  # noqa: E402
from cxr_bench.data.labels import CHESTXRAY8, CHESTXRAY14  # noqa: E402
from cxr_bench.data.sample_note import SampleFacts, sample_note_lines  # noqa: E402
from cxr_bench.metrics.predictions import write_predictions  # noqa: E402
from cxr_bench.reports import context, figures, formatting, runnames, styles, tables  # noqa: E402
from cxr_bench.results.runs import RunRecord  # noqa: E402
from cxr_bench.utils.io import atomic_write_json  # noqa: E402

PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def ctx(run_store):
    root, _ = run_store
    return context.ReportContext.load(root)


@pytest.fixture(autouse=True)
def _style():
    figures.set_style()
    yield
    plt.close("all")


# --------------------------------------------------------------------------------------------- helpers


def _bbox(artist, fig):
    fig.canvas.draw()
    return artist.get_window_extent(fig.canvas.get_renderer())


def _outside_every_axes(legend, fig) -> bool:
    """The legend's box overlaps no visible axes' box (drawn pixels, after layout)."""
    lb = _bbox(legend, fig)
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        a = ax.get_window_extent(fig.canvas.get_renderer())
        if lb.x0 < a.x1 - 1 and lb.x1 > a.x0 + 1 and lb.y0 < a.y1 - 1 and lb.y1 > a.y0 + 1:
            return False
    return True


def _brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p, n in product(pos, neg)]))


def _write_run(root, name: str, y: np.ndarray, p: np.ndarray, labels, **overrides):
    """A minimal run directory (config, metrics with counts, test predictions) written with the library's
    own writers, so RunRecord reads it as it reads a real one."""
    cfg = RunConfig().replace(**{"data.label_set": "chestxray14", **overrides})
    run_dir = root / name
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    images = [f"{i:08d}_000.png" for i in range(len(y))]
    write_predictions(run_dir / "predictions" / "test.csv", images, [n.split("_")[0] for n in images], y, p, labels)
    per = {lab: {"auc": _brute_auc(y[:, j], p[:, j]) if 0 < y[:, j].sum() < len(y) else None,
                 "n_pos": int(y[:, j].sum())} for j, lab in enumerate(labels)}
    atomic_write_json(run_dir / "metrics.json", {
        "labels": list(labels), "steps": 16,
        "test": {"n_images": len(y), "mean_auc": 0.5, "mean_auc_ci": [0.45, 0.55], "per_label": per}})
    return RunRecord.load(run_dir, "t")


# --------------------------------------------------------------------------------------------- tables


def test_fmt_p_never_prints_zero():
    assert formatting.fmt_p(0.0004) == "< 0.001" and formatting.fmt_p(0.0) == "< 0.001"
    assert formatting.fmt_p(0.001) == "0.001" and formatting.fmt_p(0.01234) == "0.012" and formatting.fmt_p(float("nan")) == ""


def test_styled_escapes_cells_index_columns_and_caption():
    df = pd.DataFrame({PAYLOAD: [PAYLOAD, 1.5]}, index=[PAYLOAD, "ok"])
    html = styles.styled(df, PAYLOAD, gradients=[(None, np.array([[0.5], [0.9]]), styles.CMAP, 0.5, 1.0)]).to_html()
    assert "<script>" not in html and "<img" not in html
    assert html.count("&lt;script&gt;") == 4  # cell, index, column, caption: each shown as text
    # The NaN of a colour map leaves a cell unstyled (pandas would paint it black).
    css = styles.gradient_css(np.array([np.nan, 0.5, 1.0]), "RdYlGn", 0.5, 1.0)
    assert css[0] == "" and to_hex(matplotlib.colormaps["RdYlGn"](0.0)) in css[1]


def test_ranking_is_within_a_label_set_and_follows_metrics_json(ctx):
    out = dict(tables.ranking_tables(ctx))
    assert set(out) == {"chestxray8", "chestxray14"}
    for label_set, styler in out.items():
        runs = [r for r in ctx.runs if r.cfg("data.label_set") == label_set]
        expected = [r.run_id for r in sorted(runs, key=lambda r: -r.metrics["test"]["mean_auc"])]
        assert list(styler.data["run id"]) == expected
        assert list(styler.data["rank"]) == [str(i) for i in range(1, len(runs) + 1)]
        n_labels = len(CHESTXRAY8 if label_set == "chestxray8" else CHESTXRAY14)
        assert styler.data.shape[1] == 5 + n_labels  # rank, run, id, mean, CI, one column per label
        # Label headers are written vertically, so the table's width is its cells' width.
        assert styler.to_html().count("writing-mode: vertical-rl") == n_labels
        assert _estimated_width(styler, vertical=n_labels) < 1100


def _estimated_width(styler, vertical: int = 0, px_per_char: float = 6.5, pad: int = 12) -> float:
    """Pixels a table needs: per column the longest line among its cells (and its header unless vertical;
    ~6.5 px a character at the reports' 0.85em), plus padding."""
    df = styler.data
    width = max(len(line) for v in df.index.astype(str) for line in v.split("\n")) * px_per_char + pad \
        if not styler.hide_index_[0] else 0
    for j, col in enumerate(df.columns):
        cells = [line for v in df.iloc[:, j].astype(str) for line in v.split("\n")]
        head = [] if j >= df.shape[1] - vertical else str(col).split("\n")
        width += max(len(s) for s in [*cells, *head, ""]) * px_per_char + pad
    return width


def test_reference_tables_fit_and_grey_too_few(ctx, tmp_path):
    cmp = tables.replication_comparison(ctx)
    out = dict(tables.reference_tables(ctx, cmp))
    for label_set, styler in out.items():
        matched = {r.split(";")[0] for r in cmp[cmp["label_set"] == label_set]["run_id"]}
        assert styler.data.shape[1] == 2 * len(matched)  # ours [CI] and paper (Δ) per matched run
        assert _estimated_width(styler) < 1100
    one_seed = cmp["verdict"].astype(str).str.startswith("no verdict (1 seed)").all()
    assert all(("no verdict is given" in s.caption) == one_seed for s in out.values())
    html = out["chestxray14"].to_html()
    rec = next(r for r in ctx.runs if r.cfg("data.label_set") == "chestxray14" and r.cfg("model.backbone") == "resnet50")
    effusion = rec.metrics["test"]["per_label"]["Effusion"]["auc"]
    assert f"{effusion:.3f}" in html and "0.758" in html  # ours from metrics.json, Table 17's 0.7585


def test_too_few_positives_say_so(tmp_path):
    rng = np.random.default_rng(0)
    labels = list(CHESTXRAY14)
    y = (rng.random((60, len(labels))) < 0.4).astype(np.int8)
    y[:, labels.index("Hernia")] = 0
    y[:3, labels.index("Hernia")] = 1  # 3 positives: below MIN_CASES
    p = np.clip(y * 0.3 + rng.random(y.shape) * 0.7, 0, 1)
    rec = _write_run(tmp_path, "r1", y, p, labels)
    assert context.label_counts(rec)["Hernia"] == (3, 57)
    fig = figures.roc_curves([rec])
    hernia = next(ax for ax in fig.axes if ax.get_title() == "Hernia")
    assert len(hernia.lines) == 1  # the chance diagonal only: no two-step staircase
    assert any("too few" in t.get_text() and "3" in t.get_text() for t in hernia.texts)
    effusion = next(ax for ax in fig.axes if ax.get_title() == "Effusion")
    curve = effusion.lines[1]
    area = np.trapezoid(curve.get_ydata(), curve.get_xdata())
    j = labels.index("Effusion")
    assert area == pytest.approx(_brute_auc(y[:, j], p[:, j]), abs=1e-9)


def test_expert_rows_with_few_cases_are_withheld(ctx):
    ex = pd.DataFrame({"run_id": ["a", "a"], "target": ["pneumothorax", "airspace_opacity"], "scored_from": ["x", "y"],
                       "n": [22, 22], "expert_pos": [1, 12], "nih_pos": [2, 11],
                       "expert_auc": [1.0, 0.61], "nih_auc": [0.0, 0.7], "nih_minus_expert": [-1.0, 0.09]})
    assert list(tables.expert_enough(ex)) == [False, True]  # 22-12 = 10 negatives is enough, 1 positive is not
    only_few = ex.iloc[:1]
    note = tables.expert_note(only_few)
    assert "Only 22 test image(s)" in note and "no AUC is shown" in note
    assert tables.expert_note(ex) == ""
    # With no row worth an AUC the table is the counts that say why, one row per target: no 'too few' wall.
    counts = tables.expert_view(ctx, pd.concat([only_few, only_few])).data
    assert len(counts) == 1 and "AUC vs expert" not in counts.columns and counts.loc[0, "expert +"] == 1
    assert "AUC vs expert" in tables.expert_view(ctx, ex).data.columns
    fig = figures.expert_plot(only_few)
    assert "too few" in fig.axes[0].texts[0].get_text()


def test_provenance_footer_lists_every_commit_and_the_data(ctx, run_store, tmp_path):
    html = context.provenance_html(ctx.runs)
    assert "0123456789ab" in html and "dirty" not in html.replace("dirty flag", "")
    assert "Data_Entry_2017_v2020.csv sha256 9d4de640ee4f" in html and "sample" in html
    # A second commit, dirty: both listed with their counts.
    rec = ctx.runs[0]
    other = RunRecord(rec.run_dir, rec.suite, rec.run_id, rec.config,
                      {**rec.manifest, "git": {"commit": "fedcba9876543210", "dirty": True},
                       "packages": {"torch": "9.9"}, "started_at": "2030-01-02T03:04:05+00:00"})
    html = context.provenance_html([*ctx.runs[1:], other])
    n = len(ctx.runs) - 1
    assert f"0123456789ab ({n} runs)" in html and "fedcba987654 (dirty: uncommitted changes) (1 runs)" in html
    assert "torch 9.9" in html and "2030-01-02T03:04" in html


def test_sample_note_counts_from_metrics(ctx):
    note = context.sample_note_html(ctx.sample_runs)
    runs = ctx.sample_runs
    means = [r.metrics["test"]["mean_auc"] for r in runs]
    below = sum(m < 0.5 for m in means)
    assert f"{below} of {len(means)} run(s) below 0.5" in note
    # The shared message, escaped, from facts read here from the runs' own files.
    metrics = [json.loads((r.run_dir / "metrics.json").read_text()) for r in runs]
    configs = [json.loads((r.run_dir / "config.json").read_text()) for r in runs]
    profiles = {json.loads((r.run_dir / "manifest.json").read_text())["suite"]["profile"] for r in runs}
    steps = [(m["steps"], c["optim"]["batch_size"] * c["optim"]["accum_steps"]) for m, c in zip(metrics, configs)
             if "steps" in m]
    facts = SampleFacts(n_runs=len(runs), profiles=tuple(sorted(profiles)),
                        image_sizes=tuple(c["data"]["image_size"] for c in configs),
                        pretrained=tuple(c["model"]["pretrained"] or "none" for c in configs),
                        steps=tuple(s for s, _ in steps), images_seen=tuple(s * b for s, b in steps),
                        epochs=tuple(m.get("epochs_run", c["optim"]["epochs"]) for m, c in zip(metrics, configs)),
                        mean_aucs=tuple(means), test_images=tuple(m["test"]["n_images"] for m in metrics),
                        test_patients=tuple(m["test"]["n_patients"] for m in metrics))
    for line in sample_note_lines(facts):
        assert html.escape(line) in note
    assert "500 &#x27;Pneumonia&#x27;" in note and "'" not in note
    in_banner = sample_note_lines(dataclasses.replace(facts, n_total=len(ctx.runs), sanity=bool(ctx.sanity_runs)))
    assert all(html.escape(line) in ctx.banner_html() for line in in_banner)


def test_short_names_show_what_differs(ctx):
    names = runnames.short_names([r for r in ctx.runs if r.suite == "ablations"])
    by_head = {r.cfg("model.head"): names[r.run_id] for r in ctx.runs if r.suite == "ablations"}
    assert by_head["attention"] == "mobilenet_v1 · attention"
    assert len(set(names.values())) == len(names)


def test_ablation_tables_format_p_and_withhold_few(ctx):
    abl = ctx.analysis.ablations(n_bootstrap=50)
    details = dict(tables.ablation_detail_view(abl))
    assert set(details) == {"data.grayscale: gamma vs identity", "model.head: attention vs gap"}
    pcols = [c for c in abl.columns if c.startswith("p_") or c == "p"]
    html = "".join(s.to_html() for s in details.values())
    assert (abl[pcols].to_numpy(dtype=float) < 0.001).any() == ("&lt; 0.001" in html)
    for s in details.values():
        for c in s.data.columns:
            if c.startswith("p"):
                assert not any(v in ("0.000", "-0.000") for v in s.data[c])
    few = {(f, a, b, "Atelectasis") for f, a, b in abl[["factor", "value_a", "value_b"]].drop_duplicates()
           .itertuples(index=False)}
    data = dict(tables.ablation_detail_view(abl, few))["model.head: attention vs gap"].data
    assert data.loc["Atelectasis"].iloc[0] == "too few test cases"
    fig = figures.forest_plot(abl, few)
    assert len(fig.axes) == 2 and all(any(t.get_text() == "too few" for t in ax.texts) for ax in fig.axes)
    assert _outside_every_axes(fig.legends[0], fig)
    verdicts = abl[(abl["label"] != "Atelectasis")]["verdict"].isin(["better", "worse"]).sum() \
        if "verdict" in abl else None
    filled = sum(1 for ax in fig.axes for ln in ax.lines
                 if ln.get_marker() in ("o", "D") and ln.get_markerfacecolor() != (1.0, 1.0, 1.0, 1.0)
                 and to_hex(ln.get_markerfacecolor()) != "#ffffff")
    if verdicts is not None:
        assert filled == verdicts


def test_localization_note_on_coarse_heatmaps(ctx, tmp_path):
    rec = tables.localized_runs(ctx)[0]
    clone = RunRecord(tmp_path, rec.suite, rec.run_id, rec.config.replace(**{"data.image_size": 64}))
    (tmp_path / "localization.json").write_text(json.dumps({"heatmap_shape": [2, 2], "n_boxes": 60}))
    note = tables.localization_note(clone)
    assert "2 x 2 cells" in note and "64-px input" in note and "Only 60 ground-truth boxes" in note
    (tmp_path / "localization.json").write_text(json.dumps({"heatmap_shape": [32, 32], "n_boxes": 984}))
    assert "2 x 2" not in tables.localization_note(clone) and "Only" not in tables.localization_note(clone)


# --------------------------------------------------------------------------------------------- figures


def test_roc_figure_colours_by_backbone_and_gives_each_auc(ctx):
    runs = [r for r in ctx.runs if r.cfg("data.label_set") == "chestxray8"]
    names = runnames.short_names(runs)
    fig = figures.roc_curves(runs, names=names)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [formatting.label_name(lab) for lab in CHESTXRAY8]
    for ax, lab in zip(panels, CHESTXRAY8):
        assert len(ax.lines) == len(runs) + 1
        assert [to_hex(ln.get_color()) for ln in ax.lines[1:]] == [
            styles.backbone_colour(r.cfg("model.backbone")) for r in runs]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts == [f"{names[r.run_id]}  {r.metrics['test']['per_label'][lab]['auc']:.3f}" for r in runs]


def test_palette_stays_distinct_past_ten():
    for n in (3, 10, 16, 25):
        assert len({to_hex(c) for c in figures.palette(n)}) == n


def _cmp(paper_in: bool = True) -> pd.DataFrame:
    rows = []
    for rid, label_set, labels in (("a", "chestxray8", CHESTXRAY8), ("b", "chestxray8", CHESTXRAY8),
                                   ("c", "chestxray14", CHESTXRAY14)):
        for i, lab in enumerate([*labels, "mean"]):
            ours = 0.55 + 0.01 * i
            rows.append({"run_id": rid, "label_set": label_set, "setting": f"S-{rid}", "label": lab, "ours": ours,
                         "ours_ci_lo": ours - 0.05, "ours_ci_hi": ours + 0.05, "paper": 0.7 + 0.005 * i})
    return pd.DataFrame(rows)


def test_ours_vs_paper_has_no_point_labels_and_a_panel_per_run():
    cmp = _cmp()
    counts = {"c": {"Hernia": (2.0, 263.0)}}
    fig = figures.ours_vs_paper(cmp, {"a": "A", "b": "B", "c": "C"}, counts)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["C", "A", "B"]  # label sets in order
    for ax, rid in zip(panels, ["c", "a", "b"]):
        g = cmp[cmp["run_id"] == rid]
        diamonds = [ln for ln in ax.lines if ln.get_marker() == "D"]
        assert sorted(float(d.get_xdata()[0]) for d in diamonds) == pytest.approx(sorted(g["paper"]))
        dots = [ln for ln in ax.lines if ln.get_marker() == "o"]
        few = 1 if rid == "c" else 0
        assert len(dots) == len(g) - few
        assert [t.get_text() for t in ax.texts] == ["too few"] * few  # the only text: no per-point labels
    (legend,) = fig.legends
    assert _outside_every_axes(legend, fig)


def test_mean_auc_plot_ranks_within_label_set():
    lb = pd.DataFrame({"run_id": list("abcde"), "backbone": ["resnet50", "alexnet", "resnet50", "vgg16", "x"],
                       "label_set": ["chestxray8", "chestxray14", "chestxray8", "chestxray14", "chestxray8"],
                       "mean_auc": [0.6, 0.7, 0.8, 0.65, 0.9], "mean_auc_ci_lo": [0.55, 0.6, 0.7, 0.6, 0.45],
                       "mean_auc_ci_hi": [0.65, 0.8, 0.9, 0.7, 1.0]})
    fig = figures.mean_auc_plot(lb)
    ticks = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    # e has the best mean but its interval reaches 0.5: listed last, not ranked
    assert ticks == [["1. b", "2. d"], ["1. c", "2. a", "at chance: e"]]
    dots = [ln for ln in fig.axes[1].lines if ln.get_marker() == "o"]
    assert [to_hex(d.get_color()) for d in dots] == [styles.backbone_colour(b) for b in ("resnet50", "resnet50", "x")]


def test_history_groups_seeds_of_a_configuration_into_one_line_and_band(tmp_path, store_factory):
    root = tmp_path / "runs"
    for seed in (0, 1, 2):
        store_factory.write_run(root, "s", {"data.image_size": 64, "seed": seed}, strength=1.0)
    store_factory.write_run(root, "s", {"data.image_size": 64, "model.backbone": "alexnet"}, strength=1.0)
    runs = context.ReportContext.load(root).runs
    fig = figures.history_plot(runs)
    (ax,) = [a for a in fig.axes if a.get_title(loc="left")]
    assert ax.get_title(loc="left") == "block: main"  # one panel per suite block
    assert len(ax.lines) == 2  # one line per configuration, not per run
    assert len(ax.collections) == 1  # a band only where there are several seeds
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("(3 seeds)" in t for t in labels) == 1
    assert {to_hex(ln.get_color()) for ln in ax.lines} == {styles.backbone_colour("alexnet"),
                                                           styles.backbone_colour(RunConfig().model.backbone)}


def _subgroups() -> pd.DataFrame:
    rows = []
    for attr, groups in (("sex", ["F", "M"]), ("view", ["AP", "PA"])):
        for g, lab in product(groups, ["Atelectasis", "Effusion", "Hernia"]):
            few = lab == "Hernia" and g in ("F", "AP")
            auc = 0.6 + 0.1 * (g in ("M", "PA")) + 0.05 * (lab == "Effusion")
            rows.append({"attribute": attr, "group": g, "label": lab, "auc": np.nan if few else auc,
                         "ci_low": auc - 0.1, "ci_high": auc + 0.1, "n_pos": 1 if few else 30, "n_neg": 40,
                         "reason": "1 positive" if few else "", "reference": groups[1],
                         "gap": np.nan if g == groups[1] else -0.1, "gap_ci_low": -0.2, "gap_ci_high": 0.0})
    return pd.DataFrame(rows)


def test_subgroup_figure_and_tables():
    df = _subgroups()
    fig = figures.subgroup_plot(df)
    assert [ax.get_title() for ax in fig.axes] == ["sex", "view"]
    for ax in fig.axes:
        points = sum(len(c.get_offsets()) if hasattr(c, "get_offsets") else 0 for c in ax.collections)
        drawn = sum(len(ln.get_xdata()) for ln in ax.lines if ln.get_marker() not in ("None", "", None))
        assert drawn == 5 and points >= 0  # 6 (group, label) rows minus the one with too few
        assert _outside_every_axes(ax.get_legend(), fig)
        markers = [ln.get_marker() for ln in ax.lines if ln.get_marker() not in ("None", "", None)]
        assert len(set(markers)) == 2  # groups told apart by marker (grey shades: no backbone's colour)
    summary = tables.subgroup_summary({"r": df}, {"r": "run r"}).data
    # Common labels with enough cases in both groups: Atelectasis and Effusion (Hernia is too few in F).
    assert summary.loc[0, "sex: F"] == f"{np.mean([0.6, 0.65]):.3f}" and summary.loc[0, "sex: M"] == "0.725"
    assert summary.loc[0, "sex: gap"].startswith("0.100") and "(2 labels)" in summary.loc[0, "sex: gap"]
    view = tables.subgroup_view(df).data
    assert view.loc["Hernia", "sex: F"].startswith("too few") and "gap -0.10" in view.loc["Atelectasis", "sex: F"]
    assert "sex: M (reference)" in view.columns


def test_underdiagnosis_figure_leaves_out_small_groups():
    df = pd.DataFrame({"run_id": ["a"] * 4, "attribute": ["all", "sex", "sex", "age"], "group": ["all", "F", "M", "80+"],
                       "rate": [0.1, 0.2, 0.05, 0.5], "ci_low": [0.05, 0.1, 0.0, 0.1], "ci_high": [0.2, 0.3, 0.1, 0.9],
                       "n_finding": [100, 60, 40, 4], "n_underdiagnosed": [10, 12, 2, 2], "reason": [""] * 4})
    fig = figures.underdiagnosis_plot(df, {"a": "A"})
    assert [ax.get_title() for ax in fig.axes] == ["sex"]  # 'all' is not a subgroup; 80+ has 4 findings
    xs = sorted(x for ln in fig.axes[0].lines for x in ln.get_xdata())
    assert xs == pytest.approx([0.05, 0.2])
    assert _outside_every_axes(fig.legends[0], fig)
    view = tables.underdiagnosis_view(df, {"a": "A"}).data
    assert view.loc["age: 80+", "A"].startswith("too few") and view.loc["all test images", "A"].startswith("0.100")
    assert tables.underdiagnosis_note(df) == ""
    # Every rate 0 (a near-chance model calls nothing normal): a sentence, and no interval printed as [0, 0].
    zero = df.assign(rate=0.0, ci_low=0.0, ci_high=0.0, n_underdiagnosed=0)
    assert "every rate is 0" in tables.underdiagnosis_note(zero)
    assert tables.underdiagnosis_view(zero, {}).data.loc["sex: F", "a"] == "0.000\n(0 of 60)"


def test_reliability_diagram_pools_bins_by_count():
    cal = pd.DataFrame({"label": ["A", "A", "B", "B"], "brier": [0.1, 0.1, 0.3, 0.3], "ece": [0.02, 0.02, 0.06, 0.06],
                        "bin": [0, 1, 0, 1], "bin_lo": [0.0, 0.5, 0.0, 0.5], "bin_hi": [0.5, 1.0, 0.5, 1.0],
                        "n": [10, 0, 30, 20], "mean_score": [0.05, np.nan, 0.15, 0.7],
                        "frac_pos": [0.1, np.nan, 0.2, 0.75]})
    fig = figures.reliability_diagram({"run x": cal})
    ax = fig.axes[0]
    pts = ax.collections[0].get_offsets()
    # bin 0: (10 * 0.05 + 30 * 0.15) / 40, (10 * 0.1 + 30 * 0.2) / 40; bin 1: label B only.
    assert np.asarray(pts) == pytest.approx(np.array([[0.125, 0.175], [0.7, 0.75]]))
    assert "Brier 0.200" in ax.get_title() and "ECE 0.040" in ax.get_title()
    summary = tables.calibration_summary({"r": cal}, {"r": "R"}).data
    assert summary.loc[0, "worst ECE"] == "0.060 (B)" and summary.loc[0, "mean Brier"] == "0.200"


def test_split_tables_read_metrics_json_blocks_and_name_runs_without(tmp_path, store_factory):
    root = tmp_path / "runs"
    with_blocks, _ = store_factory.write_run(root, "s", {"data.image_size": 64}, strength=1.0, extended=True)
    without, _ = store_factory.write_run(root, "s", {"data.image_size": 64, "model.head": "attention"}, strength=1.0)
    c = context.ReportContext.load(root)
    sub, note = tables.split_tables(c.runs, "subgroups", "subgroup_table")
    assert set(sub) == {with_blocks}  # nothing is recomputed in the reports
    assert without in note and "no &#x27;subgroups&#x27; block" in note  # escaped
    stored = json.loads((root / "s" / with_blocks / "metrics.json").read_text())["test"]["subgroups"]["auc"]
    first = stored[0]
    row = sub[with_blocks].iloc[0]
    assert (row["attribute"], row["group"], row["label"]) == (first["attribute"], first["group"], first["label"])


def test_empty_inputs_draw_a_sentence():
    for fig in (figures.forest_plot(pd.DataFrame(columns=["factor", "value_a", "value_b", "label"])),
                figures.ours_vs_paper(pd.DataFrame()), figures.reliability_diagram({}),
                figures.mean_auc_plot(pd.DataFrame())):
        assert len(fig.axes) == 1 and fig.axes[0].texts[0].get_text().startswith("no ")


def test_dollar_signs_in_run_names_print_as_text():
    # With mathtext on, "$x_{^}$" is an invalid formula and drawing the figure raises.
    lb = pd.DataFrame({"run_id": ["a"], "label_set": ["chestxray8"], "mean_auc": [0.6], "mean_auc_ci_lo": [0.55],
                       "mean_auc_ci_hi": [0.7]})
    fig = figures.mean_auc_plot(lb, {"a": "w $x_{^}$"})
    fig.canvas.draw()
    assert fig.axes[0].get_yticklabels()[0].get_text() == "1. w $x_{^}$"


def test_expert_results_read_from_the_leaderboard_match_expert_table(ctx):
    from cxr_bench.results.expert import expert_table

    ours = tables.expert_results(ctx).set_index(["run_id", "target"]).sort_index()
    theirs = expert_table(ctx.runs).set_index(["run_id", "target"]).sort_index()
    assert list(ours.index) == list(theirs.index) and len(ours)
    for col in ("n", "expert_pos", "nih_pos", "scored_from"):
        assert list(ours[col]) == list(theirs[col]), col
    for col in ("expert_auc", "nih_auc", "nih_minus_expert"):
        np.testing.assert_allclose(ours[col].astype(float), theirs[col].astype(float), rtol=1e-9, equal_nan=True)


def _ablation_rows() -> pd.DataFrame:
    rows = []
    for factor, va, vb, deltas, verdicts in (
            ("data.grayscale", "identity", "gamma", (-0.035, 0.02, -0.01), ("worse", "no evidence", "no evidence")),
            ("model.head", "gap", "attention", (-0.139, -0.05, -0.09), ("worse", "no evidence", "worse"))):
        for lab, d, verdict in zip(("Atelectasis", "Hernia", "mean"), deltas, verdicts):
            rows.append({"factor": factor, "value_a": va, "value_b": vb, "label": lab, "delta": d,
                         "ci_lo": d - 0.01, "ci_hi": d + 0.01, "p_bootstrap": 0.01, "verdict": verdict,
                         "run_a": "a", "run_b": "b", "suite": "s", "block": "b", "seeds_a": 1, "seeds_b": 1,
                         "auc_a": 0.8, "auc_b": 0.8 + d, "interval": "patients only"})
    return pd.DataFrame(rows)


def test_ablation_heatmap_colours_only_rejected_differences_on_a_scale_centred_on_zero():
    table = _ablation_rows()
    fig = figures.ablation_heatmap(table, {("model.head", "gap", "attention", "Hernia")})
    ax = fig.axes[0]
    (im,) = ax.get_images()
    data = im.get_array()
    # rows: pairs; columns: Atelectasis, Hernia, mean
    assert list(data.mask[0]) == [False, True, True] and list(data.mask[1]) == [False, True, False]
    assert im.norm.vcenter == 0 and im.norm.vmin == pytest.approx(-0.139) and im.norm.vmax == pytest.approx(0.139)
    small, large = im.cmap(im.norm(-0.035)), im.cmap(im.norm(-0.139))
    assert np.abs(np.subtract(small, large)).max() > 0.2  # -0.035 and -0.139 no longer look alike
    assert "few" in [t.get_text() for t in ax.texts]  # too few cases: said, not coloured
    html = tables.ablation_summary_view(table).to_html()
    assert html.count("background-color") == 1  # only the pair whose mean difference the test rejects
