"""Everything one report reads, loaded once (:class:`ReportContext`), and the boxes every report opens and
closes with: the scope line, the bundled-sample warning, the sanity check's own box and the provenance
footer.

Synthetic runs (the sanity check on a phantom release, ``data.root = "phantom:..."``) are kept apart: they
are in no ranking or table, only in :meth:`ReportContext.sanity_html`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.sample_note import SMALL_IMAGE_PX, sample_note_lines
from ..errors import RunStoreError
from ..results.leaderboard import Leaderboard, truthy
from ..results.runs import RunRecord, sample_facts
from .analysis import Analysis
from .escape import esc
from .formatting import fmt, fmt_ci, num
from .runnames import by_label_set, short_names


def synthetic_ids(table: pd.DataFrame) -> set[str]:
    """Run ids of the leaderboard rows tested on synthetic data (the phantom sanity run): the leaderboard's
    ``synthetic`` column."""
    if "synthetic" not in table.columns:
        return set()
    return set(table.loc[truthy(table["synthetic"]), "run_id"].astype(str))


class ReportContext:
    """Everything a report reads: the completed runs of a store (optionally one suite) that are tested on
    real data, the synthetic sanity runs apart, and the shared :class:`~.analysis.Analysis` (leaderboard,
    ablations, expert labels), computed once per render."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.runs_dir = analysis.runs_dir
        self.suite = analysis.suite
        every = analysis.runs()
        lb = analysis.leaderboard()
        synthetic = synthetic_ids(lb.table)
        self.runs = [r for r in every if r.run_id not in synthetic]
        self.sanity_runs = [r for r in every if r.run_id in synthetic]
        self.leaderboard = Leaderboard(lb.table[~lb.table["run_id"].astype(str).isin(synthetic)]
                                       .reset_index(drop=True), lb.failed, subgroups=lb.subgroups)
        self.sanity_table = lb.table[lb.table["run_id"].astype(str).isin(synthetic)].reset_index(drop=True)
        self._shared: dict[str, Any] = {}

    def shared(self, name: str, compute: Callable[[], Any]) -> Any:
        """A value several sections of one report use (e.g. the comparison with the papers), computed by
        the first that asks."""
        if name not in self._shared:
            self._shared[name] = compute()
        return self._shared[name]

    def __repr__(self) -> str:
        return f"ReportContext({self.runs_dir}, suite={self.suite!r}, {len(self.runs)} runs)"

    @classmethod
    def load(cls, runs_dir: str | Path, suite: str | None = None, cache_dir: str | Path | None = None,
             key: str = "") -> ReportContext:
        """The context of a store; with ``cache_dir`` (a render's, see :mod:`.render`) the analysis parts
        that another report of the render computed are read back, not recomputed."""
        return cls(Analysis(runs_dir, suite or None, cache_dir=cache_dir or None, key=key))

    @property
    def n_not_completed(self) -> int:
        """Runs of the store (this suite) that failed, are unfinished or are damaged."""
        return self.analysis.n_not_completed

    @property
    def table(self) -> pd.DataFrame:
        """The leaderboard's rows of the runs on real data."""
        return self.leaderboard.table

    @property
    def sample_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.is_bundled_sample]

    def run(self, run_id: str) -> RunRecord:
        return next(r for r in [*self.runs, *self.sanity_runs] if r.run_id == run_id)

    def run_names(self) -> dict[str, str]:
        """Run id -> short name, made within each label set."""
        names: dict[str, str] = {}
        for group in by_label_set(self.runs).values():
            names.update(short_names(group))
        return names

    def banner_html(self) -> str:
        """A loud warning when runs trained on the bundled sample, with the measured reason their numbers
        are near chance (:func:`sample_note_html`); a one-line scope note in every case; the sanity check
        in its own box."""
        scope = (f"Run store <code>{esc(self.runs_dir)}</code>"
                 + (f", suite <b>{esc(self.suite)}</b>" if self.suite else ", all suites")
                 + f": {len(self.runs)} completed run(s) on real data"
                 + (f", {len(self.sanity_runs)} sanity run(s) on synthetic data (in their own box)"
                    if self.sanity_runs else "")
                 + f", {self.n_not_completed} not completed.")
        sample = self.sample_runs
        out = f"<p>{scope}</p>"
        if sample:
            out = (
                '<div style="border:3px solid #b00020;background:#fdecea;padding:12px 16px;margin:8px 0;'
                'font-size:1.05em">'
                f"{sample_note_html(sample, n_total=len(self.runs), sanity=bool(self.sanity_runs))}</div>{out}"
            )
        return out + self.sanity_html()

    def sanity_html(self) -> str:
        """The sanity check in its own box: each synthetic run's mean test AUC with its CI, and whether the
        pipeline learned the planted lesions (the whole interval above chance). Empty without such runs."""
        if self.sanity_table.empty:
            return ""
        rows = []
        for _, r in self.sanity_table.iterrows():
            lo, mean = num(r.get("mean_auc_ci_lo")), num(r.get("mean_auc"))
            learned = ("learns (CI above 0.5)" if math.isfinite(lo) and lo > 0.5
                       else "no evidence of learning" if math.isfinite(mean) else "no result")
            rec = next((x for x in self.sanity_runs if x.run_id == str(r["run_id"])), None)
            root = rec.cfg("data.root") if rec is not None else ""
            ci = fmt_ci(r.get("mean_auc_ci_lo"), r.get("mean_auc_ci_hi"))
            cells = (r.get("backbone"), r["run_id"], root, f"{fmt(mean)} {ci}", learned)
            rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        head = "".join(f'<th style="text-align:left;padding-right:10px">{h}</th>'
                       for h in ("backbone", "run id", "data", "mean test AUC [95% CI]", "verdict"))
        return ('<div style="border:2px solid #2e7d32;background:#eef7ee;padding:10px 14px;margin:8px 0">'
                "<b>Sanity check (synthetic data, not a result).</b> The same pipeline on a seeded phantom "
                "release with planted, label-specific lesions: it must score far above chance. These runs are "
                "in no ranking, table or comparison of this report."
                f'<table style="margin-top:6px;font-size:0.9em"><tr>{head}</tr>{"".join(rows)}</table></div>')

    def footer_html(self) -> str:
        return provenance_html(self.runs)


def label_counts(rec: RunRecord, split: str = "test") -> dict[str, tuple[float, float]]:
    """Label -> (positives, negatives) of a run's ``split`` as its metrics.json records them."""
    try:
        block = rec.metrics.get(split) or {}
    except RunStoreError:  # a run without readable metrics has no counts
        return {}
    n = num(block.get("n_images"))
    out = {}
    for lab, m in (block.get("per_label") or {}).items():
        if isinstance(m, dict):
            p = num(m.get("n_pos"))
            out[lab] = (p, n - p if math.isfinite(n) else math.nan)
    return out


def all_label_counts(ctx: ReportContext, split: str = "test") -> dict[str, dict[str, tuple[float, float]]]:
    """Run id -> :func:`label_counts` for every run of the context."""
    return {r.run_id: label_counts(r, split) for r in ctx.runs}


def _profiles(runs: Iterable[RunRecord]) -> list[str]:
    out = set()
    for r in runs:
        s = r.manifest.get("suite")
        out.add(str(s.get("profile") or "?") if isinstance(s, dict) else "?")
    return sorted(out)


def sample_note_html(runs: Sequence[RunRecord], *, n_total: int | None = None, sanity: bool = False) -> str:
    """The bundled-sample message (:func:`~cxr_bench.data.sample_note.sample_note_lines` of the runs'
    :func:`~cxr_bench.results.runs.sample_facts`), escaped, with the report's own count of where the runs'
    mean AUCs and intervals fall against 0.5."""
    if not runs:
        return ""
    first, *rest = sample_note_lines(sample_facts(runs, n_total=n_total, sanity=sanity))
    rest.insert(1, _chance_verdict(runs))
    return f"<b>&#9888; {esc(first)}</b>" + "".join(f'<p style="margin:6px 0 0 0">{esc(line)}</p>'
                                                    for line in rest if line)


def _chance_verdict(runs: Sequence[RunRecord]) -> str:
    """How many runs have a mean test AUC, or a whole 95% CI, below or above 0.5, and what that means here."""
    means, below, ci_below, ci_above = [], 0, 0, 0
    for r in runs:
        if not _has_metrics(r):
            continue
        t = r.metrics.get("test") or {}
        m = num(t.get("mean_auc"))
        ci = t.get("mean_auc_ci")
        ci = list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else [math.nan, math.nan]
        if math.isfinite(m):
            means.append(m)
            below += m < 0.5
        ci_below += num(ci[1]) < 0.5
        ci_above += num(ci[0]) > 0.5
    if not means:
        return ""
    verdict = (f"Test mean AUC {min(means):.2f}-{max(means):.2f}: {below} of {len(means)} run(s) below 0.5, "
               f"{ci_below} with the whole 95% CI below 0.5, {ci_above} with the whole CI above 0.5.")
    # No run reaching a mean AUC of 0.6, or any run confidently *below* chance, is a pipeline that has not
    # learned the findings: an interval above 0.5 next to one below it reflects the sample, not skill.
    at_chance = max(means) < 0.6 or ci_below > 0
    if at_chance and ci_above and ci_below:
        verdict += (" Intervals wholly above and wholly below 0.5 side by side are the small, biased test set "
                    "speaking, not skill.")
    if at_chance:
        verdict += " These models are at chance, as expected on this sample."
    small = min((int(r.config.data.image_size) for r in runs), default=SMALL_IMAGE_PX) < SMALL_IMAGE_PX
    return verdict + (" At these sizes a small finding (a nodule, a pneumothorax) is a pixel or two;" if small else "") + (
        " A rare label has a few positives in this test set, and a model can learn the sample's source rather than "
        "the findings.")


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
