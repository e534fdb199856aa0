"""Comparisons: two leaderboards, a leaderboard against a paper, and paired ablations inside a suite.

Three questions, three functions:

- :func:`compare_leaderboards` -- *what changed between two leaderboards?* Rows are matched by run key
  (:data:`~cxr_bench.results.leaderboard.FACTOR_COLUMNS`: the experimental factors, not the hyper-parameter
  hash) or by ``run_id``; the result has the delta (B - A) of the mean and of every per-label AUC, and the
  runs found in only one of them.
- :func:`compare_reference` -- *how far are we from the paper?* Leaderboard rows that differ only in
  ``seed`` are one configuration. Per configuration with a published counterpart (:mod:`.references`) and
  per label: ours (the seed mean), ours minus paper with an interval that includes seed variance, a
  verdict, and whether the protocol matches the paper's in every field (``comparable``; otherwise
  ``why_not`` lists each mismatch). It needs only the leaderboard.
- :func:`ablation_table` -- *does one factor matter?* Configurations of one suite that differ in exactly
  one factor are paired (runs that differ only in ``seed`` are seeds of one configuration). All runs'
  saved test predictions are aligned by image and compared with
  :func:`cxr_bench.metrics.paired.paired_comparison`: per label the difference of seed-mean AUCs with a
  paired patient-bootstrap interval and p-value (with a seed-variance component when a side has several
  seeds), Obuchowski's clustered test, Holm's adjustment across the labels, a verdict from the adjusted
  bootstrap p-value, and image-level DeLong only as a column named as such.

Tables computed from runs of the bundled sample carry a banner (``df.attrs["banner"]``, lines written as
``# ...`` comments at the top of the CSV by :func:`write_comparison_csv`) saying that their numbers are
not comparable with any paper and why they sit near chance.
"""

from __future__ import annotations

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

from ..config import RunConfig
from ..data.labels import CHESTXRAY14
from ..errors import ConfigError, RunStoreError
from ..metrics.paired import PAIRED_COLUMNS, paired_comparison
from ..utils.io import write_csv
from .leaderboard import FACTOR_COLUMNS, auc_column
from .references import REFERENCES, ReferenceMatch, match_reference
from .runs import RunRecord, take_rows

log = logging.getLogger(__name__)

KEYS = ("config", "run_id")

# ------------------------------------------------------------------------------------- banners

SAMPLE_BANNER = (
    "NOT COMPARABLE WITH ANY PAPER: these runs were trained and tested on the bundled 1,673-image sample "
    "(profile 'sample'), not on the NIH release.",
    "Mean test AUC here: {range}. Models of the sample profile score near chance by design: random "
    "initialisation (no ImageNet weights), 64-px images, a few dozen optimisation steps (2 epochs x 8 steps), "
    "and a small, biased sample (60% of it picked as 'No Finding' vs 'Pneumonia'; 265 test images of 186 "
    "patients).",
    "They show that the pipeline runs, not how good any model is. For real numbers: "
    "cxr-bench run --suite wang2017 --data-root /path/to/NIH (profile 'paper').",
)


def _sample_metadata_sha() -> str:
    from ..data.bundled import BUNDLED_SHA256

    return BUNDLED_SHA256["nih-sample/Data_Entry_2017_v2020.csv"]


def sample_banner(mean_aucs: Iterable[Any]) -> list[str]:
    """The banner of a table computed from bundled-sample runs, quoting their mean-AUC range."""
    vals = [float(v) for v in mean_aucs if v is not None and np.isfinite(_num(v))]
    shown = f"{min(vals):.2f}-{max(vals):.2f}" if vals else "not available"
    return [SAMPLE_BANNER[0], SAMPLE_BANNER[1].format(range=shown), SAMPLE_BANNER[2]]


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
    """Write a comparison table as CSV with its banner as leading ``# ...`` lines (``pd.read_csv(path,
    comment="#")`` reads it back), atomically and safe to open in a spreadsheet."""
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
    sample = [r.get("mean_auc") for df in (a, b) for r in df.to_dict("records") if _row_is_sample(r)]
    out.attrs["banner"] = sample_banner(sample) if sample else []
    return out


# ------------------------------------------------------------------------------------- against a paper

# The protocol fields a published number depends on, as leaderboard columns; a comparison is fair only
# when every one matches (the list: profile, head, loss, split, label set, image size, weights).
PROTOCOL_FIELDS = ("profile", "head", "loss", "split", "label_set", "image_size", "pretrained")
IMAGENET = ("cache", "imagenet")  # our leaderboard's names for torchvision/timm ImageNet weights


def reference_protocol(match: ReferenceMatch, row: dict[str, Any]) -> dict[str, tuple[tuple[str, ...], str]]:
    """``field -> (accepted leaderboard values, what the paper did)`` for the table ``match`` picked.

    Read from the protocol notes in ``replication/`` (``wang2017_protocol.md``, ``chexnet2017_protocol.md``):
    Wang et al. fed 1024-px images to ImageNet backbones with the transition + LSE head and W-CEL (plain
    CEL for the unweighted row of Table 3), Table 3 on a random image-level split of 8 labels, Table 17 on
    the official split of 14; CheXNet used 224 px, a GAP head, BCE and its own random split, which no split
    of ours reproduces; the original MobileNet project (``paloukari2018``) used its ``simple`` head on 13
    labels and a random image split of its own resample, which none of ours reproduces either. Our ``paper``
    profile is the one that follows these. Only the fields a table states are checked.
    """
    common = {"profile": (("paper",), "paper (full NIH release)"), "pretrained": (IMAGENET, "ImageNet weights")}
    if match.reference == "paloukari2018":
        return {"profile": common["profile"], "head": (("simple",), "simple"),
                "split": ((), "a random 75/25 image split of its own 40,000-image resample (not reproducible)"),
                "label_set": (("chestxray13",), "chestxray13")}
    if match.reference == "chexnet":
        return {**common, "head": (("gap",), "gap"), "loss": (("bce",), "bce"),
                "split": ((), "CheXNet's own random split (not reproducible)"),
                "label_set": (("chestxray14",), "chestxray14"), "image_size": (("224",), "224")}
    table3 = row.get("label_set") == "chestxray8"
    loss = "bce" if "unweighted" in match.setting else "wcel"
    return {**common, "head": (("wang2017",), "wang2017 (transition + LSE pooling)"), "loss": ((loss,), loss),
            "split": (("random-image",), "random-image (70/10/20 by image)") if table3 else
            (("official",), "official (patient-wise lists)"),
            "label_set": (("chestxray8",), "chestxray8") if table3 else (("chestxray14",), "chestxray14"),
            "image_size": (("1024",), "1024")}


def _field_value(v: Any) -> str:
    f = _num(v)
    if math.isfinite(f) and float(f).is_integer():
        return str(int(f))
    return "unknown" if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)


def protocol_mismatches(match: ReferenceMatch, row: dict[str, Any]) -> list[str]:
    """Each protocol field where ``row`` (a leaderboard row) differs from the paper, as ``field: ours X,
    paper Y``; empty when the comparison is fair."""
    protocol = reference_protocol(match, row)
    out = []
    for fld, (accepted, paper) in protocol.items():
        ours = _field_value(row.get(fld))
        if ours not in accepted:
            out.append(f"{fld}: ours {ours}, paper {paper}")
    if not out and not match.comparable:  # a reference whose own resolver knows of a further difference
        out.append(f"protocol: {match.note}")
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


def _seed_interval(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float
                   ) -> tuple[float, float, float, float, str]:
    """``(mean, sd, ci_lo, ci_hi, how)`` of a configuration's AUC over its seeds.

    With k >= 2 seeds: variance ``se_test^2 + s^2 / k``, where ``s`` is the seeds' standard deviation and
    ``se_test`` the mean of the seeds' test-sampling SEs recovered from their 95% patient-bootstrap CIs
    (``(hi - lo) / (2 x 1.96)``). Counting each seed's full test-sampling SE, as if the seeds' test errors
    were perfectly correlated, and adding the seed spread (which contains a little test noise too) errs on
    the wide side. Student t with Satterthwaite's df, the seed term having k - 1 df. A seed without a CI in
    the leaderboard leaves the interval NaN (the test-sampling part would be missing).
    """
    ok = np.isfinite(values)
    v = values[ok]
    k = v.size
    if k == 0:
        return math.nan, math.nan, math.nan, math.nan, "no AUC"
    if k == 1:
        return float(v[0]), math.nan, float(lo[ok][0]), float(hi[ok][0]), \
            "test sampling only (1 seed: training variance unknown)"
    z95 = stats.norm.ppf(0.975)
    se = (hi[ok] - lo[ok]) / (2.0 * z95)
    if not np.isfinite(se).all():
        return float(v.mean()), float(v.std(ddof=1)), math.nan, math.nan, "no interval (a seed has no CI)"
    se_test = float(se.mean())
    s2 = float(v.var(ddof=1))
    seed_part = s2 / k
    var = se_test**2 + seed_part
    df = var**2 / (seed_part**2 / (k - 1)) if seed_part > 0 else math.inf
    q = float(stats.norm.ppf(0.5 + level / 2)) if math.isinf(df) else float(stats.t.ppf(0.5 + level / 2, df))
    m = float(v.mean())
    half = q * math.sqrt(var)
    return m, math.sqrt(s2), m - half, m + half, f"test sampling + seeds (k={k}, t df={df:.1f})"


def _reference_verdict(k: int, lo: float, hi: float, paper: float, comparable: bool) -> tuple[str, bool | None]:
    if k == 0:
        return "no value", None
    if k == 1:
        return NO_VERDICT_ONE_SEED, None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no verdict (no interval)", None
    inside = bool(lo <= paper <= hi)
    v = "consistent with paper" if inside else ("above paper" if lo > paper else "below paper")
    return (v if comparable else f"{v} (not comparable)"), inside


def _cell(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _config_groups(lb: pd.DataFrame) -> list[pd.DataFrame]:
    """Leaderboard rows grouped into configurations: equal suite and factor columns except ``seed`` (every
    identity field of the config is a factor column, so such rows differ only in their seed). Damaged
    rows (``status`` not ``completed``) are left out."""
    if "status" in lb.columns:
        bad = lb["status"].astype(str) != "completed"
        if bad.any():
            log.warning("%d damaged leaderboard row(s) left out of the comparison: %s", int(bad.sum()),
                        ", ".join(lb.loc[bad, "run_id"].astype(str)))
        lb = lb[~bad]
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
    ``ours_ci_lo/hi`` its ``level`` interval including seed variance (:func:`_seed_interval`; with one seed
    the run's own patient-bootstrap CI, which ignores training variance). ``delta = ours - paper`` with
    ``delta_ci`` (NaN with one seed). ``verdict``: ``consistent with paper`` / ``above paper`` / ``below
    paper`` from that interval, ``no verdict (1 seed)`` with one seed, suffixed ``(not comparable)`` when a
    protocol field differs. ``comparable`` is True only when every field of :data:`PROTOCOL_FIELDS` matches
    the paper's (:func:`reference_protocol`); ``why_not`` lists each mismatch.
    """
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES.names())}")
    rows: list[dict[str, Any]] = []
    skipped = 0
    sample_means: list[Any] = []
    for g in _config_groups(lb):
        g = g.sort_values("seed") if "seed" in g.columns else g
        first = g.iloc[0].to_dict()
        match = match_reference(reference, first)
        if match is None:
            skipped += 1
            continue
        if _row_is_sample(first):
            sample_means.extend(g["mean_auc"].tolist() if "mean_auc" in g.columns else [])
        why = protocol_mismatches(match, first)
        base = {k: first.get(k) for k in ("suite", "backbone", "head", "label_set", "split", "loss", "image_size",
                                          "pretrained", "profile")}
        base.update(run_id=";".join(map(str, g["run_id"])), n_seeds=len(g), source=match.source,
                    setting=match.setting, comparable=not why, why_not="; ".join(why), note=match.note)
        for label, paper in [*match.auc.items(), ("mean", match.mean_auc)]:
            col = "mean_auc" if label == "mean" else auc_column(label)
            vals, lo, hi = (np.array([_num(x) for x in g.get(c, pd.Series([math.nan] * len(g)))])
                            for c in (col, f"{col}_ci_lo", f"{col}_ci_hi"))
            ours, sd, ci_lo, ci_hi, how = _seed_interval(vals, lo, hi, level)
            k = int(np.isfinite(vals).sum())
            verdict, inside = _reference_verdict(k, ci_lo, ci_hi, paper, not why)
            two = k >= 2
            rows.append({**base, "label": label, "ours": ours, "ours_sd": sd, "ours_ci_lo": ci_lo,
                         "ours_ci_hi": ci_hi, "paper": paper, "delta": ours - paper,
                         "delta_ci_lo": ci_lo - paper if two else math.nan,
                         "delta_ci_hi": ci_hi - paper if two else math.nan, "paper_in_ci": inside,
                         "verdict": verdict, "interval": how})
    if skipped:
        log.info("%d configurations have no %s counterpart (other backbone or label set)", skipped, reference)
    out = pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))
    lines = []
    if sample_means:
        lines += sample_banner(sample_means)
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
    try:
        ident = RunConfig.from_dict(rec.config).identity_dict(full=True)
    except ConfigError as e:
        raise RunStoreError(f"{rec.run_dir}/config.json: {e}") from e
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


def _seed_sorted(runs: Iterable[RunRecord]) -> tuple[RunRecord, ...]:
    return tuple(sorted(runs, key=lambda r: (_num(r.cfg("seed", 0)), r.run_id)))


def find_ablation_pairs(runs: Iterable[RunRecord]) -> list[AblationPair]:
    """Pairs of configurations in one suite differing in exactly one factor, each with all its completed
    seeds. Pairs the runner recorded in the manifests are used when present (two runs of a recorded pair
    stand for their configurations); otherwise pairs are found by diffing the runs' identity configs."""
    runs = [r for r in runs if r.completed]
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
    "interval", "n_images", "n_patients",
)
ABLATION_NOTE = (
    "delta = B (value_b) - A (value_a) of seed-mean test AUCs; ci/se/p_bootstrap: paired patient bootstrap "
    "(+ seed variance when a side has several seeds); p_clustered: Obuchowski 1997 with patients as clusters; "
    "*_holm: Holm-adjusted across the labels of the pair; verdict from p_bootstrap_holm < {alpha}; "
    "p_delong_image_level treats images as independent and is shown only for contrast"
)


def interval_note(k_a: int, k_b: int) -> str:
    """What a pair's interval accounts for, given its seeds per side."""
    if k_a > 1 or k_b > 1:
        return f"patients + seeds ({k_a} vs {k_b})"
    return "patients only (1 seed per side: training variance not included)"


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
    return aligned, labels


def paired_ablation(pair: AblationPair, *, split: str = "test", n_bootstrap: int = 1000, level: float = 0.95,
                    seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Per label and for the mean: variant ``b`` minus baseline ``a`` on the images both scored, with the
    columns of :data:`ABLATION_COLUMNS` (see :func:`cxr_bench.metrics.paired.paired_comparison`)."""
    aligned, labels = _aligned(pair, split)
    ka = len(pair.a)
    table = paired_comparison(aligned[0].y_true, [p.y_prob for p in aligned[:ka]], [p.y_prob for p in aligned[ka:]],
                              aligned[0].patient_ids, labels=labels, n_bootstrap=n_bootstrap, level=level, seed=seed,
                              alpha=alpha)
    info = {"suite": pair.suite, "block": pair.block, "factor": pair.factor, "value_a": pair.value_a,
            "value_b": pair.value_b, "run_a": pair.run_a, "run_b": pair.run_b, "seeds_a": ka,
            "seeds_b": len(pair.b), "interval": interval_note(ka, len(pair.b)),
            "n_images": len(aligned[0]), "n_patients": int(pd.unique(aligned[0].patient_ids).size)}
    out = table.assign(**info)[list(ABLATION_COLUMNS)]
    out.attrs["banner"] = _ablation_banner([*pair.a, *pair.b], alpha)
    return out


def _ablation_banner(runs: Sequence[RunRecord], alpha: float) -> list[str]:
    lines = []
    sample = [r for r in runs if _run_is_sample(r)]
    if sample:
        lines += sample_banner((r.metrics.get("test") or {}).get("mean_auc") for r in sample)
    return lines + [ABLATION_NOTE.format(alpha=alpha)]


def ablation_table(runs: Iterable[RunRecord], *, split: str = "test", n_bootstrap: int = 1000,
                   level: float = 0.95, seed: int = 0, alpha: float = 0.05, factors: Iterable[str] | None = None
                   ) -> pd.DataFrame:
    """:func:`paired_ablation` for every pair of :func:`find_ablation_pairs` (optionally only ``factors``)."""
    keep = set(factors) if factors is not None else None
    found = [p for p in find_ablation_pairs(runs) if keep is None or p.factor in keep]
    # A pair whose factor chooses the test images (paloukari2018's split block) has no common test set to
    # pair on: it is left out here, said so in the banner, and read from the leaderboard's own intervals.
    pairs = [p for p in found if p.factor not in UNPAIRED_FACTORS]
    unpaired = sorted({f"{p.block}: {p.factor}" for p in found if p.factor in UNPAIRED_FACTORS})
    frames = [paired_ablation(p, split=split, n_bootstrap=n_bootstrap, level=level, seed=seed, alpha=alpha)
              for p in pairs]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ABLATION_COLUMNS))
    out.attrs["banner"] = _ablation_banner([r for p in pairs for r in (*p.a, *p.b)], alpha) + (
        [f"not paired ({', '.join(unpaired)}): the factor changes the test images, so the runs share no test "
         "set; compare their mean AUCs and patient-bootstrap CIs in the leaderboard"] if unpaired else [])
    return out


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
            out[col] = per.assign(s=per["verdict"] == v).groupby(keys)["s"].sum().reindex(out.index).fillna(0) \
                .astype(int)
        out = out.reset_index()[list(SUMMARY_COLUMNS)]
    out.attrs["banner"] = banner(table)
    return out


__all__ = [
    "ABLATION_COLUMNS", "PROTOCOL_FIELDS", "REFERENCE_COLUMNS", "SUMMARY_COLUMNS", "AblationPair", "ablation_table",
    "banner", "compare_leaderboards", "compare_reference", "comparison_json", "find_ablation_pairs",
    "pair_summary", "paired_ablation", "protocol_mismatches", "reference_protocol", "sample_banner",
    "write_comparison_csv",
]

# The configuration machinery other result tables build on (results/cost.py), under public names.
run_factors = _factors
seed_interval = _seed_interval
config_groups = _config_groups
