"""The leaderboard: one flat CSV row per completed run, in the manner of timm's ``results/*.csv``.

Column order, row order and number formatting are fixed, so two leaderboards of the same store are
byte-identical and two of different stores ``diff`` line by line. Columns, left to right:

- what the run was: ``suite, run_id, backbone, head, label_set, split, grayscale, channels, image_size,
  loss, pretrained, seed``;
- how good: ``mean_auc, mean_auc_ci_lo, mean_auc_ci_hi`` (test split, patient bootstrap), then
  ``auc_<Label>`` for the 14 ChestX-ray14 labels in the paper's order (empty for labels outside the run's
  label set, or with no positive test image);
- what it cost: ``param_count, gmacs, train_images_per_s, epochs, best_epoch``;
- where it came from: ``git_commit, git_dirty, metadata_sha256, profile``;
- the expert-label columns of :mod:`cxr_bench.results.expert`;
- per-label 95% CIs ``auc_<Label>_ci_lo, auc_<Label>_ci_hi`` last, so the readable part stays on the left
  while ``cxr-bench compare --reference`` can still tell whether a paper's value lies in our interval
  without the run store.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.labels import CHESTXRAY14
from ..utils.io import atomic_write_text
from .expert import EXPERT_COLUMNS, expert_columns
from .runs import RunRecord, iter_runs

log = logging.getLogger(__name__)

RUN_COLUMNS: tuple[str, ...] = (
    "suite", "run_id", "backbone", "head", "label_set", "split", "grayscale", "channels", "image_size",
    "loss", "pretrained", "seed",
)
# The factors that identify "the same experiment" across two run stores (the run id also hashes
# hyper-parameters, so it changes whenever anything does).
KEY_COLUMNS: tuple[str, ...] = (
    "suite", "backbone", "head", "label_set", "split", "grayscale", "channels", "loss", "image_size", "seed",
)
SORT_COLUMNS: tuple[str, ...] = (
    "suite", "label_set", "backbone", "head", "grayscale", "channels", "loss", "image_size", "seed", "run_id",
)
AUC_COLUMNS: tuple[str, ...] = tuple(f"auc_{lab}" for lab in CHESTXRAY14)
CI_COLUMNS: tuple[str, ...] = tuple(f"auc_{lab}_ci_{end}" for lab in CHESTXRAY14 for end in ("lo", "hi"))
COST_COLUMNS: tuple[str, ...] = ("param_count", "gmacs", "train_images_per_s", "epochs", "best_epoch")
PROVENANCE_COLUMNS: tuple[str, ...] = ("git_commit", "git_dirty", "metadata_sha256", "profile")
# Weakly-supervised localization (``cxr-bench localize``): accuracy at T(IoBB) and average false
# positives per image, averaged over the BBox_List labels that have ground-truth boxes; the per-label
# table beside Wang et al.'s Table 4 is in the run's localization.csv and the replication report.
LOCALIZATION_THRESHOLDS: tuple[float, ...] = (0.1, 0.5)
LOCALIZATION_COLUMNS: tuple[str, ...] = (
    tuple(f"loc_acc_iobb_{t}" for t in LOCALIZATION_THRESHOLDS) + ("loc_afp_iobb_0.1", "loc_n_boxes")
)
COLUMNS: tuple[str, ...] = (
    RUN_COLUMNS + ("mean_auc", "mean_auc_ci_lo", "mean_auc_ci_hi") + AUC_COLUMNS + COST_COLUMNS
    + PROVENANCE_COLUMNS + EXPERT_COLUMNS + LOCALIZATION_COLUMNS + CI_COLUMNS
)
FAILED_COLUMNS: tuple[str, ...] = ("suite", "run_id", "status", "error", "run_dir")

# Decimal places per column in the CSV; integers are written as integers; everything else as text.
_INT_COLUMNS = frozenset({"image_size", "seed", "param_count", "epochs", "best_epoch", "expert_n", "loc_n_boxes"}
                         | {c for c in EXPERT_COLUMNS if "_pos_" in c})
_STR_COLUMNS = frozenset({"suite", "run_id", "backbone", "head", "label_set", "split", "grayscale",
                          "channels", "loss", "pretrained", "git_commit", "metadata_sha256", "profile"})


def _decimals(col: str) -> int:
    if col == "gmacs":
        return 3
    if col == "train_images_per_s":
        return 1
    return 4  # AUCs and their CIs, as the papers print them


@dataclass(frozen=True)
class Leaderboard:
    """``table``: completed runs, :data:`COLUMNS`, sorted; ``failed``: runs that did not finish."""

    table: pd.DataFrame
    failed: pd.DataFrame


def _first(d: dict[str, Any], *paths: str) -> Any:
    """The first non-empty value among dotted ``paths`` of a nested dict."""
    for p in paths:
        cur: Any = d
        for part in p.split("."):
            if not isinstance(cur, dict) or part not in cur:
                cur = None
                break
            cur = cur[part]
        if cur not in (None, "", {}):
            return cur
    return None


def _pretrained_label(value: Any) -> str:
    if value in (None, "", False):
        return "none"
    s = str(value)
    return s if s in ("cache", "imagenet") else os.path.basename(s.rstrip("/")) or s


def _metadata_sha(manifest: dict[str, Any]) -> str:
    """sha256 of the Data_Entry file the run used (the runner records ``data.file_hashes`` by file name)."""
    hashes = _first(manifest, "data.file_hashes")
    if isinstance(hashes, dict):
        for name, value in sorted(hashes.items()):
            if str(name).lower().startswith("data_entry") and isinstance(value, str):
                return value
    return ""


def run_row(rec: RunRecord, *, expert: bool = True) -> dict[str, Any]:
    """The leaderboard row of one completed run."""
    m = rec.metrics
    test = m.get("test") or {}
    per_label = test.get("per_label") or {}
    ci = test.get("mean_auc_ci") or [None, None]
    man = rec.manifest
    row: dict[str, Any] = {
        "suite": rec.suite,
        "run_id": rec.run_id,
        "backbone": rec.cfg("model.backbone"),
        "head": rec.cfg("model.head"),
        "label_set": m.get("label_set") or rec.cfg("data.label_set"),
        "split": rec.cfg("data.split"),
        "grayscale": rec.cfg("data.grayscale"),
        "channels": rec.cfg("data.channels"),
        "image_size": rec.cfg("data.image_size"),
        "loss": rec.cfg("loss.name"),
        "pretrained": _pretrained_label(rec.cfg("model.pretrained")),
        "seed": rec.cfg("seed"),
        "mean_auc": test.get("mean_auc"),
        "mean_auc_ci_lo": ci[0],
        "mean_auc_ci_hi": ci[1],
        "param_count": m.get("params"),
        "gmacs": m.get("gmacs"),
        "train_images_per_s": m.get("train_images_per_s"),
        "epochs": m.get("epochs_run"),
        "best_epoch": m.get("best_epoch"),
        "git_commit": _first(man, "git.commit"),
        "git_dirty": _first(man, "git.dirty"),
        "metadata_sha256": _metadata_sha(man),
        "profile": _first(man, "suite.profile") or "",
    }
    for lab in CHESTXRAY14:
        entry = per_label.get(lab) or {}
        row[f"auc_{lab}"] = entry.get("auc")
        lo, hi = (entry.get("ci") or [None, None])[:2]
        row[f"auc_{lab}_ci_lo"] = lo
        row[f"auc_{lab}_ci_hi"] = hi
    if expert:
        row.update(expert_columns(rec))
    else:
        row.update({c: math.nan for c in EXPERT_COLUMNS})
    row.update(localization_columns(rec.run_dir))
    return row


def localization_columns(run_dir: str | Path) -> dict[str, Any]:
    """:data:`LOCALIZATION_COLUMNS` from a run's ``localization.csv``; NaN when it was not localized."""
    out: dict[str, Any] = {c: math.nan for c in LOCALIZATION_COLUMNS}
    path = Path(run_dir) / "localization.csv"
    if not path.is_file():
        return out
    df = pd.read_csv(path)
    iobb = df[(df["metric"] == "iobb") & (df["n_gt"] > 0)]
    for t in LOCALIZATION_THRESHOLDS:
        at = iobb[(iobb["threshold"] - t).abs() < 1e-9]
        out[f"loc_acc_iobb_{t}"] = at["accuracy"].mean() if len(at) else math.nan
    at = iobb[(iobb["threshold"] - 0.1).abs() < 1e-9]
    if len(at):
        out["loc_afp_iobb_0.1"] = at["afp"].mean()
        out["loc_n_boxes"] = int(at["n_gt"].sum())
    return out


def build_leaderboard(runs_dir: str | Path, suite: str | None = None, *, expert: bool = True) -> Leaderboard:
    """Read every run under ``runs_dir`` into a :class:`Leaderboard` (completed rows + failed list)."""
    rows, failed = [], []
    for rec in iter_runs(runs_dir, suite, include_incomplete=True):
        if rec.completed:
            rows.append(run_row(rec, expert=expert))
        else:
            if rec.failed:
                log.warning("run %s/%s %s: %s", rec.suite, rec.run_id, rec.status, rec.error or "(no message)")
            failed.append({"suite": rec.suite, "run_id": rec.run_id, "status": rec.status, "error": rec.error,
                           "run_dir": str(rec.run_dir)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return Leaderboard(sort_leaderboard(table), pd.DataFrame(failed, columns=list(FAILED_COLUMNS)))


def sort_leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the stable order of :data:`SORT_COLUMNS` (missing values last)."""
    keys = [c for c in SORT_COLUMNS if c in df.columns]
    if df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)


def format_leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as the exact text written to the CSV: fixed decimals, integers without ``.0``, booleans
    lower-case, missing values empty."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        out[col] = [_format_cell(col, v) for v in df[col]]
    return out


def _format_cell(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool) or col == "git_dirty":
        return str(v).lower() if isinstance(v, (bool, str)) else str(bool(v)).lower()
    if col in _STR_COLUMNS:
        return str(v)
    if col in _INT_COLUMNS:
        return str(int(round(float(v))))
    try:
        return f"{float(v):.{_decimals(col)}f}"
    except (TypeError, ValueError):
        return str(v)


def leaderboard_csv(df: pd.DataFrame) -> str:
    return format_leaderboard(df).to_csv(index=False, lineterminator="\n")


def write_leaderboard(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the leaderboard CSV atomically (a reader never sees a half-written file)."""
    path = Path(path)
    atomic_write_text(path, leaderboard_csv(df))
    log.info("wrote %s (%d runs)", path, len(df))
    return path


def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """Read a leaderboard CSV back with text columns kept as text (run ids and commits can look numeric)."""
    from ..errors import RunStoreError

    path = Path(path)
    if not path.is_file():
        raise RunStoreError(f"leaderboard {path} does not exist; write one with `cxr-bench leaderboard`")
    df = pd.read_csv(path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False,
                     na_values={c: [""] for c in COLUMNS if c not in _STR_COLUMNS})
    missing = [c for c in ("run_id", "mean_auc") if c not in df.columns]
    if missing:
        raise RunStoreError(f"{path}: not a cxr-bench leaderboard (no {missing[0]!r} column)")
    return df
