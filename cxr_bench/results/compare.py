"""Comparisons: two leaderboards, a leaderboard against a paper, and paired ablations inside a suite.

Three questions, three functions:

- :func:`compare_leaderboards` -- *what changed between two leaderboards?* Rows are matched by run key
  (:data:`~cxr_bench.results.leaderboard.FACTOR_COLUMNS`: the experimental factors, not the hyper-parameter
  hash) or by ``run_id``; the result has the delta (B - A) of the mean and of every per-label AUC, and the
  runs found in only one of them.
- :func:`compare_reference` -- *how far are we from the paper?* Leaderboard rows that differ only in
  ``seed`` are one configuration. Per configuration with a published counterpart (:mod:`.references`) and
  per label: ours (the seed mean), ours minus paper with an interval that includes our seeds, the paper's
  own single run's training variance and, across test sets, the paper's test sampling; a verdict; and
  whether the run's whole identity config equals that of the run the suite's ``paper`` profile uses to
  replicate the paper (``comparable``; otherwise ``why_not`` lists every differing field). It needs only
  the leaderboard.
- :func:`ablation_table` -- *does one factor matter?* Configurations of one suite that differ in exactly
  one factor are paired (runs that differ only in ``seed`` are seeds of one configuration). All runs'
  saved test predictions are aligned by image and compared with
  :func:`cxr_bench.metrics.paired.paired_comparison`: per label the difference of seed-mean AUCs with a
  paired patient-bootstrap interval and p-value (with a seed-variance component when a side has several
  seeds), Obuchowski's clustered test, Holm's adjustment across the labels, a verdict from the adjusted
  bootstrap p-value, and image-level DeLong only as a column named as such.

Tables computed from runs of the bundled sample carry a banner (``df.attrs["banner"]``, printed above the
table and written as ``notes`` into the ``<name>.csv.json`` sidecar of the plain CSV by
:func:`write_comparison_csv`) saying that their numbers are not comparable with any paper and why they sit
near chance. Runs tested on synthetic data (the phantom sanity run; leaderboard column ``synthetic``) are
left out of paper comparisons and ablations.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..config import RunConfig, get_dotted
from ..data.labels import CHESTXRAY14
from ..data.sample_note import sample_note_lines
from ..errors import ConfigError, RunStoreError
from ..metrics.paired import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_SEED,
    PAIRED_COLUMNS,
    ReplicateCache,
    benjamini_hochberg,
    holm,
    paired_comparison,
    seed_note,
    verdict,
)
from ..utils.io import atomic_write_text, sha256_bytes, write_csv
from .leaderboard import (
    FACTOR_COLUMNS,
    FACTORS,
    auc_column,
    factor_values,
    format_leaderboard,
    ranked_rows,
    sample_facts,
    truthy,
)
from .references import REFERENCES, ReferenceMatch, ReplicationRun, match_reference
from .runs import RunRecord, take_rows
from .runs import sample_facts as run_sample_facts

log = logging.getLogger(__name__)

KEYS = ("config", "run_id")

# ------------------------------------------------------------------------------------- banners

def _sample_metadata_sha() -> str:
    from ..data.bundled import BUNDLED_SHA256

    return BUNDLED_SHA256["nih-sample/Data_Entry_2017_v2020.csv"]


def _run_is_sample(rec: RunRecord) -> bool:
    suite = rec.manifest.get("suite")
    profile = suite.get("profile") if isinstance(suite, dict) else None
    return bool(rec.is_bundled_sample or profile == "sample")


def _row_is_sample(row: dict[str, Any]) -> bool:
    flag = row.get("bundled_sample")
    return (flag is True or str(flag).strip().lower() in ("true", "1") or row.get("profile") == "sample"
            or row.get("metadata_sha256") == _sample_metadata_sha())


def banner(df: pd.DataFrame) -> list[str]:
    """The banner lines a comparison table carries (``df.attrs["banner"]``; empty when none)."""
    return list(df.attrs.get("banner") or [])


def write_comparison_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a comparison table as a plain CSV (``pd.read_csv(path)`` reads it), atomically and safe to open
    in a spreadsheet; its banner goes into the ``<name>.csv.json`` sidecar as notes."""
    return write_csv(df, path, header_lines=banner(df))


def comparison_json(tables: dict[str, pd.DataFrame]) -> str:
    """``{"banner": [...], name: [records]...}`` of one or more tables (NaN -> null)."""
    out: dict[str, Any] = {"banner": next((banner(t) for t in tables.values() if banner(t)), [])}
    for name, df in tables.items():
        out[name] = json.loads(df.to_json(orient="records", double_precision=10))
    return json.dumps(out, indent=2) + "\n"


# ------------------------------------------------------------------------------------- two leaderboards


def _key_columns(key: str, a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """``config``: the suite and every factor column both leaderboards have (an older leaderboard may lack a
    factor added since; it is then left out of the key); ``run_id``: the run id."""
    if key == "config":
        return ["suite"] + [c for c in FACTOR_COLUMNS if c in a.columns and c in b.columns]
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
    ``mean_auc_a``, ``mean_auc_b``, ``delta_mean_auc``, then ``delta_auc_<label>`` for every label that has
    an AUC in either leaderboard.
    """
    cols = _key_columns(key, a, b)
    for name, df in (("A", a), ("B", b)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise RunStoreError(f"leaderboard {name} has no column {missing[0]!r}; is it a cxr-bench leaderboard?")
        _check_unique(df, cols, name)
    aucs = [auc_column(lab) for lab in CHESTXRAY14 if auc_column(lab) in a.columns and auc_column(lab) in b.columns
            and (a[auc_column(lab)].notna().any() or b[auc_column(lab)].notna().any())]
    value_cols = ["run_id", "mean_auc", *aucs]
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
    for col in aucs:
        out[f"delta_{col}"] = merged[f"{col}_b"] - merged[f"{col}_a"]
    order = {"both": 0, "only_a": 1, "only_b": 2}
    out = out.sort_values(["present", *cols], key=lambda s: s.map(order) if s.name == "present" else s,
                          kind="mergesort").reset_index(drop=True)
    sample = [r for df in (a, b) for r in df.to_dict("records") if _row_is_sample(r)]
    out.attrs["banner"] = sample_note_lines(sample_facts(pd.DataFrame(sample))) if sample else []
    return out


# ------------------------------------------------------------------------------------- against a paper

# Identity fields that may differ from the reference run and still compare, each with why. Every other
# identity field of the config (every factor column of the leaderboard) must be equal. Fields that are not
# identity fields (``data.root``, ``data.cache_dir``, ``data.workers``, ``data.source``, ``data.loader``,
# ``optim.amp``, ``optim.channels_last``, ``optim.compile``, ``eval.batch_size``, ``device``, ``name``,
# ``imports``) are never checked: by the config's contract (``config.NOT_IDENTITY``) they say where or how
# fast a run went, not what it computed, and they are not leaderboard columns.
ALLOWED_DIFFERENCES: dict[str, str] = {
    "seed": "which training draw; a configuration's seeds are what the interval averages over",
    "eval.bootstrap": "resamples of each run's own patient-bootstrap CI: its precision, not the AUC",
    "eval.threshold": "how the operating threshold is chosen: sensitivity and specificity, not the AUC",
}
# Leaderboard values that name the same thing: ``cache`` is the ImageNet weights taken from a populated
# torchvision / timm cache, ``imagenet`` the same weights fetched on first use.
_SAME_VALUE: dict[str, dict[str, str]] = {"pretrained": {"cache": "imagenet"}}


@functools.cache
def _expanded(suite: str, profile: str, overrides: tuple[tuple[str, Any], ...]) -> tuple[Any, ...]:
    """The runs of a shipped suite under a profile: several papers' references share one expansion."""
    from ..runner.suite import load_suite

    return tuple(load_suite(suite).expand(profile, dict(overrides)))


@functools.cache
def reference_factors(run: ReplicationRun) -> dict[str, tuple[str, str]]:
    """``leaderboard column -> (dotted config key, value as the leaderboard writes it)`` of the run that
    replicates a paper: ``run.block`` of the shipped suite ``run.suite`` expanded under ``run.profile``
    (seed 0), the one whose config matches ``run.select``; the suite machinery decides every value."""
    runs = _expanded(run.suite, run.profile, run.overrides)
    found = [r for r in runs if run.block in r.blocks and r.config.seed == 0
             and all(get_dotted(r.config, k) == v for k, v in run.select)]
    if len(found) != 1:
        raise ConfigError(f"suite {run.suite!r}, profile {run.profile!r}: {len(found)} runs of block "
                          f"{run.block!r} match {dict(run.select)}; expected exactly one reference run")
    cfg = found[0].config
    rec = RunRecord(Path(run.suite), run.suite, cfg.run_id(), cfg)
    row = pd.DataFrame([factor_values(rec)])
    shown = format_leaderboard(row).iloc[0].to_dict()
    return {col: (FACTORS[col][0], str(shown[col])) for col in FACTOR_COLUMNS}


def _shown(col: str, value: Any) -> str:
    text = str(format_leaderboard(pd.DataFrame({col: [value]})).iloc[0, 0])
    return _SAME_VALUE.get(col, {}).get(text, text)


def protocol_mismatches(match: ReferenceMatch, row: dict[str, Any]) -> list[str]:
    """Every reason ``row`` (a leaderboard row) is not the paper's protocol, empty when it is.

    Each identity field of the row's config (every factor column) is compared with the run that
    replicates the paper (:func:`reference_factors` of ``match.replicated_by``), except the fields of
    :data:`ALLOWED_DIFFERENCES`; a difference reads ``optim.epochs: 1 != 10`` (ours != the reference run),
    a column the leaderboard lacks ``optim.momentum: unknown != 0.9``. The row must come from the
    ``paper`` profile (``profile: sample != paper``), and a reference that no run of ours reproduces
    (``match.comparable`` False: another release or split) adds its reason.
    """
    out = []
    if not match.comparable:
        out.append(f"protocol: {match.note}")
    if match.replicated_by is None:
        return out or ["protocol: no run of a shipped suite replicates this reference"]
    profile = match.replicated_by.profile
    ours_profile = _cell(row.get("profile")) or "unknown"
    if ours_profile != profile:
        out.append(f"profile: {ours_profile} != {profile}")
    for col, (key, ref) in reference_factors(match.replicated_by).items():
        if key in ALLOWED_DIFFERENCES:
            continue
        ours = _shown(col, row[col]) if col in row else "unknown"
        if ours != _SAME_VALUE.get(col, {}).get(ref, ref) or ours == "unknown":
            out.append(f"{key}: {ours or 'none'} != {ref or 'none'}")
    return out


REFERENCE_COLUMNS = (
    "suite", "run_id", "n_seeds", "backbone", "head", "label_set", "split", "loss", "image_size", "pretrained",
    "profile", "source", "setting", "comparable", "why_not", "note", "label", "ours", "ours_sd", "ours_ci_lo",
    "ours_ci_hi", "paper", "delta", "delta_ci_lo", "delta_ci_hi", "paper_in_ci", "verdict", "interval",
)
NO_VERDICT_ONE_SEED = "no verdict (1 seed)"


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class SeedInterval:
    """A configuration's AUC over its seeds and ours-minus-paper, each with its ``level`` interval."""

    mean: float
    sd: float
    ci: tuple[float, float]
    delta_ci: tuple[float, float]
    how: str


def _t_interval(centre: float, var: float, seed_ms: float, seed_df: int, level: float) -> tuple[float, float]:
    """``centre +- t se`` with Satterthwaite's df from the seed mean square ``seed_ms`` (``seed_df`` df),
    the test-sampling part known (infinite df)."""
    df = var**2 / (seed_ms**2 / seed_df) if seed_ms > 0 else math.inf
    q = float(stats.norm.ppf(0.5 + level / 2)) if math.isinf(df) else float(stats.t.ppf(0.5 + level / 2, df))
    half = q * math.sqrt(var)
    return centre - half, centre + half


def _seed_interval(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, paper: float, level: float, *,
                   same_test_set: bool) -> SeedInterval:
    """Our configuration's AUC over its seeds, and ``ours - paper``, with intervals.

    Ours, with k >= 2 seeds: variance ``se_test^2 + s^2 / k``, where ``s`` is the seeds' standard deviation
    and ``se_test`` the mean of the seeds' test-sampling SEs recovered from their 95% patient-bootstrap CIs
    (``(hi - lo) / (2 x 1.96)``). Counting each seed's full test-sampling SE, as if the seeds' test errors
    were perfectly correlated, and adding the seed spread (which contains a little test noise too) errs on
    the wide side. Student t with Satterthwaite's df, the seed term having k - 1 df.

    Ours minus paper accounts for (1) our test sampling, ``se_test^2``; (2) our training variance,
    ``s^2 / k``; (3) the paper's training variance: its number is one training run, one draw of its
    configuration, whose between-seed variance it does not report, so ours is borrowed, ``s^2`` (the two
    seed terms are one estimate: ``s^2 (1 + 1/k)`` with k - 1 df); (4) where the paper's test set is not
    ours (another split or release), the paper's own test sampling, taken as equal to ours (a test set of
    similar size), another ``se_test^2``. On the same test set the paper's test-sampling error is shared
    with ours and is not added. It does not account for a different population or label mining: that is
    what ``comparable`` says. A seed without a CI, or a single seed, leaves the intervals NaN (a part
    would be missing).
    """
    nan2 = (math.nan, math.nan)
    ok = np.isfinite(values)
    v = values[ok]
    k = v.size
    if k == 0:
        return SeedInterval(math.nan, math.nan, nan2, nan2, "no AUC")
    if k == 1:
        return SeedInterval(float(v[0]), math.nan, (float(lo[ok][0]), float(hi[ok][0])), nan2,
                            "test sampling only (1 seed: training variance unknown)")
    z95 = stats.norm.ppf(0.975)
    se = (hi[ok] - lo[ok]) / (2.0 * z95)
    m = float(v.mean())
    s2 = float(v.var(ddof=1))
    if not np.isfinite(se).all():
        return SeedInterval(m, math.sqrt(s2), nan2, nan2, "no interval (a seed has no CI)")
    test = float(se.mean()) ** 2
    ci = _t_interval(m, test + s2 / k, s2 / k, k - 1, level)
    seeds = s2 * (1.0 + 1.0 / k)
    paper_test = 0.0 if same_test_set else test
    delta_ci = _t_interval(m - paper, test + paper_test + seeds, seeds, k - 1, level)
    how = (f"ours: test sampling + seeds (k={k}); ours - paper: + the paper's single run's seed variance "
           "(borrowed from ours)" + ("" if same_test_set else " + the paper's test sampling (another test set)"))
    return SeedInterval(m, math.sqrt(s2), ci, delta_ci, how)


def seed_interval(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float
                  ) -> tuple[float, float, float, float, str]:
    """``(mean, sd, ci_lo, ci_hi, what the interval accounts for)`` of one configuration's AUC over its seeds:
    the "ours" part of :func:`_seed_interval` (test sampling + seeds; one seed: its patient-bootstrap CI)."""
    si = _seed_interval(values, lo, hi, math.nan, level, same_test_set=True)
    k = int(np.isfinite(values).sum())
    how = f"test sampling + seeds (k={k}, t with Satterthwaite df)" if k >= 2 and np.isfinite(si.ci[0]) else si.how
    return si.mean, si.sd, si.ci[0], si.ci[1], how


def _reference_verdict(k: int, lo: float, hi: float, comparable: bool) -> tuple[str, bool | None]:
    """From the interval of ours minus paper: does it hold 0?"""
    if k == 0:
        return "no value", None
    if k == 1:
        return NO_VERDICT_ONE_SEED, None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no verdict (no interval)", None
    inside = bool(lo <= 0.0 <= hi)
    v = "consistent with paper" if inside else ("above paper" if lo > 0 else "below paper")
    return (v if comparable else f"{v} (not comparable)"), inside


def _cell(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _config_groups(lb: pd.DataFrame) -> list[pd.DataFrame]:
    """Leaderboard rows grouped into configurations: equal suite and factor columns except ``seed`` (every
    identity field of the config is a factor column, so such rows differ only in their seed). Damaged
    rows (``status`` not ``completed``, logged as a warning) and runs tested on synthetic data are left out:
    the rows kept are :func:`~.leaderboard.ranked_rows`."""
    kept = ranked_rows(lb)
    if len(kept) < len(lb):  # say which rows are left out, and why
        none = np.zeros(len(lb), dtype=bool)
        bad = (lb["status"].astype(str) != "completed").to_numpy() if "status" in lb.columns else none
        fake = ~bad & (truthy(lb["synthetic"]) if "synthetic" in lb.columns else none)
        if bad.any():
            log.warning("%d damaged leaderboard row(s) left out of the comparison: %s", int(bad.sum()),
                        ", ".join(lb.loc[bad, "run_id"].astype(str)))
        if fake.any():
            log.info("%d run(s) tested on synthetic data left out of the comparison: %s", int(fake.sum()),
                     ", ".join(lb.loc[fake, "run_id"].astype(str)))
    lb = kept
    cols = ["suite"] + [c for c in FACTOR_COLUMNS if c != "seed" and c in lb.columns]
    keys: dict[tuple[str, ...], list[Any]] = {}
    for i, rec in zip(lb.index, lb[cols].to_dict("records")):
        keys.setdefault(tuple(_cell(rec[c]) for c in cols), []).append(i)
    groups = [lb.loc[idx] for idx in keys.values()]
    for g in groups:
        if "seed" in g.columns and g["seed"].duplicated().any():
            seed = g.loc[g["seed"].duplicated(), "seed"].iloc[0]
            raise RunStoreError(
                f"runs {', '.join(map(str, g.loc[g['seed'] == seed, 'run_id']))} share every factor of the "
                f"leaderboard and seed {seed}: they differ in a hyper-parameter the leaderboard does not show, "
                "so they are not seeds of one configuration. Compare them with `compare A.csv B.csv --key run_id`"
            )
    return groups


def compare_reference(lb: pd.DataFrame, reference: str = "wang2017", *, level: float = 0.95) -> pd.DataFrame:
    """Ours vs the paper, one row per (configuration, label) plus a ``mean`` row, for every configuration
    with a published counterpart (see :mod:`.references`; others are logged and skipped).

    Columns :data:`REFERENCE_COLUMNS`. ``run_id`` lists the configuration's runs (``;``-separated) and
    ``n_seeds`` counts them. ``ours`` is the seed mean, ``ours_sd`` the seeds' standard deviation,
    ``ours_ci_lo/hi`` its ``level`` interval including seed variance (with one seed the run's own
    patient-bootstrap CI, which ignores training variance). ``delta = ours - paper`` with ``delta_ci``: our
    test sampling and seeds, the paper's single run's training variance (borrowed from our seeds) and, where
    the paper's test set is not ours, its test sampling (:func:`_seed_interval`; NaN with one seed).
    ``verdict``: ``consistent with paper`` / ``above paper`` / ``below paper`` from ``delta_ci``
    (``paper_in_ci``: it holds 0), ``no verdict (1 seed)`` with one seed, suffixed ``(not comparable)``
    when the protocol differs. ``comparable`` is True only when every identity field of the row equals the
    paper profile's replication run, bar :data:`ALLOWED_DIFFERENCES`, and the reference is one a run of ours
    reproduces (:func:`protocol_mismatches`); ``why_not`` lists every difference.
    """
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES.names())}")
    rows: list[dict[str, Any]] = []
    skipped = 0
    sample_groups: list[pd.DataFrame] = []
    for g in _config_groups(lb):
        g = g.sort_values("seed") if "seed" in g.columns else g
        first = g.iloc[0].to_dict()
        match = match_reference(reference, first)
        if match is None:
            skipped += 1
            continue
        if _row_is_sample(first):
            sample_groups.append(g)
        why = protocol_mismatches(match, first)
        base = {k: first.get(k) for k in ("suite", "backbone", "head", "label_set", "split", "loss", "image_size",
                                          "pretrained", "profile")}
        base.update(run_id=";".join(map(str, g["run_id"])), n_seeds=len(g), source=match.source,
                    setting=match.setting, comparable=not why, why_not="; ".join(why), note=match.note)
        for label, paper in [*match.auc.items(), ("mean", match.mean_auc)]:
            col = "mean_auc" if label == "mean" else auc_column(label)
            vals, lo, hi = (np.array([_num(x) for x in g.get(c, pd.Series([math.nan] * len(g)))])
                            for c in (col, f"{col}_ci_lo", f"{col}_ci_hi"))
            si = _seed_interval(vals, lo, hi, paper, level, same_test_set=match.same_test_set)
            k = int(np.isfinite(vals).sum())
            verdict, inside = _reference_verdict(k, *si.delta_ci, not why)
            rows.append({**base, "label": label, "ours": si.mean, "ours_sd": si.sd, "ours_ci_lo": si.ci[0],
                         "ours_ci_hi": si.ci[1], "paper": paper, "delta": si.mean - paper,
                         "delta_ci_lo": si.delta_ci[0], "delta_ci_hi": si.delta_ci[1], "paper_in_ci": inside,
                         "verdict": verdict, "interval": si.how})
    if skipped:
        log.info("%d configurations have no %s counterpart (other backbone or label set)", skipped, reference)
    out = pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))
    lines = []
    if sample_groups:
        lines += sample_note_lines(sample_facts(pd.concat(sample_groups)))
    if len(out) and not out["comparable"].all():
        lines.append("comparable = False: the protocol differs from the paper's in the fields listed in why_not; "
                     "such a delta is not a replication result")
    out.attrs["banner"] = lines
    return out


# ------------------------------------------------------------------------------------- paired ablations

# Keys that belong to another key's factor: a head's kwargs change with the head, a loss's with the loss.
_FACTOR_OF = {"model.head_kwargs": "model.head", "loss.kwargs": "loss.name"}
# Differences that are replication, not ablation: runs differing only here are seeds of one configuration.
_NOT_FACTORS = frozenset({"seed"})


@dataclass(frozen=True)
class AblationPair:
    """Two configurations of one suite that differ in exactly one factor: ``b`` the variant, ``a`` the
    baseline, each as its completed runs (one per seed, sorted by seed)."""

    suite: str
    factor: str
    value_a: str
    value_b: str
    a: tuple[RunRecord, ...]
    b: tuple[RunRecord, ...]
    block: str = ""

    def __post_init__(self) -> None:
        # A single run is accepted for convenience and stored as a one-seed configuration.
        for side in ("a", "b"):
            v = getattr(self, side)
            if isinstance(v, RunRecord):
                object.__setattr__(self, side, (v,))
            elif not v:
                raise ValueError(f"ablation pair side {side} has no run")

    @property
    def run_a(self) -> str:
        return ";".join(r.run_id for r in self.a)

    @property
    def run_b(self) -> str:
        return ";".join(r.run_id for r in self.b)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: "{}"}
    return {prefix[:-1]: repr(d)}


def _factors(rec: RunRecord) -> dict[str, str]:
    """The run's identity config as ``factor -> value`` (paths and worker counts dropped)."""
    ident = rec.config.identity_dict(full=True)
    flat = _flatten(ident)
    out: dict[str, list[str]] = {}
    for k, v in sorted(flat.items()):
        factor = next((f for p, f in _FACTOR_OF.items() if k == p or k.startswith(p + ".")), k)
        out.setdefault(factor, []).append(f"{k}={v}" if factor != k else v)
    return {f: " ".join(vs) for f, vs in out.items()}


ConfigKey = tuple[str, tuple[tuple[str, str], ...]]


def _config_key(rec: RunRecord, factors: dict[str, str]) -> ConfigKey:
    """Suite and every factor but the seed: runs with equal keys are seeds of one configuration."""
    return rec.suite, tuple(sorted((k, v) for k, v in factors.items() if k not in _NOT_FACTORS))


def _display_value(rec: RunRecord, factor: str) -> str:
    return _show(rec.cfg(factor))


def _baseline_first(pair: tuple[RunRecord, RunRecord], factor: str) -> tuple[RunRecord, RunRecord]:
    """Order a pair so that ``a`` holds the RunConfig default of ``factor`` (the usual baseline)."""
    default = get_dotted(RunConfig(), factor, None)
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


def _seed_sorted(runs: Iterable[RunRecord]) -> tuple[RunRecord, ...]:
    return tuple(sorted(runs, key=lambda r: (_num(r.cfg("seed", 0)), r.run_id)))


def find_ablation_pairs(runs: Iterable[RunRecord]) -> list[AblationPair]:
    """Pairs of configurations in one suite differing in exactly one factor, each with all its completed
    seeds. Pairs the runner recorded in the manifests are used when present (two runs of a recorded pair
    stand for their configurations); otherwise pairs are found by diffing the runs' identity configs."""
    runs = [r for r in runs if r.completed and not r.synthetic]  # a phantom sanity run pairs with nothing
    by_id = {r.run_id: r for r in runs}
    factors = {r.run_id: _factors(r) for r in runs}
    configs: dict[ConfigKey, list[RunRecord]] = {}
    for r in runs:
        configs.setdefault(_config_key(r, factors[r.run_id]), []).append(r)
    key_of = {r.run_id: _config_key(r, factors[r.run_id]) for r in runs}
    out: dict[tuple[ConfigKey, ConfigKey], AblationPair] = {}
    recorded = _manifest_pairs(runs)
    if recorded is not None:
        for block, factor, ida, idb, va, vb in recorded:
            if ida not in by_id or idb not in by_id:
                log.info("ablation pair %s vs %s (%s): a run is not completed; skipped", ida, idb, factor)
                continue
            ka, kb = key_of[ida], key_of[idb]
            if ka == kb:
                continue  # two seeds of one configuration
            out.setdefault((ka, kb), AblationPair(by_id[idb].suite, factor, va, vb, _seed_sorted(configs[ka]),
                                                  _seed_sorted(configs[kb]), block))
    else:
        keys = list(configs)
        for i, kx in enumerate(keys):
            for ky in keys[i + 1:]:
                if kx[0] != ky[0]:
                    continue
                fx, fy = dict(kx[1]), dict(ky[1])
                diff = [k for k in sorted(set(fx) | set(fy)) if fx.get(k) != fy.get(k)]
                if len(diff) != 1:
                    continue
                x, y = _baseline_first((configs[kx][0], configs[ky][0]), diff[0])
                ka, kb = (kx, ky) if x is configs[kx][0] else (ky, kx)
                out[(ka, kb)] = AblationPair(x.suite, diff[0], _display_value(x, diff[0]),
                                             _display_value(y, diff[0]), _seed_sorted(configs[ka]),
                                             _seed_sorted(configs[kb]))
    return sorted(out.values(), key=lambda p: (p.suite, p.factor, p.value_a, p.value_b, p.run_a, p.run_b))


ABLATION_COLUMNS = (
    "suite", "block", "factor", "value_a", "value_b", "run_a", "run_b", "seeds_a", "seeds_b", *PAIRED_COLUMNS,
    "interval", "p_suite", "family", "n_images", "n_patients",
)
ABLATION_NOTE = (
    "delta = B (value_b) - A (value_a) of seed-mean test AUCs; ci/se/p_bootstrap: paired patient bootstrap "
    "(+ seed variance when a side has several seeds, nested per configuration; a 1-seed side borrows the other "
    "side's); p_clustered: Obuchowski 1997 with patients as clusters; *_holm: Holm-adjusted across the labels "
    "of one pair (the Holm family: the family-wise error rate holds within each pair, not across pairs); "
    "p_suite: {family}; verdict from p_suite < {alpha}; p_delong_image_level treats images as independent "
    "and is shown only for contrast"
)
# How p_suite is adjusted (--multiplicity): within each pair only, or across every pair of the table.
MULTIPLICITY = {
    "pair": "Holm within each pair's labels (no control across pairs)",
    "holm": "Holm across every label test of every pair in this table (family-wise error rate, suite-wide); "
            "the pairs' mean rows are a second family",
    "bh": "Benjamini-Hochberg across every label test of every pair in this table (false discovery rate, "
          "suite-wide); the pairs' mean rows are a second family",
}


def interval_note(k_a: int, k_b: int) -> str:
    """What a pair's interval accounts for, given its seeds per side (:func:`.paired.seed_note`)."""
    return seed_note(k_a, k_b)


def _suite_adjust(table: pd.DataFrame, multiplicity: str, alpha: float) -> pd.DataFrame:
    """``p_suite``, ``family`` and the verdict under ``multiplicity`` (:data:`MULTIPLICITY`)."""
    if multiplicity not in MULTIPLICITY:
        raise ConfigError(f"unknown multiplicity {multiplicity!r}; use one of {', '.join(MULTIPLICITY)}")
    out = table.copy()
    if multiplicity == "pair":
        out["p_suite"] = out["p_bootstrap_holm"]
        out["family"] = [f"Holm over the labels of this pair ({n})" for n in
                         out.groupby(["suite", "block", "factor", "run_a", "run_b"])["label"]
                         .transform(lambda s: int((s != "mean").sum()))]
    else:
        adjust = holm if multiplicity == "holm" else benjamini_hochberg
        is_mean = out["label"] == "mean"
        p_suite = np.full(len(out), np.nan)
        for mask in (~is_mean.to_numpy(), is_mean.to_numpy()):
            p_suite[mask] = adjust(out.loc[mask, "p_bootstrap"].to_numpy(dtype=float))
        out["p_suite"] = p_suite
        n_labels, n_means = int(np.isfinite(out.loc[~is_mean, "p_bootstrap"]).sum()), int(is_mean.sum())
        name = "Holm" if multiplicity == "holm" else "Benjamini-Hochberg"
        out["family"] = np.where(is_mean, f"{name} over the mean rows of {n_means} pairs",
                                 f"{name} over {n_labels} label tests of {n_means} pairs")
    out["verdict"] = [verdict(d, p, alpha, lab) for d, p, lab in zip(out["delta"], out["p_suite"], out["label"])]
    return out


def _aligned(pair: AblationPair, split: str) -> tuple[list[Any], list[str]]:
    """Every run's predictions on the same images in the same order, restricted to the shared labels.

    Runs scored on different images cannot be paired: that is an error naming both runs and the counts.
    """
    runs = [*pair.a, *pair.b]
    preds = [r.predictions(split) for r in runs]
    labels = [lab for lab in preds[0].labels if all(lab in p.labels for p in preds[1:])]
    if not labels:
        raise RunStoreError(f"runs {pair.run_a} and {pair.run_b} share no label; not a paired ablation")
    ref, ref_images = runs[0], pd.Index(preds[0].images)
    for rec, p in zip(runs[1:], preds[1:]):
        imgs = pd.Index(p.images)
        if len(imgs) != len(ref_images) or not imgs.isin(ref_images).all():
            only_ref = int((~ref_images.isin(imgs)).sum())
            only_other = int((~imgs.isin(ref_images)).sum())
            raise RunStoreError(
                f"runs {ref.suite}/{ref.run_id} and {rec.suite}/{rec.run_id} were scored on different {split} "
                f"images: {only_ref} only in {ref.run_id}, {only_other} only in {rec.run_id} "
                f"({len(ref_images) - only_ref} in common). A paired comparison needs the same images: re-run "
                "them on the same data root, split and label set"
            )
    order = list(preds[0].images)
    aligned = [take_rows(p.select(labels), order) for p in preds]
    for rec, p in zip(runs[1:], aligned[1:]):
        if not np.array_equal(aligned[0].y_true, p.y_true):
            raise RunStoreError(f"runs {ref.run_id} and {rec.run_id} disagree on the true labels of the same "
                                "images; they used different metadata and cannot be paired")
        # The bootstrap resamples patients: every side must group the images into the same patients.
        if not np.array_equal(aligned[0].patient_ids.astype(str), p.patient_ids.astype(str)):
            raise RunStoreError(f"runs {ref.run_id} and {rec.run_id} disagree on the patients of the same images; "
                                "they used different metadata and cannot be paired")
    return aligned, labels


def paired_ablation(pair: AblationPair, *, split: str = "test", n_bootstrap: int = DEFAULT_BOOTSTRAP, level: float = 0.95,
                    seed: int = DEFAULT_SEED, alpha: float = 0.05, replicates: ReplicateCache | None = None) -> pd.DataFrame:
    """Per label and for the mean: variant ``b`` minus baseline ``a`` on the images both scored, with the
    columns of :data:`ABLATION_COLUMNS` (see :func:`cxr_bench.metrics.paired.paired_comparison`).

    ``replicates``: one dict shared by the pairs of a store, so that a run's bootstrap replicates are
    computed once however many pairs it is part of; the replicates a run saved when it completed
    (:meth:`RunRecord.stored_replicates`) are used where they are for these draws, the others computed. The
    runs' predictions are released afterwards.
    """
    replicates = {} if replicates is None else replicates
    try:
        aligned, labels = _aligned(pair, split)
        keys = tuple(tuple(r.predictions_sha256(split) for r in side) for side in (pair.a, pair.b))
        for r, key in zip((*pair.a, *pair.b), (*keys[0], *keys[1])):
            replicates.update(r.stored_replicates(split, key))
    finally:
        for r in (*pair.a, *pair.b):
            r.release_predictions()
    ka = len(pair.a)
    table = paired_comparison(aligned[0].y_true, [p.y_prob for p in aligned[:ka]], [p.y_prob for p in aligned[ka:]],
                              aligned[0].patient_ids, labels=labels, n_bootstrap=n_bootstrap, level=level, seed=seed,
                              alpha=alpha, model_keys=(keys[0], keys[1]), cache=replicates)
    info = {"suite": pair.suite, "block": pair.block, "factor": pair.factor, "value_a": pair.value_a,
            "value_b": pair.value_b, "run_a": pair.run_a, "run_b": pair.run_b, "seeds_a": ka,
            "seeds_b": len(pair.b), "interval": interval_note(ka, len(pair.b)),
            "n_images": len(aligned[0]), "n_patients": int(pd.unique(aligned[0].patient_ids).size)}
    out = _suite_adjust(table.assign(**info), "pair", alpha)[list(ABLATION_COLUMNS)]
    out.attrs["banner"] = _ablation_banner([*pair.a, *pair.b], alpha)
    return out


def pick_runs(runs: Iterable[RunRecord], ref: str) -> tuple[RunRecord, ...]:
    """The completed runs ``ref`` names: a run id, ``suite/run_id``, or a run name (every seed of it), as one
    configuration (its runs may differ in their seed only), sorted by seed."""
    runs = [r for r in runs if r.completed]
    found = [r for r in runs if ref in (r.run_id, f"{r.suite}/{r.run_id}", r.cfg("name"))]
    if not found:
        raise RunStoreError(f"no completed run is named {ref!r} (a run id, suite/run_id or run name); "
                            "`cxr-bench leaderboard` lists them")
    keys = {_config_key(r, _factors(r)) for r in found}
    if len(keys) > 1:
        raise RunStoreError(f"{ref!r} names {len(found)} runs of {len(keys)} configurations "
                            f"({', '.join(f'{r.suite}/{r.run_id}' for r in found[:4])}); name one by suite/run_id")
    return _seed_sorted(found)


def paired_runs(runs: Iterable[RunRecord], ref_a: str, ref_b: str, *, split: str = "test", n_bootstrap: int = DEFAULT_BOOTSTRAP,
                level: float = 0.95, seed: int = DEFAULT_SEED, alpha: float = 0.05) -> pd.DataFrame:
    """Any two runs (or configurations over their seeds) scored on the same test images: ``b`` minus
    baseline ``a`` per label and for the mean, with the columns of :func:`paired_ablation` (factor ``run``).
    This is how a model scored with ``cxr-bench evaluate`` is tested against a suite's baseline."""
    runs = list(runs)
    a, b = pick_runs(runs, ref_a), pick_runs(runs, ref_b)
    if {r.run_id for r in a} & {r.run_id for r in b}:
        raise RunStoreError(f"{ref_a!r} and {ref_b!r} name the same run; a comparison needs two")
    suite = a[0].suite if a[0].suite == b[0].suite else f"{a[0].suite} vs {b[0].suite}"
    pair = AblationPair(suite, "run", str(a[0].cfg("name") or a[0].run_id), str(b[0].cfg("name") or b[0].run_id),
                        a, b, "pair")
    return paired_ablation(pair, split=split, n_bootstrap=n_bootstrap, level=level, seed=seed, alpha=alpha)


def _ablation_banner(runs: Sequence[RunRecord], alpha: float, multiplicity: str = "pair") -> list[str]:
    lines = []
    sample = [r for r in runs if _run_is_sample(r)]
    if sample:
        lines += sample_note_lines(run_sample_facts(sample))
    return lines + [ABLATION_NOTE.format(alpha=alpha, family=MULTIPLICITY[multiplicity])]


def ablation_table(runs: Iterable[RunRecord], *, split: str = "test", n_bootstrap: int = DEFAULT_BOOTSTRAP,
                   level: float = 0.95, seed: int = DEFAULT_SEED, alpha: float = 0.05, factors: Iterable[str] | None = None,
                   multiplicity: str = "pair", use_cache: bool = True) -> pd.DataFrame:
    """:func:`paired_ablation` for every pair of :func:`find_ablation_pairs` (optionally only ``factors``).

    ``multiplicity`` (:data:`MULTIPLICITY`) decides ``p_suite`` and the verdicts: ``pair`` (default) keeps
    each pair's Holm family of its labels; ``holm`` / ``bh`` adjust every label test of every pair in the
    table together (family-wise error rate / false discovery rate across the suite's pairs).

    Each pair's table is cached (``use_cache``) in ``<store>/<suite>/.cache/ablations/`` under the sha256 of
    everything it depends on (:func:`pair_cache_key`: the pair, its runs' predictions hashes and the
    bootstrap settings), so ``compare --ablations`` and the reports compute a pair once; a changed
    prediction file or setting gives another key. At most one pair's predictions are in memory at a time.
    """
    if multiplicity not in MULTIPLICITY:
        raise ConfigError(f"unknown multiplicity {multiplicity!r}; use one of {', '.join(MULTIPLICITY)}")
    keep = set(factors) if factors is not None else None
    found = [p for p in find_ablation_pairs(runs) if keep is None or p.factor in keep]
    # A pair whose factor chooses the test images (paloukari2018's split block) has no common test set to
    # pair on: it is left out here, said so in the banner, and read from the leaderboard's own intervals.
    pairs = [p for p in found if p.factor not in UNPAIRED_FACTORS]
    unpaired = sorted({f"{p.block}: {p.factor}" for p in found if p.factor in UNPAIRED_FACTORS})
    replicates: dict[Any, np.ndarray] = {}
    frames = []
    for p in pairs:
        settings: dict[str, Any] = {"split": split, "n_bootstrap": n_bootstrap, "level": level, "seed": seed,
                                    "alpha": alpha}
        path = _pair_cache_path(p, pair_cache_key(p, **settings)) if use_cache else None
        cached = _read_cached_table(path) if path is not None else None
        if cached is None:
            cached = paired_ablation(p, replicates=replicates, **settings)
            if path is not None:
                _write_cached_table(path, cached)
        frames.append(cached)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ABLATION_COLUMNS))
    if frames:
        out = _suite_adjust(out, multiplicity, alpha)[list(ABLATION_COLUMNS)]
    out.attrs["banner"] = _ablation_banner([r for p in pairs for r in (*p.a, *p.b)], alpha, multiplicity) + (
        [f"not paired ({', '.join(unpaired)}): the factor changes the test images, so the runs share no test "
         "set; compare their mean AUCs and patient-bootstrap CIs in the leaderboard"] if unpaired else [])
    return out


# Bump when what a pair's table holds or how it is computed changes: older cache entries are then ignored.
ABLATION_CACHE_VERSION = 2
CACHE_DIR = ".cache"  # under a suite's directory; the tool owns it and may delete it at any time


def pair_cache_key(pair: AblationPair, *, split: str = "test", n_bootstrap: int = DEFAULT_BOOTSTRAP, level: float = 0.95,
                   seed: int = DEFAULT_SEED, alpha: float = 0.05) -> str:
    """sha256 of everything :func:`paired_ablation` of ``pair`` depends on: the code's version, the pair
    (factor, values, block, runs) and each run's predictions hash, and the bootstrap settings."""
    doc = {"version": ABLATION_CACHE_VERSION, "suite": pair.suite, "block": pair.block, "factor": pair.factor,
           "value_a": pair.value_a, "value_b": pair.value_b,
           "a": [[r.run_id, r.predictions_sha256(split)] for r in pair.a],
           "b": [[r.run_id, r.predictions_sha256(split)] for r in pair.b],
           "split": split, "n_bootstrap": n_bootstrap, "level": level, "seed": seed, "alpha": alpha}
    return sha256_bytes(json.dumps(doc, sort_keys=True).encode())


def _pair_cache_path(pair: AblationPair, key: str) -> Path:
    return pair.a[0].run_dir.parent / CACHE_DIR / "ablations" / f"{key}.json"


def _read_cached_table(path: Path) -> pd.DataFrame | None:
    """A table written by :func:`_write_cached_table`, or None (absent, unreadable or of another layout)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        df = pd.DataFrame({c: pd.Series(doc["data"][c], dtype=doc["dtypes"][c]) for c in doc["columns"]},
                          columns=doc["columns"])
        df.attrs["banner"] = list(doc.get("banner") or [])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.info("ignoring the unreadable cache entry %s (%s); computing the pair again", path, e)
        return None
    return df if list(df.columns) == list(ABLATION_COLUMNS) else None


def _write_cached_table(path: Path, df: pd.DataFrame) -> None:
    # JSON with Python's float repr (and NaN): every number reads back bit for bit; no pickle, since a
    # run store may come from someone else.
    doc = {"columns": [str(c) for c in df.columns], "dtypes": {str(c): str(df[c].dtype) for c in df.columns},
           "data": {str(c): df[c].tolist() for c in df.columns}, "banner": banner(df)}
    try:
        atomic_write_text(path, json.dumps(doc))
    except OSError as e:  # a read-only store: the result is still returned, only not kept
        log.info("could not cache %s (%s)", path, e.strerror or e)


# Factors that choose which images are tested: two runs differing in one cannot be paired image by image.
UNPAIRED_FACTORS = frozenset({"data.split", "data.split_seed", "data.random_fractions", "data.val_fraction"})


SUMMARY_COLUMNS = ("suite", "block", "factor", "value_a", "value_b", "run_a", "run_b", "seeds_a", "seeds_b",
                   "mean_a", "mean_b", "delta", "ci_lo", "ci_hi", "p", "verdict", "labels_better", "labels_worse",
                   "labels_no_evidence", "labels_no_test", "interval")


def pair_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: the mean-AUC difference with its interval, bootstrap p and verdict, and how many
    labels are ``better`` / ``worse`` / ``no evidence`` / ``no test`` by the Holm-adjusted verdicts."""
    keys = ["suite", "block", "factor", "value_a", "value_b", "run_a", "run_b"]
    if table.empty:
        out = pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    else:
        mean = table[table["label"] == "mean"].set_index(keys)
        per = table[table["label"] != "mean"]
        out = mean[["seeds_a", "seeds_b", "auc_a", "auc_b", "delta", "ci_lo", "ci_hi", "p_bootstrap", "verdict",
                    "interval"]].rename(columns={"auc_a": "mean_a", "auc_b": "mean_b", "p_bootstrap": "p"})
        for v, col in (("better", "labels_better"), ("worse", "labels_worse"), ("no evidence", "labels_no_evidence"),
                       ("no test", "labels_no_test")):
            out[col] = per.assign(s=per["verdict"].str.split(" (", regex=False).str[0] == v).groupby(keys)["s"].sum().reindex(out.index).fillna(0) \
                .astype(int)
        out = out.reset_index()[list(SUMMARY_COLUMNS)]
    out.attrs["banner"] = banner(table)
    return out


__all__ = [
    "ABLATION_CACHE_VERSION", "ABLATION_COLUMNS", "ALLOWED_DIFFERENCES", "MULTIPLICITY", "REFERENCE_COLUMNS",
    "SUMMARY_COLUMNS", "AblationPair", "ablation_table", "banner", "compare_leaderboards", "compare_reference",
    "comparison_json", "find_ablation_pairs", "pair_cache_key", "pair_summary", "paired_ablation", "paired_runs",
    "pick_runs", "protocol_mismatches", "reference_factors", "seed_interval",
    "write_comparison_csv",
]

# The configuration machinery other result tables build on (results/accuracy_cost.py), under public names.
run_factors = _factors
config_groups = _config_groups
