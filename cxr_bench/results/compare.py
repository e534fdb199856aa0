"""Comparisons: two leaderboards, a leaderboard against a paper, and paired ablations inside a suite.

Three questions, three functions:

- :func:`compare_leaderboards` -- *what changed between two leaderboards?* Rows are matched by run key
  (:data:`~cxr_bench.results.leaderboard.KEY_COLUMNS`: the experimental factors, not the hyper-parameter
  hash) or by ``run_id``; the result has the delta (B - A) of the mean and of every per-label AUC, and the
  runs found in only one of them.
- :func:`compare_reference` -- *how far are we from the paper?* For every leaderboard row with a fair
  published counterpart (:mod:`.references`): per label ours, our 95% CI, the paper's value, the delta
  and whether the paper's value lies inside our CI. It needs only the leaderboard: the per-label CIs are
  columns of it.
- :func:`ablation_table` -- *does one factor matter?* Runs of one suite that differ in exactly one factor
  are paired; both runs' saved test predictions are aligned by image, and per label the AUC difference
  gets a paired patient-bootstrap CI (the same resampled patients for both runs, so their correlation is
  kept) and DeLong's p-value. The mean-AUC difference gets the bootstrap CI and a bootstrap p-value
  (DeLong has no mean-over-labels form). This needs the run store, since it needs the predictions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..data.labels import CHESTXRAY14
from ..errors import ConfigError, RunStoreError
from ..metrics.delong import delong_test
from ..metrics.roc import bootstrap_auc, percentile_ci
from .leaderboard import KEY_COLUMNS
from .references import REFERENCES, match_reference
from .runs import RunRecord, take_rows

log = logging.getLogger(__name__)

KEYS = ("config", "run_id")

# ------------------------------------------------------------------------------------- two leaderboards


def _key_columns(key: str) -> list[str]:
    if key == "config":
        return list(KEY_COLUMNS)
    if key == "run_id":
        return ["run_id"]
    raise ConfigError(f"unknown comparison key {key!r}; use one of {', '.join(KEYS)}")


def _check_unique(df: pd.DataFrame, cols: list[str], name: str) -> None:
    dup = df.duplicated(cols, keep=False)
    if dup.any():
        first = df.loc[dup, cols].iloc[0].to_dict()
        raise RunStoreError(
            f"leaderboard {name}: {int(dup.sum())} runs share the key {first}; they differ in a "
            "hyper-parameter outside the key. Compare them with --key run_id"
        )


def compare_leaderboards(a: pd.DataFrame, b: pd.DataFrame, *, key: str = "config") -> pd.DataFrame:
    """Row-by-row differences ``B - A``: one row per run key present in either leaderboard.

    Columns: the key, ``present`` (``both``, ``only_a``, ``only_b``), ``run_id_a``, ``run_id_b``,
    ``mean_auc_a``, ``mean_auc_b``, ``delta_mean_auc``, then ``delta_auc_<Label>`` for every label that has
    an AUC in either leaderboard.
    """
    cols = _key_columns(key)
    for name, df in (("A", a), ("B", b)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise RunStoreError(f"leaderboard {name} has no column {missing[0]!r}; is it a cxr-bench leaderboard?")
        _check_unique(df, cols, name)
    labels = [lab for lab in CHESTXRAY14
              if any(f"auc_{lab}" in df.columns and df[f"auc_{lab}"].notna().any() for df in (a, b))]
    value_cols = ["run_id", "mean_auc", *(f"auc_{lab}" for lab in labels)]
    left = a[cols + [c for c in value_cols if c not in cols]]
    right = b[cols + [c for c in value_cols if c not in cols]]
    merged = left.merge(right, on=cols, how="outer", suffixes=("_a", "_b"), indicator=True)
    merged["present"] = merged.pop("_merge").map({"both": "both", "left_only": "only_a",
                                                   "right_only": "only_b"}).astype(str)
    out = merged[cols + ["present"]].copy()
    if key == "config":
        out["run_id_a"] = merged["run_id_a"]
        out["run_id_b"] = merged["run_id_b"]
    out["mean_auc_a"] = merged["mean_auc_a"]
    out["mean_auc_b"] = merged["mean_auc_b"]
    out["delta_mean_auc"] = merged["mean_auc_b"] - merged["mean_auc_a"]
    for lab in labels:
        out[f"delta_auc_{lab}"] = merged[f"auc_{lab}_b"] - merged[f"auc_{lab}_a"]
    order = {"both": 0, "only_a": 1, "only_b": 2}
    out = out.sort_values(["present", *cols], key=lambda s: s.map(order) if s.name == "present" else s,
                          kind="mergesort")
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------- against a paper

REFERENCE_COLUMNS = (
    "suite", "run_id", "backbone", "label_set", "split", "loss", "source", "setting", "comparable", "note",
    "label", "ours", "ours_ci_lo", "ours_ci_hi", "paper", "delta", "paper_in_ci",
)


def compare_reference(lb: pd.DataFrame, reference: str = "wang2017") -> pd.DataFrame:
    """Ours vs the paper, one row per (run, label) plus a ``mean`` row per run, for every leaderboard row
    with a fair published counterpart (see :mod:`.references`; rows without one are logged and skipped).

    ``delta`` = ours - paper; ``paper_in_ci`` is whether the paper's value lies in our 95% CI (empty where
    we have no CI). ``comparable`` is False where the paper's protocol differs in a way that moves numbers.
    """
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES.names())}")
    rows: list[dict[str, Any]] = []
    skipped = 0
    for rec in lb.to_dict("records"):
        match = match_reference(reference, rec)
        if match is None:
            skipped += 1
            continue
        base = {k: rec.get(k) for k in ("suite", "run_id", "backbone", "label_set", "split", "loss")}
        base.update(source=match.source, setting=match.setting, comparable=match.comparable, note=match.note)
        for label, paper in match.auc.items():
            rows.append(_ref_row(base, label, rec.get(f"auc_{label}"), rec.get(f"auc_{label}_ci_lo"),
                                 rec.get(f"auc_{label}_ci_hi"), paper))
        rows.append(_ref_row(base, "mean", rec.get("mean_auc"), rec.get("mean_auc_ci_lo"),
                             rec.get("mean_auc_ci_hi"), match.mean_auc))
    if skipped:
        log.info("%d leaderboard rows have no %s counterpart (other backbone or label set)", skipped, reference)
    return pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _ref_row(base: dict[str, Any], label: str, ours: Any, lo: Any, hi: Any, paper: float) -> dict[str, Any]:
    ours, lo, hi = _num(ours), _num(lo), _num(hi)
    inside: bool | None = None
    if math.isfinite(lo) and math.isfinite(hi):
        inside = bool(lo <= paper <= hi)
    return {**base, "label": label, "ours": ours, "ours_ci_lo": lo, "ours_ci_hi": hi, "paper": paper,
            "delta": ours - paper, "paper_in_ci": inside}


# ------------------------------------------------------------------------------------- paired ablations

# Keys that belong to another key's factor: a head's kwargs change with the head, a loss's with the loss.
_FACTOR_OF = {"model.head_kwargs": "model.head", "loss.kwargs": "loss.name"}
# Differences that are replication, not ablation.
_NOT_FACTORS = frozenset({"seed"})


@dataclass(frozen=True)
class AblationPair:
    """Two runs of one suite that differ in exactly one factor; ``b`` is the variant, ``a`` the baseline."""

    suite: str
    factor: str
    value_a: str
    value_b: str
    a: RunRecord
    b: RunRecord
    block: str = ""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: "{}"}
    return {prefix[:-1]: repr(d)}


def _factors(rec: RunRecord) -> dict[str, str]:
    """The run's identity config as ``factor -> value`` (paths and worker counts dropped)."""
    try:
        ident = RunConfig.from_dict(rec.config).identity_dict()
    except ConfigError as e:
        raise RunStoreError(f"{rec.run_dir}/config.json: {e}") from e
    flat = _flatten(ident)
    out: dict[str, list[str]] = {}
    for k, v in sorted(flat.items()):
        factor = next((f for p, f in _FACTOR_OF.items() if k == p or k.startswith(p + ".")), k)
        out.setdefault(factor, []).append(f"{k}={v}" if factor != k else v)
    return {f: " ".join(vs) for f, vs in out.items()}


def _display_value(rec: RunRecord, factor: str) -> str:
    return _show(rec.cfg(factor))


def _baseline_first(pair: tuple[RunRecord, RunRecord], factor: str) -> tuple[RunRecord, RunRecord]:
    """Order a pair so that ``a`` holds the RunConfig default of ``factor`` (the usual baseline)."""
    default: Any = RunConfig()
    for part in factor.split("."):
        default = getattr(default, part, None)
    x, y = pair
    if y.cfg(factor) == default and x.cfg(factor) != default:
        return y, x
    if x.cfg(factor) == default:
        return x, y
    return (x, y) if _display_value(x, factor) <= _display_value(y, factor) else (y, x)


def _manifest_pairs(runs: list[RunRecord]) -> list[tuple[str, str, str, str, str, str]] | None:
    """``(block, factor, reference run id, variant run id, reference value, value)`` as the runner recorded
    them in ``manifest["suite"]["pairs"]`` (each variant run lists its reference), or None when no manifest
    records pairs (a store not written by the runner)."""
    found: set[tuple[str, str, str, str, str, str]] = set()
    any_info = False
    for rec in runs:
        suite = rec.manifest.get("suite")
        if not isinstance(suite, dict) or "pairs" not in suite:
            continue
        any_info = True
        for p in suite.get("pairs") or []:
            if not isinstance(p, dict) or not {"factor", "reference"} <= set(p):
                log.warning("%s: unreadable ablation pair %r in manifest.json; skipped", rec.run_dir, p)
                continue
            found.add((str(p.get("block", "")), str(p["factor"]), str(p["reference"]), rec.run_id,
                       _show(p.get("reference_value")), _show(p.get("value"))))
    return sorted(found) if any_info else None


def _show(v: Any) -> str:
    return "none" if v is None else str(v)


def find_ablation_pairs(runs: Iterable[RunRecord]) -> list[AblationPair]:
    """Pairs of completed runs in one suite differing in exactly one factor (seed differences excluded).

    Pairs the runner recorded in the manifests are used when present; otherwise pairs are found by
    diffing the runs' identity configs.
    """
    runs = [r for r in runs if r.completed]
    by_id = {r.run_id: r for r in runs}
    out: list[AblationPair] = []
    recorded = _manifest_pairs(runs)
    if recorded is not None:
        for block, factor, ida, idb, va, vb in recorded:
            if ida in by_id and idb in by_id:
                out.append(AblationPair(by_id[idb].suite, factor, va, vb, by_id[ida], by_id[idb], block))
            else:
                log.info("ablation pair %s vs %s (%s): a run is not completed; skipped", ida, idb, factor)
        return sorted(out, key=lambda p: (p.suite, p.factor, p.value_a, p.value_b, p.a.run_id, p.b.run_id))
    factors = {r.run_id: _factors(r) for r in runs}
    for i, x in enumerate(runs):
        for y in runs[i + 1:]:
            if x.suite != y.suite:
                continue
            fx, fy = factors[x.run_id], factors[y.run_id]
            diff = [k for k in sorted(set(fx) | set(fy)) if fx.get(k) != fy.get(k)]
            if len(diff) != 1 or diff[0] in _NOT_FACTORS:
                continue
            a, b = _baseline_first((x, y), diff[0])
            out.append(AblationPair(a.suite, diff[0], _display_value(a, diff[0]), _display_value(b, diff[0]), a, b))
    return sorted(out, key=lambda p: (p.suite, p.factor, p.value_a, p.value_b, p.a.run_id, p.b.run_id))


ABLATION_COLUMNS = (
    "suite", "block", "factor", "value_a", "value_b", "run_a", "run_b", "label", "auc_a", "auc_b", "delta", "ci_lo",
    "ci_hi", "p", "test", "n_images", "n_patients",
)


def paired_ablation(pair: AblationPair, *, split: str = "test", n_bootstrap: int = 1000, level: float = 0.95,
                    seed: int = 0) -> pd.DataFrame:
    """Per-label and mean AUC differences (variant ``b`` - baseline ``a``) on the images both runs scored.

    Per label: paired patient-bootstrap CI of the difference and DeLong's two-sided p-value. Mean: the
    bootstrap CI and a two-sided bootstrap p-value (twice the smaller tail of the difference around 0).
    """
    pa, pb = pair.a.predictions(split), pair.b.predictions(split)
    labels = [lab for lab in pa.labels if lab in pb.labels]
    if not labels:
        raise RunStoreError(f"runs {pair.a.run_id} and {pair.b.run_id} share no label; not a paired ablation")
    images = pd.Index(pa.images).intersection(pd.Index(pb.images), sort=False)
    if len(images) < max(len(pa.images), len(pb.images)):
        log.warning("pair %s/%s: %d images scored by both of %d and %d; comparing on the common ones",
                    pair.a.run_id, pair.b.run_id, len(images), len(pa.images), len(pb.images))
    if len(images) == 0:
        raise RunStoreError(f"runs {pair.a.run_id} and {pair.b.run_id} scored no common {split} image")
    pa, pb = take_rows(pa.select(labels), list(images)), take_rows(pb.select(labels), list(images))
    if not np.array_equal(pa.y_true, pb.y_true):
        raise RunStoreError(f"runs {pair.a.run_id} and {pair.b.run_id} disagree on the true labels of the same "
                            "images; they used different metadata and cannot be paired")
    groups = pa.patient_ids
    # The same seed and groups give both runs the same resampled patients, so the difference of their
    # resample AUCs is a paired bootstrap of the difference.
    ba = bootstrap_auc(pa.y_true, pa.y_prob, groups, n=n_bootstrap, level=level, seed=seed, labels=labels)
    bb = bootstrap_auc(pb.y_true, pb.y_prob, groups, n=n_bootstrap, level=level, seed=seed, labels=labels)
    base = {"suite": pair.suite, "block": pair.block, "factor": pair.factor, "value_a": pair.value_a, "value_b": pair.value_b,
            "run_a": pair.a.run_id, "run_b": pair.b.run_id, "n_images": len(images),
            "n_patients": int(ba.n_groups)}
    rows = []
    for j, lab in enumerate(labels):
        d = delong_test(pa.y_true[:, j], pb.y_prob[:, j], pa.y_prob[:, j], level=level)
        lo, hi = percentile_ci(bb.samples[:, j] - ba.samples[:, j], level)
        rows.append({**base, "label": lab, "auc_a": float(ba.auc[j]), "auc_b": float(bb.auc[j]),
                     "delta": float(bb.auc[j] - ba.auc[j]), "ci_lo": lo, "ci_hi": hi, "p": d.p, "test": "delong"})
    diff = bb.mean_samples - ba.mean_samples
    lo, hi = percentile_ci(diff, level)
    rows.append({**base, "label": "mean", "auc_a": ba.mean_auc, "auc_b": bb.mean_auc,
                 "delta": bb.mean_auc - ba.mean_auc, "ci_lo": lo, "ci_hi": hi, "p": _bootstrap_p(diff),
                 "test": "bootstrap"})
    return pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))


def _bootstrap_p(diff: np.ndarray) -> float:
    ok = diff[np.isfinite(diff)]
    if ok.size == 0:
        return math.nan
    # (k + 1) / (n + 1): a resample count of 0 means p < 1/n, never exactly 0.
    tail = min((ok <= 0).sum(), (ok >= 0).sum())
    return float(min(1.0, 2.0 * (tail + 1) / (ok.size + 1)))


def ablation_table(runs: Iterable[RunRecord], *, split: str = "test", n_bootstrap: int = 1000,
                   level: float = 0.95, seed: int = 0, factors: Iterable[str] | None = None) -> pd.DataFrame:
    """:func:`paired_ablation` for every pair of :func:`find_ablation_pairs` (optionally only ``factors``)."""
    keep = set(factors) if factors is not None else None
    frames = [paired_ablation(p, split=split, n_bootstrap=n_bootstrap, level=level, seed=seed)
              for p in find_ablation_pairs(runs) if keep is None or p.factor in keep]
    if not frames:
        return pd.DataFrame(columns=list(ABLATION_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def pair_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: the mean-AUC difference with its CI, and how many labels DeLong finds different."""
    if table.empty:
        return pd.DataFrame(columns=["suite", "block", "factor", "value_a", "value_b", "run_a", "run_b", "mean_a",
                                     "mean_b", "delta", "ci_lo", "ci_hi", "p", "labels_p_lt_0.05"])
    keys = ["suite", "block", "factor", "value_a", "value_b", "run_a", "run_b"]
    mean = table[table["label"] == "mean"].set_index(keys)
    per = table[table["label"] != "mean"]
    sig = per.assign(s=per["p"] < 0.05).groupby(keys)["s"].sum().astype(int)
    out = mean[["auc_a", "auc_b", "delta", "ci_lo", "ci_hi", "p"]].rename(
        columns={"auc_a": "mean_a", "auc_b": "mean_b"})
    out["labels_p_lt_0.05"] = sig.reindex(out.index).fillna(0).astype(int)
    return out.reset_index()


__all__ = [
    "AblationPair", "ablation_table", "compare_leaderboards", "compare_reference", "find_ablation_pairs",
    "paired_ablation", "pair_summary",
]
