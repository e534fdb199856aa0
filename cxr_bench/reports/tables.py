"""Tables for the report notebooks (and the CLI's readable output), built from saved artifacts only.

Each function takes the objects of :mod:`cxr_bench.results` and returns a pandas ``Styler`` (or HTML)
ready to display: labels in the paper's order, AUCs with three decimals, CIs as ``[lo, hi]``, p-values
below 0.001 as ``< 0.001``. The notebooks call these and nothing else, so a report is as testable as the
library.

Everything a report prints passes through :func:`styled` or :func:`esc`: run names, error messages, weights
file names and suite names are text from the run store, and a report is HTML opened in a browser, so every
string is HTML-escaped before it reaches a cell, an index, a caption or a sentence (pandas' Styler does not
escape by default). Numbers are formatted to strings first and colours come from separate numeric maps, so
escaping never meets a formatter.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from ..data.labels import CHESTXRAY14
from ..errors import CxrBenchError, RunStoreError
from ..results.compare import ablation_table, compare_reference, pair_summary
from ..results.expert import expert_table
from ..results.leaderboard import Leaderboard, build_leaderboard
from ..results.runs import RunRecord, load_runs

CMAP = "RdYlGn"  # AUC colour scale (low red, high green), shared by tables and heatmaps
DELTA_CMAP = "RdBu"
# Fewest positives (and negatives) for which a report prints an AUC. With 10 positives the 95% CI of an
# AUC of 0.75 is about +-0.18 wide even against unlimited negatives (Hanley & McNeil 1982, Radiology 143:29,
# eq. 2), so a smaller count says nothing a reader could use; below it the report says "too few" instead.
MIN_CASES = 10
# Factors that name a run inside a group of runs, most telling first (see short_names).
NAME_FACTORS: tuple[tuple[str, str], ...] = (
    ("model.backbone", ""), ("model.head", ""), ("data.label_set", ""), ("data.grayscale", ""),
    ("data.channels", ""), ("loss.name", ""), ("model.pretrained", "weights "),
    ("model.freeze_backbone", "frozen "), ("data.image_size", "px "), ("data.split", "split "),
    ("seed", "seed "),
)


# ----------------------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    """``value`` as HTML text: every ``<``, ``>``, ``&`` and quote escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(v: Any, nd: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return "" if math.isnan(f) else f"{f:.{nd}f}"


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ci(lo: Any, hi: Any, nd: int = 3) -> str:
    a, b = _fmt(lo, nd), _fmt(hi, nd)
    return f"[{a},\u00a0{b}]" if a and b else ""


def fmt_p(p: Any) -> str:
    """A p-value for a table: three decimals, ``< 0.001`` below that (a printed 0.000 reads as impossible)."""
    f = _num(p)
    if not math.isfinite(f):
        return ""
    return "< 0.001" if f < 0.001 else f"{f:.3f}"


def too_few(n_pos: Any, n_neg: Any = None, minimum: int = MIN_CASES) -> bool:
    """True when an AUC from ``n_pos`` positives and ``n_neg`` negatives would be noise (see MIN_CASES)."""
    p, n = _num(n_pos), _num(n_neg) if n_neg is not None else math.inf
    return not (p >= minimum and n >= minimum)


def too_few_text(n_pos: Any, n_neg: Any = None) -> str:
    p, n = _num(n_pos), _num(n_neg) if n_neg is not None else math.inf
    parts = []
    if not p >= MIN_CASES:
        parts.append(f"{int(p) if math.isfinite(p) else 0}\u00a0pos.")
    if not n >= MIN_CASES:
        parts.append(f"{int(n) if math.isfinite(n) else 0}\u00a0neg.")
    return "too few\n" + ", ".join(parts)


def _escape_index(idx: pd.Index) -> pd.Index:
    if isinstance(idx, pd.MultiIndex):
        return pd.MultiIndex.from_tuples([tuple(esc(x) if isinstance(x, str) else x for x in t) for t in idx],
                                         names=[esc(n) if isinstance(n, str) else n for n in idx.names])
    return pd.Index([esc(x) if isinstance(x, str) else x for x in idx],
                    name=esc(idx.name) if isinstance(idx.name, str) else idx.name)


def escape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every string cell, index label and column label HTML-escaped."""
    out = df.copy()
    for j in range(out.shape[1]):
        col = out.iloc[:, j]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            out.isetitem(j, col.astype(object).map(lambda v: esc(v) if isinstance(v, str) else v))
    out.index = _escape_index(out.index)
    out.columns = _escape_index(out.columns)
    return out


TABLE_CSS = [
    {"selector": "", "props": "font-size: 0.85em; border-collapse: collapse; margin-bottom: 10px;"},
    {"selector": "td, th", "props": "padding: 2px 6px; white-space: pre-line; text-align: left;"},
    {"selector": "td", "props": "font-variant-numeric: tabular-nums;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: bold; color: #333;"},
]
# Column headers written bottom-to-top, so a table with a column per label stays within the page.
VERTICAL_HEADER = ("writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; "
                   "vertical-align: bottom;")


def gradient_css(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """CSS background (and a readable text colour) per value on ``cmap``; NaN gets no style (pandas'
    background_gradient paints NaN black)."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    v = np.asarray(values, dtype=float)
    out = np.full(v.shape, "", dtype=object)
    ok = np.isfinite(v)
    if ok.any():
        rgba = cm(np.clip((v[ok] - vmin) / (vmax - vmin), 0.0, 1.0))
        lum = 0.2126 * rgba[:, 0] + 0.7152 * rgba[:, 1] + 0.0722 * rgba[:, 2]
        out[ok] = [f"background-color: {matplotlib.colors.to_hex(c)}; color: {'#000' if y > 0.45 else '#fff'}"
                   for c, y in zip(rgba, lum)]
    return out


def styled(df: pd.DataFrame, caption: str = "", *, hide_index: bool = False,
           gradients: Sequence[tuple[Any, np.ndarray, str, float, float]] = (),
           greyed: np.ndarray | None = None, vertical: Sequence[str] = ()) -> Styler:
    """The one way a report shows a table: ``df`` with every string escaped, an escaped caption, compact
    CSS, and background colours from numeric maps (``(columns or None, values, cmap, vmin, vmax)``, values
    shaped like those columns; NaN: no colour). ``greyed`` (a boolean array of ``df``'s shape) greys out
    cells whose number would mislead (too few cases); ``vertical`` columns get bottom-to-top headers."""
    st = escape_frame(df).style.set_table_styles(TABLE_CSS)
    css = np.full(df.shape, "", dtype=object)
    for subset, values, cmap, vmin, vmax in gradients:
        idx = list(range(df.shape[1])) if subset is None else [list(df.columns).index(c) for c in subset]
        block = gradient_css(np.asarray(values, dtype=float).reshape(df.shape[0], len(idx)), cmap, vmin, vmax)
        for k, j in enumerate(idx):
            css[:, j] = np.where(block[:, k] != "", block[:, k], css[:, j])
    if greyed is not None:
        css = np.where(np.asarray(greyed, dtype=bool),
                       "background-color: #eeeeee; color: #666666; font-style: italic", css)
    if (css != "").any():
        st = st.apply(lambda _: css, axis=None)
    if vertical:
        cols = [j for j, c in enumerate(df.columns) if c in set(vertical)]
        heads = [{"selector": f"th.col_heading.col{j}", "props": VERTICAL_HEADER} for j in cols]
        st = st.set_table_styles(heads, overwrite=False)
    if caption:
        st = st.set_caption(esc(caption))
    if hide_index:
        st = st.hide(axis="index")
    return st


def message(text: str) -> str:
    """A one-sentence note where a section has nothing (or nothing meaningful) to show, as HTML."""
    return f'<p style="color:#555;font-style:italic">{esc(text)}</p>'


# ----------------------------------------------------------------------------------------- run names


def run_label(row: dict[str, Any] | pd.Series | RunRecord) -> str:
    """A full human name for a run: the factors that usually differ inside a suite."""
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


def _show_value(prefix: str, value: Any) -> str:
    if prefix == "frozen ":
        return "frozen" if value else "fine-tuned"
    if prefix == "px ":
        return f"{value} px"
    if prefix == "weights ":
        return "random init" if value in (None, "", "none") else f"weights {Path(str(value)).name}"
    return f"{prefix}{value}"


def short_names(runs: Sequence[RunRecord]) -> dict[str, str]:
    """Run id -> a short name within ``runs``: the backbone, plus each factor of :data:`NAME_FACTORS` on
    which the run departs from the most common value among ``runs`` (so a replication run reads
    "resnet50" and its ablation variant "mobilenet_v1 · gamma"). Names that still collide get the run id."""
    if not runs:
        return {}
    modal = {k: Counter(repr(r.cfg(k)) for r in runs).most_common(1)[0][0] for k, _ in NAME_FACTORS}
    names = {}
    for r in runs:
        parts = [_show_value(pre, r.cfg(k)) for k, pre in NAME_FACTORS
                 if k == "model.backbone" or repr(r.cfg(k)) != modal[k]]
        names[r.run_id] = " · ".join(parts)
    counts = Counter(names.values())
    return {rid: (f"{n} ({rid})" if counts[n] > 1 else n) for rid, n in names.items()}


def label_set_of(rec: RunRecord) -> str:
    return str(rec.cfg("data.label_set") or "?")


def by_label_set(runs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs grouped by label set (ChestX-ray8 before 14), because AUCs are only ranked within a label set:
    a mean over 8 labels and a mean over 14 are different quantities."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(label_set_of(r), []).append(r)
    return dict(sorted(groups.items()))


def all_label_counts(ctx: ReportContext, split: str = "test") -> dict[str, dict[str, tuple[float, float]]]:
    """Run id -> :func:`label_counts` for every run of the context."""
    return {r.run_id: label_counts(r, split) for r in ctx.runs}


def label_counts(rec: RunRecord, split: str = "test") -> dict[str, tuple[float, float]]:
    """Label -> (positives, negatives) of a run's ``split`` as its metrics.json records them."""
    try:
        block = rec.metrics.get(split) or {}
    except RunStoreError:  # a run without readable metrics has no counts
        return {}
    n = _num(block.get("n_images"))
    out = {}
    for lab, m in (block.get("per_label") or {}).items():
        if isinstance(m, dict):
            p = _num(m.get("n_pos"))
            out[lab] = (p, n - p if math.isfinite(n) else math.nan)
    return out


# ----------------------------------------------------------------------------------------- context


class ReportContext:
    """Everything a report reads, loaded once: the runs of a store (optionally one suite) and, when a
    section asks for it, the leaderboard built from them (building it scores every run's expert labels,
    calibration and subgroups, which the ablation report never shows)."""

    def __init__(self, runs_dir: str | Path, suite: str | None, runs: list[RunRecord],
                 leaderboard: Leaderboard | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.suite = suite or None
        self.runs = runs
        self._leaderboard = leaderboard

    def __repr__(self) -> str:
        return f"ReportContext({self.runs_dir}, suite={self.suite!r}, {len(self.runs)} runs)"

    @classmethod
    def load(cls, runs_dir: str | Path, suite: str | None = None) -> ReportContext:
        return cls(Path(runs_dir), suite, load_runs(runs_dir, suite or None))

    @property
    def leaderboard(self) -> Leaderboard:
        if self._leaderboard is None:
            self._leaderboard = build_leaderboard(self.runs_dir, self.suite)
        return self._leaderboard

    @cached_property
    def n_not_completed(self) -> int:
        """Runs of the store (this suite) that failed, are unfinished or are damaged."""
        return len(load_runs(self.runs_dir, self.suite, include_incomplete=True)) - len(self.runs)

    @property
    def table(self) -> pd.DataFrame:
        return self.leaderboard.table

    @property
    def sample_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.is_bundled_sample]

    def run(self, run_id: str) -> RunRecord:
        return next(r for r in self.runs if r.run_id == run_id)

    def banner_html(self) -> str:
        """A loud warning when runs trained on the bundled sample, with the measured reason their numbers
        are near chance (:func:`sample_note_html`); a one-line scope note in every case."""
        scope = (f"Run store <code>{esc(self.runs_dir)}</code>"
                 + (f", suite <b>{esc(self.suite)}</b>" if self.suite else ", all suites")
                 + f": {len(self.runs)} completed run(s), {self.n_not_completed} not completed.")
        sample = self.sample_runs
        if not sample:
            return f"<p>{scope}</p>"
        return (
            '<div style="border:3px solid #b00020;background:#fdecea;padding:12px 16px;margin:8px 0;'
            'font-size:1.05em">'
            f"<b>&#9888; NOT COMPARABLE WITH THE PAPERS.</b> {len(sample)} of {len(self.runs)} run(s) were "
            "trained and tested on the <b>bundled sample</b> (1,673 NIH images stored at 256 px, profile "
            f"{esc(', '.join(_profiles(sample)))}): a check that the pipeline runs end to end. Their AUCs, "
            "intervals and p-values describe a few hundred test images and say nothing about the published "
            "results; run the suite with <code>--data-root</code> on the full NIH release for a replication."
            f"{sample_note_html(sample)}</div><p>{scope}</p>"
        )

    def footer_html(self) -> str:
        return provenance_html(self.runs)


def _profiles(runs: Iterable[RunRecord]) -> list[str]:
    out = set()
    for r in runs:
        s = r.manifest.get("suite")
        out.add(str(s.get("profile") or "?") if isinstance(s, dict) else "?")
    return sorted(out)


def _range(values: Iterable[Any], unit: str = "") -> str:
    vals = sorted({v for v in (_num(x) for x in values) if math.isfinite(v)})
    if not vals:
        return "?"
    def f(v: Any) -> str:
        return f"{v:g}{unit}"

    return f(vals[0]) if len(vals) == 1 else f"{f(vals[0])}-{f(vals[-1])}"


def sample_note_html(runs: Sequence[RunRecord]) -> str:
    """Why the bundled-sample runs score near chance, from their own records: how many are below 0.5 or
    have a whole CI below it, and the four causes with this store's numbers (initialisation, image size,
    optimizer steps, the sample's size and bias)."""
    if not runs:
        return ""
    means, below, ci_below, ci_above = [], 0, 0, 0
    for r in runs:
        if not _has_metrics(r):
            continue
        t = r.metrics.get("test") or {}
        m = _num(t.get("mean_auc"))
        ci = t.get("mean_auc_ci") or [math.nan, math.nan]
        if math.isfinite(m):
            means.append(m)
            below += m < 0.5
        ci_below += _num(ci[1]) < 0.5
        ci_above += _num(ci[0]) > 0.5
    pretrained = {r.cfg("model.pretrained") for r in runs}
    init = ("random initialisation (no ImageNet weights)" if pretrained <= {None, "", "none"}
            else "ImageNet weights for some runs, random initialisation for the others"
            if {None, "", "none"} & pretrained else "ImageNet weights")
    steps = [_num(r.metrics.get("steps")) if _has_metrics(r) else math.nan for r in runs]
    batch = [_num(r.cfg("optim.batch_size", math.nan)) * _num(r.cfg("optim.accum_steps", 1)) for r in runs]
    seen = [s * b for s, b in zip(steps, batch)]
    n_test = [_num((r.metrics.get("test") or {}).get("n_images")) if _has_metrics(r) else math.nan
              for r in runs]
    # No run reaching a mean AUC of 0.6, or any run confidently *below* chance, is a pipeline that has not
    # learned the findings: an interval above 0.5 next to one below it reflects the sample, not skill.
    at_chance = bool(means) and (max(means) < 0.6 or ci_below > 0)
    verdict = ""
    if means:
        verdict = (f"Test mean AUC {min(means):.2f}-{max(means):.2f}: {below} of {len(means)} run(s) below "
                   f"0.5, {ci_below} with the whole 95% CI below 0.5, {ci_above} with the whole CI above "
                   "0.5. ")
        if at_chance and ci_above and ci_below:
            verdict += ("Intervals wholly above and wholly below 0.5 side by side are the small, biased test "
                        "set speaking, not skill. ")
        verdict += ("These models are at chance, as expected on this sample, for known reasons:" if at_chance
                    else "Whatever they show, they are limited by:")
    heading = "Why these numbers are near chance." if at_chance else "What limits these numbers."
    steps_item = ""
    if any(math.isfinite(x) for x in steps):
        steps_item = (f"<li>{esc(_range(steps))} optimizer steps per run ({esc(_range(seen))} images seen in "
                      "training), where the papers train for tens of thousands;</li>")
    return (
        f'<p style="margin:8px 0 0 0"><b>{heading}</b> {esc(verdict)}</p><ul style="margin:4px 0 0 0">'
        f"<li>{esc(init)}: the network starts knowing nothing about images;</li>"
        f"<li>{esc(_range((r.cfg('data.image_size') for r in runs), ' px'))} inputs (the papers: 224-1024 "
        "px), where small findings (nodules, pneumothorax) are a pixel or two;</li>"
        f"{steps_item}"
        f"<li>a small, biased sample: {esc(_range(n_test))} test images, a few positives for rare labels, "
        "and 1,000 of the 1,673 images are 500 'Pneumonia' + 500 'No Finding' from a single source, so a "
        "model can learn the source rather than the findings.</li></ul>"
        "<p style=\"margin:4px 0 0 0\">A pipeline that learns shows it on data made for that check (the "
        "phantom releases with planted lesions), not here.</p>"
    )


def _has_metrics(r: RunRecord) -> bool:
    try:
        return bool(r.metrics)
    except RunStoreError:
        return False


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def provenance_html(runs: Sequence[RunRecord]) -> str:
    """A footer from the runs' manifest.json: code commit and dirty flag, package versions, when the runs
    ran, profile, data hashes, machine. Values that differ between runs are all listed with their counts,
    so a report mixing two commits says so."""

    def tally(values: Iterable[str]) -> str:
        c = Counter(values)
        if not c:
            return "unknown"
        if len(c) == 1:
            return esc(next(iter(c)))
        return "; ".join(f"{esc(v)} ({n} runs)" for v, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    commits: list[str] = []
    profiles: list[str] = []
    data: list[str] = []
    caches: list[str] = []
    machines: list[str] = []
    dates: list[str] = []
    versions: dict[str, list[str]] = {}
    for r in runs:
        m = r.manifest
        g = _dict(m.get("git"))
        commit = str(g.get("commit") or "unknown")[:12]
        dirty = g.get("dirty")
        commits.append(f"{commit}" + (" (dirty: uncommitted changes)" if dirty else "" if dirty is False
                                      else " (dirty flag unknown)"))
        for pkg, ver in _dict(m.get("packages")).items():
            versions.setdefault(str(pkg), []).append(str(ver))
        py = m.get("python")
        if isinstance(py, dict) and py.get("version"):
            versions.setdefault("python", []).append(str(py["version"]))
        profiles.extend(_profiles([r]))
        d = _dict(m.get("data"))
        hashes = _dict(d.get("file_hashes"))
        entry = next((f"{k} sha256 {str(v)[:12]}" for k, v in sorted(hashes.items()) if "Data_Entry" in k),
                     "no metadata hash")
        where = "bundled sample" if r.is_bundled_sample else f"root {d.get('root') or '?'}"
        data.append(f"{entry}, {where}")
        caches.append(str(m.get("cache_key") or "not recorded")[:12])
        hw = _dict(m.get("hardware"))
        gpus = hw.get("gpus") or []
        machines.append(f"{hw.get('cpu_model', '?')} x{hw.get('cpu_count', '?')}"
                        + (f", {len(gpus)} GPU(s)" if gpus else ", no GPU") if hw else "unknown")
        for key in ("started_at", "created_at", "ended_at", "updated_at"):
            if m.get(key):
                dates.append(str(m[key]))
    vers = ", ".join(f"{esc(k)} {tally(v)}" for k, v in sorted(versions.items())) or "unknown"
    when = f"{esc(min(dates)[:16])} to {esc(max(dates)[:16])} UTC" if dates else "unknown"
    rendered = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [("code", tally(commits)), ("runs ran", when), ("profile", tally(profiles)), ("data", tally(data)),
            ("image cache key", tally(caches)), ("machine", tally(machines)), ("versions", vers),
            ("report rendered", esc(rendered))]
    body = "".join(f'<tr><th style="text-align:left;padding-right:12px;vertical-align:top">{k}</th>'
                   f'<td style="text-align:left">{v}</td></tr>' for k, v in rows)
    return ('<hr><div style="font-size:0.8em;color:#444"><b>Provenance</b> (from the manifest.json of the '
            f"{len(runs)} run(s) shown)<table>{body}</table></div>")


# ----------------------------------------------------------------------------------------- rankings


def ranking_tables(ctx: ReportContext) -> list[tuple[str, Styler]]:
    """One table per label set, runs ranked by mean test AUC within it: rank, run, id, mean with CI, one
    AUC per label (greyed ``too few`` where the test set has fewer than :data:`MIN_CASES` positives or
    negatives for that label)."""
    out = []
    for label_set, runs in by_label_set(ctx.runs).items():
        names = short_names(runs)
        rows, colours, grey = [], [], []
        labels = [lab for lab in CHESTXRAY14 if any(lab in r.labels for r in runs)]
        for r in runs:
            t = r.metrics.get("test") or {}
            per = t.get("per_label") or {}
            counts = label_counts(r)
            ci = t.get("mean_auc_ci") or [None, None]
            row: dict[str, Any] = {"run": names[r.run_id], "run id": r.run_id,
                                   "mean AUC": _fmt(t.get("mean_auc")), "95% CI": _ci(*ci[:2])}
            col = [math.nan, math.nan, _num(t.get("mean_auc")), math.nan]
            g = [False] * 4
            for lab in labels:
                auc = _num((per.get(lab) or {}).get("auc"))
                few = lab in counts and too_few(*counts[lab])
                row[lab.replace("_", " ")] = (too_few_text(*counts[lab]) if few else _fmt(auc))
                col.append(math.nan if few else auc)
                g.append(few)
            rows.append(row)
            colours.append(col)
            grey.append(g)
        order = np.argsort([-_num(r["mean AUC"]) if r["mean AUC"] else math.inf for r in rows], kind="stable")
        df = pd.DataFrame([rows[i] for i in order])
        df.insert(0, "rank", [str(i) for i in range(1, len(df) + 1)])
        values = np.array([[math.nan, *colours[i]] for i in order], dtype=float)
        cap = (f"{label_set}: test ROC AUC, ranked by mean AUC within this label set ({len(labels)} labels). "
               f"Greyed: fewer than {MIN_CASES} positive or negative test images, no AUC worth printing.")
        out.append((label_set, styled(df, cap, hide_index=True, gradients=[(None, values, CMAP, 0.5, 1.0)],
                                      greyed=np.array([[False, *grey[i]] for i in order], dtype=bool),
                                      vertical=[lab.replace("_", " ") for lab in labels])))
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
            "pretrained": r["pretrained"], "mean AUC": _num(r["mean_auc"]),
            "95% CI": _ci(r["mean_auc_ci_lo"], r["mean_auc_ci_hi"]),
            "params (M)": _fmt(_num(r["param_count"]) / 1e6, 2), "GMACs": _fmt(r["gmacs"], 2),
            "img/s": _fmt(r["train_images_per_s"], 1), "epochs": r["epochs"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return styled(pd.DataFrame({"": ["no completed run"]}), hide_index=True)
    df = df.sort_values(["label set", "mean AUC"], ascending=[True, False], kind="mergesort")
    df.insert(0, "rank", df.groupby("label set").cumcount() + 1)
    values = df["mean AUC"].to_numpy(dtype=float)
    df["mean AUC"] = [_fmt(v) for v in values]
    return styled(df.reset_index(drop=True), "Completed runs, ranked by mean test AUC within each label set",
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
    names = run_labels(ctx)
    out = []
    for label_set, g_ls in cmp.groupby("label_set", sort=True):
        order = [lab for lab in [*CHESTXRAY14, "mean"] if lab in set(g_ls["label"])]
        cols: dict[str, list[str]] = {}
        aucs, consistent, grey = [], [], []
        for (rid, setting), g in g_ls.groupby(["run_id", "setting"], sort=False):
            counts = label_counts(ctx.run(_first_id(rid)))
            g = g.set_index("label").reindex(order)
            verdicts = g["verdict"] if "verdict" in g else pd.Series([""] * len(order), index=order)
            n_seeds = _num(g["n_seeds"].iloc[0]) if "n_seeds" in g else 1.0
            seeds = f" ({int(n_seeds)} seeds)" if math.isfinite(n_seeds) and n_seeds > 1 else ""
            head = f"{names.get(_first_id(rid), rid)}{seeds} vs {setting}"
            few = [lab != "mean" and lab in counts and too_few(*counts[lab]) for lab in order]
            cols[f"{head}\nours [95% CI]"] = [
                too_few_text(*counts[lab]) if f else f"{_fmt(r.ours)}\n{_ci(r.ours_ci_lo, r.ours_ci_hi)}"
                for lab, f, r in zip(order, few, g.itertuples())]
            cells = []
            for f, r, v in zip(few, g.itertuples(), verdicts):
                lines = [_fmt(r.paper)]
                if not f and math.isfinite(_num(r.delta)):
                    lines.append(f"Δ {_num(r.delta):+.3f}")
                if not f and _verdict_word(v):
                    lines.append(_verdict_word(v))
                cells.append("\n".join(lines))
            cols[f"{head}\npaper (Δ)"] = cells
            aucs += [[math.nan if f else _num(v) for f, v in zip(few, g["ours"])], [math.nan] * len(order)]
            consistent += [[math.nan] * len(order),
                           [1.0 if (not f and str(v).startswith("consistent")) else math.nan
                            for f, v in zip(few, verdicts)]]
            grey += [few, [False] * len(order)]
        df = pd.DataFrame(cols, index=[lab.replace("_", " ") if lab != "mean" else "MEAN" for lab in order])
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


def ablations(ctx: ReportContext, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    return ablation_table(ctx.runs, n_bootstrap=n_bootstrap, seed=seed)


P_COLUMNS = {  # the library's p-value columns, in the order and with the names a reader sees
    "p_bootstrap": "p bootstrap", "p_bootstrap_holm": "p bootstrap\n(Holm)", "p_clustered": "p clustered",
    "p_clustered_holm": "p clustered\n(Holm)", "p_delong_image_level": "p DeLong\n(image level)",
    "p": "p", "p_holm": "p (Holm)",
}


def ablation_summary_view(table: pd.DataFrame) -> Styler:
    """One row per pair: variant - baseline mean AUC with CI, p and verdict, and how many labels the
    library's Holm-adjusted verdicts call better / worse / no evidence."""
    s = pair_summary(table)
    if s.empty:
        return styled(pd.DataFrame({"": ["no paired ablations (runs differing in exactly one factor) here"]}),
                      hide_index=True)
    df = pd.DataFrame({
        "factor": s["factor"].astype(str), "baseline": s["value_a"].astype(str),
        "variant": s["value_b"].astype(str), "mean AUC (baseline)": [_fmt(v) for v in s["mean_a"]],
        "mean AUC (variant)": [_fmt(v) for v in s["mean_b"]],
        "Δ": [f"{_num(v):+.3f}" if math.isfinite(_num(v)) else "" for v in s["delta"]],
        "95% CI of Δ": [_ci(a, b) for a, b in zip(s["ci_lo"], s["ci_hi"])],
        "p (bootstrap)": [fmt_p(p) for p in s["p"]],
    })
    if "verdict" in s:
        df["verdict"] = s["verdict"].fillna("").astype(str)
    for c in s.columns:
        if c.startswith("labels_"):
            df[c[len("labels_"):].replace("_", " ").replace("p lt 0.05", "p < 0.05") + "\n(labels)"] = \
                s[c].astype(str)
    return styled(df, "Paired ablations: variant minus baseline mean AUC on the same test images",
                  hide_index=True,
                  gradients=[(["Δ"], s["delta"].to_numpy(dtype=float), DELTA_CMAP, -0.05, 0.05)])


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
        df = pd.DataFrame({"Δ AUC": [f"{_num(v):+.3f}" if math.isfinite(_num(v)) else "" for v in g["delta"]],
                           "95% CI": [_ci(a, b) for a, b in zip(g["ci_lo"], g["ci_hi"])]},
                          index=[lab.replace("_", " ") if lab != "mean" else "MEAN" for lab in order])
        for c in pcols:
            df[P_COLUMNS[c]] = [fmt_p(v) for v in g[c]]
        if "verdict" in g:
            df["verdict"] = g["verdict"].fillna("").astype(str).to_numpy()
        is_few = [(str(factor), str(va), str(vb), lab) in few for lab in order]
        for i, f in enumerate(is_few):
            if f:
                df.iloc[i, :] = ["too few test cases"] + [""] * (df.shape[1] - 1)
        grey = np.repeat(np.array(is_few, dtype=bool)[:, None], df.shape[1], axis=1)
        delta = np.where(is_few, np.nan, g["delta"].to_numpy(dtype=float))
        head = f"{factor}: {vb} vs {va}"
        cap = f"{head}: Δ AUC = variant - baseline (paired patient-bootstrap CI)"
        if any(is_few):
            cap += f"; greyed: fewer than {MIN_CASES} positive or negative test images"
        gradient = (["Δ AUC"], delta, DELTA_CMAP, -0.05, 0.05)
        out.append((head, styled(df, cap, gradients=[gradient], greyed=grey)))
    return out


# ----------------------------------------------------------------------------------------- expert labels


def expert_results(ctx: ReportContext) -> pd.DataFrame:
    """:func:`~cxr_bench.results.expert.expert_table` of the context's runs."""
    return expert_table(ctx.runs)


def run_labels(ctx: ReportContext) -> dict[str, str]:
    names: dict[str, str] = {}
    for group in by_label_set(ctx.runs).values():
        names.update(short_names(group))
    return names


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
    df = expert_table(ctx.runs) if df is None else df
    if df.empty:
        return styled(pd.DataFrame({"": [("no test image of these runs is covered by the Google 2019 expert "
                                         "labels")]}), hide_index=True)
    ok = expert_enough(df)
    sets = {r.run_id: label_set_of(r) for r in ctx.runs}
    if not ok.any():  # every row would read 'too few': show the counts that say why, once per label set
        counts = pd.DataFrame({
            "target": df["target"].str.replace("_", " "),
            "label set": df["run_id"].map(lambda r: sets.get(r, "")), "score": df["scored_from"],
            "images": df["n"], "expert +": df["expert_pos"], "NIH +": df["nih_pos"],
        }).drop_duplicates().reset_index(drop=True)
        return styled(counts, "Why no AUC is shown: positives under each label source on the covered test "
                      f"images (at least {MIN_CASES} positives and {MIN_CASES} negatives are needed)",
                      hide_index=True)
    names = run_labels(ctx)

    def auc(v: Any, good: bool) -> str:
        return _fmt(v) if good else "too few"

    view = pd.DataFrame({
        "run": df["run_id"].map(lambda rid: names.get(rid, rid)),
        "label set": df["run_id"].map(lambda rid: sets.get(rid, "")),
        "target": df["target"].str.replace("_", " "), "score": df["scored_from"], "images": df["n"],
        "expert +": df["expert_pos"], "NIH +": df["nih_pos"],
        "AUC vs expert": [auc(v, g) for v, g in zip(df["expert_auc"], ok)],
        "AUC vs NIH": [auc(v, g) for v, g in zip(df["nih_auc"], ok)],
        "NIH - expert": [f"{_num(v):+.3f}" if g and math.isfinite(_num(v)) else "" for v, g in
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
    from ..results.localization import table4_comparison
    from ..results.references import wang2017_table4

    runs = localized_runs(ctx)
    if not runs:
        return None
    names = run_labels(ctx)
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
    df = df.map(_fmt)
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
        row: dict[str, str] = {"label": lab.replace("_", " "), "boxes": str(n_gt.get(lab, ""))}
        vals: list[float] = [math.nan, math.nan]
        for t in wide.index:
            ours = _num(wide.loc[t, lab])
            paper = _num(wide.loc[t, f"{lab} (paper)"]) if f"{lab} (paper)" in wide else math.nan
            row[f"T={t:g}\nours"] = _fmt(ours)
            row[f"T={t:g}\npaper"] = _fmt(paper)
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
    return (run_labels(ctx).get(rec.run_id, rec.run_id), styled_table, fig if fig.is_file() else None,
            localization_note(rec))


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
# a metrics.json split block -> DataFrame). A run evaluated before those blocks existed has none in its
# metrics.json; the report then computes them from the run's saved predictions and validation-chosen
# thresholds (``metrics.extra_metrics``, which reads sex, age and view from the bundled NIH metadata), says
# so, and leaves a run out with a sentence when even that is impossible (images outside the NIH metadata).


def _metrics_reader(name: str) -> Any:
    from .. import metrics

    return getattr(metrics, name, None)


_COMPUTED: dict[tuple[str, str], tuple[dict[str, Any] | None, str]] = {}


def _computed_block(rec: RunRecord, split: str) -> tuple[dict[str, Any] | None, str]:
    """``(split block with calibration and subgroups, "")`` computed from saved predictions, or
    ``(None, why not)``; cached per run directory, since three sections read it."""
    key = (str(rec.run_dir), split)
    if key not in _COMPUTED:
        extra = _metrics_reader("extra_metrics")
        try:
            if extra is None:
                raise RunStoreError("this version of cxr-bench cannot compute them")
            block = rec.metrics.get(split) or {}
            n_boot = int(rec.cfg("eval.bootstrap", 1000) or 1000)
            computed = extra(rec.predictions(split), rec.predictions("val"), n_bootstrap=n_boot, seed=0)
            _COMPUTED[key] = ({**block, **computed}, "")
        except (CxrBenchError, ValueError, KeyError) as e:
            _COMPUTED[key] = (None, str(e).splitlines()[0][:200])
    return _COMPUTED[key]


def split_tables(runs: Sequence[RunRecord], block: str, reader: str, split: str = "test", *,
                 say_computed: bool = True) -> tuple[dict[str, pd.DataFrame], str]:
    """``run id -> reader(metrics.json split block)`` for ``runs`` (``block``: ``calibration`` or
    ``subgroups``, the key the reader reads), and a note (HTML, may be empty) saying which runs' results
    were computed here from saved predictions (unless ``say_computed`` is False: a later section of the
    same report) and which runs are left out, and why."""
    fn = _metrics_reader(reader)
    if fn is None:
        return {}, message(f"This version of cxr-bench cannot read '{block}' results (no "
                           f"cxr_bench.metrics.{reader}); the section is skipped.")
    out: dict[str, pd.DataFrame] = {}
    computed, missing = [], []
    for r in runs:
        blk = (r.metrics.get(split) or {}) if _has_metrics(r) else {}
        if block not in blk:
            blk, why = _computed_block(r, split)
            if blk is None:
                missing.append(f"{r.run_id} ({why})")
                continue
            computed.append(r.run_id)
        table = fn(blk)
        if len(table):
            out[r.run_id] = table
        else:
            missing.append(f"{r.run_id} (no '{block}' results)")
    notes = []
    if computed and say_computed:
        notes.append(f"{len(computed)} of {len(runs)} run(s) were evaluated before cxr-bench recorded "
                     "subgroup and calibration results in metrics.json; theirs were computed for this report "
                     "from the saved test predictions and validation-chosen thresholds (sex, age and view "
                     "from the NIH metadata).")
    if missing:
        notes.append(f"Left out: {'; '.join(missing)}." if out else
                     f"No '{block}' results for these runs, so the section is empty: {'; '.join(missing)}.")
    return out, "".join(message(n) for n in notes)


def one_per_backbone(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """One run per backbone for a figure 'per backbone': the one with the most labels, then the one that
    departs least from the runs' common settings (the replication run, not an ablation variant)."""
    names = {}
    for group in by_label_set(runs).values():
        names.update(short_names(group))
    best: dict[str, RunRecord] = {}

    def key(r: RunRecord) -> tuple[int, int]:
        return (-len(r.labels), names.get(r.run_id, "").count(" · "))

    for r in runs:
        b = str(r.cfg("model.backbone"))
        if b not in best or key(r) < key(best[b]):
            best[b] = r
    return list(best.values())


def _usable(g: pd.DataFrame) -> pd.Series:
    return pd.Series([math.isfinite(_num(a)) and not too_few(p, n)
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
                row[f"{attr}: {grp}"] = _fmt(means[grp]) if labels else "too few"
                vals.append(means[grp])
            finite = [m for m in means.values() if math.isfinite(m)]
            row[f"{attr}: gap"] = (_fmt(max(finite) - min(finite)) + f"\n({len(labels)} labels)"
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
            auc = _num(r["auc"])
            if pd.isna(r["n_pos"]):
                cells.append("")
                vals.append(math.nan)
                gr.append(False)
            elif not math.isfinite(auc) or too_few(r["n_pos"], r["n_neg"]):
                cells.append(too_few_text(r["n_pos"], r["n_neg"]))
                vals.append(math.nan)
                gr.append(True)
            else:
                gap = _num(r.get("gap"))
                cells.append(f"{_fmt(auc)} {_ci(r['ci_low'], r['ci_high'], 2)}"
                             + (f"\ngap {gap:+.2f} {_ci(r.get('gap_ci_low'), r.get('gap_ci_high'), 2)}"
                                if math.isfinite(gap) else ""))
                vals.append(auc)
                gr.append(False)
        cols[f"{attr}: {grp}" + (" (reference)" if grp == ref else "")] = cells
        values.append(vals)
        grey.append(gr)
    view = pd.DataFrame(cols, index=[lab.replace("_", " ") for lab in order])
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
            rate = _num(r["rate"])
            count = f"({_fmt(r.get('n_underdiagnosed'), 0)} of {_fmt(r.get('n_finding'), 0)})"
            lo, hi = _num(r["ci_low"]), _num(r["ci_high"])
            if not math.isfinite(rate):
                cells.append(str(r.get("reason") or "no rate"))
            elif _num(r.get("n_finding")) < MIN_CASES:
                cells.append(f"too few\n{count}")
            elif lo == hi:  # every resample gives the same rate (0 or all): an interval would mislead
                cells.append(f"{_fmt(rate)}\n{count}")
            else:
                cells.append(f"{_fmt(rate)} {_ci(lo, hi, 2)}\n{count}")
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
        worst_text = "" if worst is None else f"{_fmt(worst['ece'])} ({_nice_label(worst['label'])})"
        rows.append({"run": names.get(rid, rid), "labels": str(len(per)),
                     "mean Brier": _fmt(pd.to_numeric(per["brier"], errors="coerce").mean()),
                     "mean ECE": _fmt(ece.mean()), "worst ECE": worst_text})
    if not rows:
        return styled(pd.DataFrame({"": ["no calibration results"]}), hide_index=True)
    return styled(pd.DataFrame(rows), "Calibration on the test set, lower is better (ECE: 15 equal-width "
                  "score bins, Guo et al. 2017)", hide_index=True)


def _nice_label(label: Any) -> str:
    return str(label).replace("_", " ")


def best_run(ctx: ReportContext, run_ids: Iterable[str]) -> str:
    """The run of ``run_ids`` with the highest test mean AUC (the first on ties or without metrics)."""
    ids = list(run_ids)

    def mean(rid: str) -> float:
        r = ctx.run(rid)
        v = _num((r.metrics.get("test") or {}).get("mean_auc")) if _has_metrics(r) else math.nan
        return v if math.isfinite(v) else -math.inf

    return max(ids, key=mean)


def stack_runs(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``run id -> table`` as one table with a ``run_id`` column."""
    frames = [t.assign(run_id=rid) for rid, t in tables.items() if t is not None and len(t)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
