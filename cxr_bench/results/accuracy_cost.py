"""The MobileNet question: how much AUC for how much compute.

MobileNetV1's case (Howard et al. 2017) is that depthwise separable convolutions keep most of a large
network's accuracy at a fraction of its cost. Two tables answer it from what the runs saved:

- :func:`accuracy_cost_table`: one row per configuration: mean test AUC over seeds with its seed-aware
  interval (patients + seeds, :func:`~cxr_bench.results.compare.seed_interval`), parameters, GMACs, the
  median over seeds of the measured CPU latency, whether the point is on the Pareto frontier (no other
  configuration of the same label set is at least as accurate and at most as costly, one of them strictly)
  for GMACs and for CPU latency, and the paper's mean AUC where Wang et al. 2017 published one;
- :func:`mobilenet_vs_baselines`: MobileNetV1 against each other backbone trained in the same block, label
  set and image size: the paired, patient-clustered AUC difference with its interval from the same code as
  the ablations (:func:`~cxr_bench.results.compare.paired_ablation`), beside the ratios of parameters,
  GMACs and CPU latency (MobileNet / baseline). Factors other than the backbone that still differ (a
  profile may cap steps per backbone) are listed in ``also_differs``, so a reader sees what else changed.

Runs on synthetic data (the phantom sanity run) answer no accuracy question and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .compare import AblationPair, config_groups, paired_ablation, run_factors, seed_interval
from .cost import pareto_front
from .leaderboard import ranked_rows
from .references import match_reference
from .runs import RunRecord

__all__ = ["ACCURACY_COST_COLUMNS", "VERSUS_COLUMNS", "accuracy_cost_table", "mobilenet_vs_baselines"]


ACCURACY_COST_COLUMNS: tuple[str, ...] = (
    "suite", "label_set", "backbone", "head", "image_size", "config", "n_seeds", "run_ids", "mean_auc", "ci_lo",
    "ci_hi", "interval", "param_count", "gmacs", "cpu_latency_ms", "onnx_cpu_latency_ms", "pareto_gmacs",
    "pareto_latency", "paper_mean_auc", "paper_source",
)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _config_name(row: dict[str, Any]) -> str:
    return f"{row.get('backbone')}/{row.get('head')}"


def accuracy_cost_table(lb: pd.DataFrame, *, level: float = 0.95, reference: str = "wang2017") -> pd.DataFrame:
    """One row per configuration of the leaderboard ``lb`` (see the module docstring), sorted by label set
    and GMACs."""
    rows: list[dict[str, Any]] = []
    for g in config_groups(ranked_rows(lb)):
        first = g.iloc[0].to_dict()
        values = pd.to_numeric(g["mean_auc"], errors="coerce").to_numpy(dtype=np.float64)
        lo = pd.to_numeric(g["mean_auc_ci_lo"], errors="coerce").to_numpy(dtype=np.float64)
        hi = pd.to_numeric(g["mean_auc_ci_hi"], errors="coerce").to_numpy(dtype=np.float64)
        mean, _sd, ci_lo, ci_hi, how = seed_interval(values, lo, hi, level)
        match = match_reference(reference, first)

        def median(col: str, frame: pd.DataFrame = g) -> float:
            v = pd.to_numeric(frame[col], errors="coerce").dropna() if col in frame else pd.Series(dtype=float)
            return float(v.median()) if len(v) else math.nan

        rows.append({
            "suite": first.get("suite"), "label_set": first.get("label_set"), "backbone": first.get("backbone"),
            "head": first.get("head"), "image_size": first.get("image_size"), "config": _config_name(first),
            "n_seeds": len(g), "run_ids": ";".join(g["run_id"].astype(str)), "mean_auc": mean, "ci_lo": ci_lo,
            "ci_hi": ci_hi, "interval": how, "param_count": median("param_count"), "gmacs": median("gmacs"),
            "cpu_latency_ms": median("cpu_latency_ms"), "onnx_cpu_latency_ms": median("onnx_cpu_latency_ms"),
            "paper_mean_auc": match.mean_auc if match is not None else math.nan,
            "paper_source": match.source if match is not None else "",
        })
    out = pd.DataFrame(rows, columns=[c for c in ACCURACY_COST_COLUMNS if c not in ("pareto_gmacs", "pareto_latency")])
    out["pareto_gmacs"] = False
    out["pareto_latency"] = False
    for _, idx in out.groupby(["suite", "label_set"], dropna=False).groups.items():
        sub = out.loc[idx]
        out.loc[idx, "pareto_gmacs"] = pareto_front(sub["gmacs"], sub["mean_auc"])
        out.loc[idx, "pareto_latency"] = pareto_front(sub["cpu_latency_ms"], sub["mean_auc"])
    return out[list(ACCURACY_COST_COLUMNS)].sort_values(["suite", "label_set", "gmacs"], kind="stable") \
        .reset_index(drop=True)


VERSUS_COLUMNS: tuple[str, ...] = (
    "suite", "block", "label_set", "image_size", "baseline", "mobilenet", "run_baseline", "run_mobilenet",
    "seeds_baseline", "seeds_mobilenet", "auc_baseline", "auc_mobilenet", "delta", "ci_lo", "ci_hi", "p_bootstrap",
    "p_clustered", "verdict", "interval", "params_ratio", "gmacs_ratio", "cpu_latency_ratio", "also_differs",
)

_BACKBONE = "model.backbone"
# Factors a pair may differ in besides the backbone: the ones a block grids over are kept equal, these are
# the block's reason to exist (label set, size) and are matched exactly, everything else is reported.
_MATCHED = ("data.label_set", "data.image_size")


def _blocks_of(rec: RunRecord) -> tuple[str, ...]:
    suite = rec.manifest.get("suite") if isinstance(rec.manifest, dict) else None
    blocks = suite.get("blocks") if isinstance(suite, dict) else None
    return tuple(sorted(str(b) for b in blocks)) if isinstance(blocks, list) else ("",)


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def mobilenet_vs_baselines(runs: Iterable[RunRecord], lb: pd.DataFrame, *, mobilenet: str = "mobilenet_v1",
                           n_bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
                           alpha: float = 0.05) -> pd.DataFrame:
    """MobileNetV1 minus each baseline backbone, paired on the same test images (see the module docstring).

    ``lb`` is the leaderboard of the same runs (for the cost columns); ``runs`` their records. Runs on
    synthetic data are left out, as everywhere accuracy is compared.
    """
    real = ranked_rows(lb)
    keep = set(real["run_id"].astype(str))
    recs = [r for r in runs if r.completed and r.run_id in keep]
    cost = real.set_index(real["run_id"].astype(str))
    groups: dict[tuple[Any, ...], dict[str, list[RunRecord]]] = {}
    facts: dict[str, dict[str, str]] = {}
    for r in recs:
        f = run_factors(r)
        facts[r.run_id] = f
        for block in _blocks_of(r):
            key = (r.suite, block, *(str(r.cfg(k)) for k in _MATCHED))
            groups.setdefault(key, {}).setdefault(str(r.cfg(_BACKBONE)), []).append(r)
    rows: list[dict[str, Any]] = []
    for (suite, block, label_set, size), by_backbone in sorted(groups.items()):
        mob = by_backbone.get(mobilenet)
        if not mob:
            continue
        for base_name, base in sorted(by_backbone.items()):
            if base_name == mobilenet:
                continue
            # Seeds of one configuration: the sides are whole configurations, one per backbone.
            fa, fb = facts[base[0].run_id], facts[mob[0].run_id]
            differs = sorted(k for k in set(fa) | set(fb) if k not in (_BACKBONE, "seed") and fa.get(k) != fb.get(k))
            pair = AblationPair(suite, _BACKBONE, base_name, mobilenet, tuple(base), tuple(mob), block)
            t = paired_ablation(pair, n_bootstrap=n_bootstrap, level=level, seed=seed, alpha=alpha)
            mean = t[t["label"] == "mean"].iloc[0]

            def med(col: str, rr: list[RunRecord]) -> float:
                v = pd.to_numeric(cost.loc[[r.run_id for r in rr], col], errors="coerce").dropna() \
                    if col in cost else pd.Series(dtype=float)
                return float(v.median()) if len(v) else math.nan

            rows.append({
                "suite": suite, "block": block, "label_set": label_set, "image_size": size, "baseline": base_name,
                "mobilenet": mobilenet, "run_baseline": pair.run_a, "run_mobilenet": pair.run_b,
                "seeds_baseline": len(base), "seeds_mobilenet": len(mob), "auc_baseline": mean["auc_a"],
                "auc_mobilenet": mean["auc_b"], "delta": mean["delta"], "ci_lo": mean["ci_lo"], "ci_hi": mean["ci_hi"],
                "p_bootstrap": mean["p_bootstrap"], "p_clustered": mean.get("p_clustered"), "verdict": mean["verdict"],
                "interval": mean["interval"],
                "params_ratio": _ratio(med("param_count", mob), med("param_count", base)),
                "gmacs_ratio": _ratio(med("gmacs", mob), med("gmacs", base)),
                "cpu_latency_ratio": _ratio(med("cpu_latency_ms", mob), med("cpu_latency_ms", base)),
                "also_differs": "; ".join(f"{k}: {fa.get(k)} vs {fb.get(k)}" for k in differs),
            })
    return pd.DataFrame(rows, columns=list(VERSUS_COLUMNS))
