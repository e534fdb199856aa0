"""A run's test predictions against radiologist-adjudicated labels (Majkowska et al., Radiology 2019).

The NIH labels were mined from reports by NLP; Google's 2019 re-labelling of 4,376 NIH images by panels of
radiologists gives four findings with adjudicated YES/NO labels. Scoring the same predictions on the same
images against both label sources shows how the NLP labels flatter or hide a model.

Our labels map to theirs as follows (documented in docs and the leaderboard):

- ``pneumothorax``: p(Pneumothorax); NIH truth = Pneumothorax.
- ``nodule_or_mass``: max(p(Nodule), p(Mass)); NIH truth = Nodule or Mass.
- ``airspace_opacity``: max of p over Consolidation, Pneumonia, Infiltration and Edema, those in the run's
  label set (chestxray8 has Infiltration and Pneumonia only); NIH truth = any of the same labels.
- ``Fracture`` has no NIH label and is skipped.

Taking the max of probabilities is the simplest score that is high when any member finding is; it is not
calibrated, but ROC AUC only needs a ranking.

Each AUC has a 95% patient-bootstrap interval (:func:`cxr_bench.metrics.roc.bootstrap_auc`, 1,000
resamples of the covered images' patients, seed 0); the expert and NIH AUCs of a target are computed on the
same resampled patients, so ``nih_minus_expert`` gets a paired interval too. They cover the sampling of
test patients, not training randomness; fewer than 2 positive or 2 negative covered images give no
interval (NaN).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from .predictions import Predictions, take_rows
from .roc import bootstrap_auc, per_label_auc, percentile_ci

__all__ = ["EXPERT_MAPPING", "EXPERT_TARGETS", "ExpertResult", "evaluate_expert", "expert_block", "expert_labels",
           "expert_results_from_block"]

log = logging.getLogger(__name__)

# Expert finding -> the NIH labels whose max score (and any-positive truth) stands for it.
EXPERT_MAPPING: dict[str, tuple[str, ...]] = {
    "pneumothorax": ("Pneumothorax",),
    "nodule_or_mass": ("Nodule", "Mass"),
    "airspace_opacity": ("Consolidation", "Pneumonia", "Infiltration", "Edema"),
}
EXPERT_TARGETS: tuple[str, ...] = tuple(EXPERT_MAPPING)



@lru_cache(maxsize=1)
def expert_labels() -> pd.DataFrame:
    """The bundled Google 2019 labels: ``image``, ``set_id`` and one 0/1 column per expert target."""
    from ..data.bundled import full_metadata_root
    from ..data.metadata import read_google2019

    raw = read_google2019(full_metadata_root() / "google2019_nih-chest-xray-labels.csv.gz")
    return raw[["image", "set_id", *EXPERT_TARGETS]].drop_duplicates("image").reset_index(drop=True)


_NAN2 = (math.nan, math.nan)


@dataclass(frozen=True)
class ExpertResult:
    target: str
    members: tuple[str, ...]
    n: int
    expert_pos: int
    expert_auc: float
    nih_pos: int
    nih_auc: float
    expert_ci: tuple[float, float] = _NAN2
    nih_ci: tuple[float, float] = _NAN2
    difference_ci: tuple[float, float] = _NAN2  # of nih_auc - expert_auc
    n_patients: int = 0


def _paired_auc(truths: np.ndarray, score: np.ndarray, patients: np.ndarray, n_bootstrap: int, level: float,
                seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """AUCs and CIs of one score against two truth columns (expert, NIH) on the same resampled patients.

    The AUC is NaN only without a positive or a negative (as everywhere); the interval needs 2 of each.
    """
    scores = np.repeat(score[:, None], 2, axis=1)
    auc = per_label_auc(truths, scores)
    n_pos = truths.sum(axis=0)
    ok = (n_pos >= 2) & (len(truths) - n_pos >= 2)
    ci = np.full((2, 2), np.nan)
    if not ok.any():
        return auc, ci, _NAN2
    boot = bootstrap_auc(truths[:, ok], scores[:, ok], patients, n=n_bootstrap, level=level, seed=seed)
    ci[ok] = boot.ci
    diff = percentile_ci(boot.samples[:, 1] - boot.samples[:, 0], level) if ok.all() else _NAN2
    return auc, ci, diff


def evaluate_expert(pred: Predictions, experts: pd.DataFrame | None = None, *, n_bootstrap: int = 1000,
                    level: float = 0.95, seed: int = 0) -> list[ExpertResult]:
    """AUC of ``pred`` against expert labels and against its own NIH labels, on the covered images, each
    with a patient-bootstrap interval (module docstring).

    A target whose member labels are all outside the run's label set is left out; AUC is NaN where a label
    source has fewer than 2 positive or 2 negative covered images (the bundled sample covers a couple of
    dozen).
    """
    experts = expert_labels() if experts is None else experts
    common = experts.set_index("image").index.intersection(pd.Index(pred.images))
    results: list[ExpertResult] = []
    if len(common) == 0:
        return results
    sub = take_rows(pred, list(common))
    ex = experts.set_index("image").loc[common]
    for target, members in EXPERT_MAPPING.items():
        present = tuple(m for m in members if m in sub.labels)
        if not present:
            continue
        idx = [sub.labels.index(m) for m in present]
        score = sub.y_prob[:, idx].max(axis=1)
        nih = sub.y_true[:, idx].max(axis=1)
        truth = ex[target].to_numpy(dtype=float)
        keep = ~np.isnan(truth)
        truths = np.column_stack([truth[keep], nih[keep]]).astype(np.int8)
        auc, ci, diff = _paired_auc(truths, score[keep], sub.patient_ids[keep], n_bootstrap, level, seed)
        results.append(ExpertResult(
            target, present, int(keep.sum()), int(truths[:, 0].sum()), float(auc[0]), int(truths[:, 1].sum()),
            float(auc[1]), tuple(ci[0]), tuple(ci[1]), diff, int(pd.unique(sub.patient_ids[keep]).size),
        ))
    return results



# The bootstrap every stored expert block uses: a leaderboard computed from the block or from the
# predictions gives the same numbers only with the same resamples.
EXPERT_BOOTSTRAP: dict[str, Any] = {"n_bootstrap": 1000, "level": 0.95, "seed": 0}


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def expert_block(pred: Predictions, *, predictions_sha256: str | None) -> dict[str, Any]:
    """The ``expert`` block of a ``metrics.json`` test split: :func:`evaluate_expert` with
    :data:`EXPERT_BOOTSTRAP`, each result as a JSON object, and the sha256 of the predictions file it was
    computed from (read back only while that file is unchanged)."""
    results = evaluate_expert(pred, **EXPERT_BOOTSTRAP)
    out = []
    for r in results:
        d = asdict(r)
        d["members"] = list(r.members)
        for key in ("expert_auc", "nih_auc"):
            d[key] = _json_float(d[key])
        for key in ("expert_ci", "nih_ci", "difference_ci"):
            d[key] = [_json_float(v) for v in d[key]]
        out.append(d)
    return {"predictions_sha256": predictions_sha256, "bootstrap": dict(EXPERT_BOOTSTRAP), "results": out}


def expert_results_from_block(block: Mapping[str, Any] | None, predictions_sha256: str) -> list[ExpertResult] | None:
    """The :class:`ExpertResult` list stored by :func:`expert_block`, or None when there is no block, it was
    computed from other predictions (another sha256) or with another bootstrap: then recompute."""
    if not isinstance(block, Mapping) or block.get("predictions_sha256") != predictions_sha256 \
            or block.get("bootstrap") != EXPERT_BOOTSTRAP or not isinstance(block.get("results"), list):
        return None

    def num(v: Any) -> float:
        return math.nan if v is None else float(v)

    try:
        return [ExpertResult(
            str(d["target"]), tuple(d["members"]), int(d["n"]), int(d["expert_pos"]), num(d["expert_auc"]),
            int(d["nih_pos"]), num(d["nih_auc"]), (num(d["expert_ci"][0]), num(d["expert_ci"][1])),
            (num(d["nih_ci"][0]), num(d["nih_ci"][1])), (num(d["difference_ci"][0]), num(d["difference_ci"][1])),
            int(d["n_patients"])) for d in block["results"]]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
