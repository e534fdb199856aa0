"""The leaderboard: one flat CSV row per completed run, in the manner of timm's ``results/*.csv``, and two
companions written beside it.

Column order, row order and number formatting are fixed, so two leaderboards of the same store are
byte-identical and two of different stores ``diff`` line by line. Every column name is snake_case (label
names lower-cased: ``auc_pleural_thickening``). ``leaderboard.csv``, left to right:

- which run: ``suite, run_id, status`` (``completed``, or ``damaged`` when its saved predictions no longer
  match its metrics.json: then ``problem`` says why and the metric columns stay empty), ``problem``,
  ``run_name, blocks`` (the suite's display name and blocks);
- :data:`FACTOR_COLUMNS`: every identity field of the run's config (``RunConfig.identity_dict(full=True)``),
  one column each, so two runs that differ in anything that changes their numbers differ in a column and
  two commits' leaderboards can be matched on them (``cxr-bench compare A B``);
- how good: ``mean_auc, mean_auc_ci_lo, mean_auc_ci_hi`` (test split, patient bootstrap), then
  ``auc_<label>`` for the 14 ChestX-ray14 labels in the paper's order (empty for labels outside the run's
  label set, or with no positive test image);
- what it cost: ``param_count, gmacs, train_images_per_s, epochs_run, best_epoch``, and what inference costs
  (:data:`cxr_bench.results.cost.COST_COLUMNS`: CPU batch-1 latency, throughput, memory, sizes, GPU and
  ONNX Runtime latency where measured);
- where it came from: ``git_commit, git_dirty, metadata_sha256, profile, bundled_sample``, ``data`` (which data
  the run was tested on: ``NIH <version> <sha256[:8]>``, ``bundled sample`` or ``phantom``), ``synthetic``
  (a phantom run: the sanity check, listed but never ranked, compared or paired: :func:`ranked_rows`),
  ``comparable`` and ``why_not`` (why the numbers cannot stand beside a paper's);
- the expert-label columns of :mod:`cxr_bench.results.expert`, localization (``loc_*``), calibration
  (``brier_<label>``, ``ece_<label>``, their means over labels);
- per-label 95% CIs ``auc_<label>_ci_lo, auc_<label>_ci_hi`` last, so the readable part stays on the left
  while ``cxr-bench compare --reference`` can still tell whether a paper's value lies in our interval
  without the run store.

``leaderboard_agg.csv`` (:func:`aggregate_seeds`): one row per configuration (the factor columns except
``seed``) with the spread over its seeds. ``leaderboard_subgroups.csv`` (:data:`SUBGROUP_COLUMNS`): per run
and subgroup (sex, age band, view) each label's AUC and the underdiagnosis rate, with intervals and gaps,
from each run's metrics.json.

Every file is a plain CSV (header first; ``pd.read_csv`` reads it); beside each, ``<name>.csv.json``
(:func:`cxr_bench.utils.io.write_csv`) holds its provenance and, for runs on the bundled sample, the notes
saying that their numbers are a smoke test at chance level and why. Every column is explained in
``docs/columns.md``, generated from :data:`COLUMN_DOCS` (:func:`column_docs_markdown`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig, get_dotted
from ..data.bundled import SAMPLE_N_IMAGES
from ..data.labels import CHESTXRAY14
from ..data.sample_note import SampleFacts, finite, sample_note_lines, whole
from ..errors import CxrBenchError, RunStoreError
from ..utils.io import csv_text, is_own_sidecar, sidecar_path, write_csv
from .cost import COST_COLUMNS as INFERENCE_COST_COLUMNS
from .cost import COST_DOCS, cost_columns
from .expert import EXPERT_COLUMNS, expert_columns
from .runs import RunRecord, iter_runs

log = logging.getLogger(__name__)


def snake(name: str) -> str:
    """A label or value as a column-name part: ``Pleural_Thickening`` -> ``pleural_thickening``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def auc_column(label: str) -> str:
    """The leaderboard column of ``label``'s test AUC (append ``_ci_lo`` / ``_ci_hi`` for its interval)."""
    return f"auc_{snake(label)}"


# ------------------------------------------------------------------------------------------ factors
# Config key -> column where the leaf name alone would be unclear or collide; ``eval.*`` fields get an
# ``eval_`` prefix (``eval_threshold`` is not a decision threshold of the model).
_FACTOR_NAMES = {"loss.name": "loss", "loss.kwargs": "loss_kwargs"}
# Shown first (the factors a reader scans for); every other identity field follows in config order.
_FIRST_FACTORS = ("backbone", "head", "label_set", "split", "grayscale", "channels", "image_size", "loss",
                  "pretrained", "freeze_backbone", "optimizer", "lr", "epochs", "seed")


def _kind(tp: Any) -> str:
    """``bool | int | float | str | json`` for a config field's annotation (``X | None`` as ``X``)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(tp, "json")


def _factor_specs() -> dict[str, tuple[str, str]]:
    """Column -> (dotted config key, kind), for every identity field of :class:`RunConfig`: derived from the
    dataclasses, so a new config field becomes a column without touching this module."""
    specs: dict[str, tuple[str, str]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("identity", True):
                continue
            key = prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
                continue
            section = prefix.rstrip(".")
            col = _FACTOR_NAMES.get(key, f"eval_{f.name}" if section == "eval" else f.name)
            if col in specs:
                raise RuntimeError(f"config fields {specs[col][0]} and {key} both map to leaderboard column {col}")
            specs[col] = (key, _kind(hints[f.name]))

    walk(RunConfig, "")
    first = [c for c in _FIRST_FACTORS if c in specs]
    return {c: specs[c] for c in first + [c for c in specs if c not in first]}


FACTORS: dict[str, tuple[str, str]] = _factor_specs()
# Every factor that can differ between two runs of a suite; two rows with equal values here (and the same
# suite) are the same experiment, whatever their run ids. ``cxr-bench compare`` matches on them.
FACTOR_COLUMNS: tuple[str, ...] = tuple(FACTORS)
RUN_COLUMNS: tuple[str, ...] = ("suite", "run_id", "status", "problem", "run_name", "blocks") + FACTOR_COLUMNS
SORT_COLUMNS: tuple[str, ...] = (
    "suite", "label_set", "backbone", "head", "grayscale", "channels", "loss", "image_size", "freeze_backbone",
    "seed", "run_id",
)
AUC_COLUMNS: tuple[str, ...] = tuple(auc_column(lab) for lab in CHESTXRAY14)
CI_COLUMNS: tuple[str, ...] = tuple(f"{auc_column(lab)}_ci_{end}" for lab in CHESTXRAY14 for end in ("lo", "hi"))
COST_COLUMNS: tuple[str, ...] = ("param_count", "gmacs", "train_images_per_s", "epochs_run", "best_epoch",
                                 *INFERENCE_COST_COLUMNS)
PROVENANCE_COLUMNS: tuple[str, ...] = ("git_commit", "git_dirty", "metadata_sha256", "profile", "bundled_sample",
                                       "data", "synthetic", "comparable", "why_not")
# Weakly-supervised localization (``cxr-bench localize``): accuracy at T(IoBB) and average false
# positives per image, averaged over the BBox_List labels that have ground-truth boxes; the per-label
# table beside Wang et al.'s Table 4 is in the run's localization.csv and the replication report.
LOCALIZATION_THRESHOLDS: tuple[float, ...] = (0.1, 0.5)


def _t(threshold: float) -> str:
    return f"{threshold:g}".replace(".", "p")  # 0.1 -> 0p1: no dots in column names


LOCALIZATION_COLUMNS: tuple[str, ...] = (
    tuple(f"loc_acc_iobb_{_t(t)}" for t in LOCALIZATION_THRESHOLDS) + (f"loc_afp_iobb_{_t(0.1)}", "loc_n_boxes")
)
# Calibration of the test probabilities (helper ``cxr_bench.metrics.calibration_table``, whose docstring
# states the binning): Brier score and expected calibration error per label, and their means over labels.
CALIBRATION_COLUMNS: tuple[str, ...] = ("mean_brier", "mean_ece") + tuple(
    f"{m}_{snake(lab)}" for m in ("brier", "ece") for lab in CHESTXRAY14)
COLUMNS: tuple[str, ...] = (
    RUN_COLUMNS + ("mean_auc", "mean_auc_ci_lo", "mean_auc_ci_hi") + AUC_COLUMNS + COST_COLUMNS
    + PROVENANCE_COLUMNS + EXPERT_COLUMNS + LOCALIZATION_COLUMNS + CALIBRATION_COLUMNS + CI_COLUMNS
)
FAILED_COLUMNS: tuple[str, ...] = ("suite", "run_id", "status", "error", "run_dir")
# Seed aggregation: per value column its mean over the seeds (same name), sample sd and trimmed mean.
AGG_VALUE_COLUMNS: tuple[str, ...] = ("mean_auc",) + AUC_COLUMNS
AGG_COLUMNS: tuple[str, ...] = (
    ("suite",) + tuple(c for c in FACTOR_COLUMNS if c != "seed") + ("n_seeds", "seeds", "run_ids")
    + tuple(f"{c}{s}" for c in AGG_VALUE_COLUMNS for s in ("", "_sd", "_trimmed"))
)
# Subgroups (helper ``cxr_bench.metrics.subgroups``), long format: per run, attribute (sex, age band, view)
# and group, one ``auc`` row per label and one ``underdiagnosis_rate`` row (images with a finding that the
# model calls normal, over the images with a finding; ``label`` empty), each with its patient-bootstrap
# interval and its gap to the attribute's reference group.
SUBGROUP_COLUMNS: tuple[str, ...] = (
    "suite", "run_id", "run_name", "metric", "attribute", "group", "label", "value", "ci_lo", "ci_hi", "reference",
    "gap", "gap_ci_lo", "gap_ci_hi", "n_pos", "n_neg", "n_finding", "n_underdiagnosed", "n_images", "n_patients",
    "reason",
)
_SUBGROUP_RENAMES = {"ci_low": "ci_lo", "ci_high": "ci_hi", "gap_ci_low": "gap_ci_lo", "gap_ci_high": "gap_ci_hi"}


# ------------------------------------------------------------------------------------------ column dictionary
# What every column of the three leaderboard files means: made here, beside the columns, and written out as
# docs/columns.md by column_docs_markdown() (a test checks that file against this and every column).
def _column_docs() -> dict[str, dict[str, str]]:
    from .expert import EXPERT_MAPPING

    run = {
        "suite": "suite the run belongs to (its folder in the run store)",
        "run_id": "the run's id: a hash of the identity fields of its config that differ from the defaults",
        "status": "`completed`, or `damaged` when its saved predictions no longer match its metrics.json "
                  "(metric columns then empty)",
        "problem": "why a damaged run is damaged (empty otherwise)",
        "run_name": "the suite's display name of the run",
        "blocks": "the suite blocks the run belongs to, `+`-separated",
    }
    for col, (key, kind) in FACTORS.items():
        run[col] = f"config field `{key}` ({kind}){'; `none`, a file name, `cache` or `imagenet`' if col == 'pretrained' else ''}"
    metric = {
        "mean_auc": "mean test ROC AUC over the labels with a positive and a negative test image",
        "mean_auc_ci_lo": "lower end of the 95% patient-bootstrap interval of `mean_auc` (1,000 resamples of "
                          "test patients)",
        "mean_auc_ci_hi": "upper end of that interval",
    }
    for lab in CHESTXRAY14:
        metric[auc_column(lab)] = f"test ROC AUC of {lab} (empty outside the run's label set or without positives)"
    cost = {"param_count": "parameters of the model", "gmacs": "multiply-accumulates of one forward pass, in "
            "billions, at the run's image size", "train_images_per_s": "training throughput (median over epochs)",
            "epochs_run": "epochs trained", "best_epoch": "epoch whose weights were scored (best validation "
            "mean AUC)", **COST_DOCS}
    prov = {"git_commit": "commit of cxr-bench that ran it", "git_dirty": "whether the working tree had "
            "uncommitted changes", "metadata_sha256": "sha256 of the Data_Entry metadata file it used",
            "profile": "the suite profile it ran under (`sample`, `paper`, ...)",
            "bundled_sample": "trained and tested on the bundled 1,673-image NIH sample",
            "data": "which data it was tested on: `NIH <version> <first 8 hex digits of the metadata sha256>`, "
                    "`bundled sample` or `phantom`",
            "synthetic": "tested on a synthetic phantom release (the sanity check): listed, never ranked, "
                         "compared with a paper or paired in an ablation",
            "comparable": "whether its numbers can stand beside a paper's as far as the data goes (false for "
                          "the bundled sample and phantoms; `compare --reference` checks the protocol)",
            "why_not": "why `comparable` is false (empty otherwise)"}
    expert = {"expert_n": "test images covered by the Google 2019 radiologist labels (Majkowska et al.)"}
    for t, members in EXPERT_MAPPING.items():
        score = "max of p(" + ", ".join(members) + ")"
        expert[f"expert_pos_{t}"] = f"covered images positive for {t} by the expert labels"
        expert[f"expert_auc_{t}"] = f"AUC of {score} against the expert {t} labels"
        expert[f"nih_pos_{t}_same_images"] = f"the same images positive for {t} by the NIH (NLP) labels"
        expert[f"nih_auc_{t}_same_images"] = f"AUC of {score} against the NIH labels on the same images"
    loc = {f"loc_acc_iobb_{_t(t)}": f"localization accuracy at T(IoBB) = {t:g}, mean over the boxed labels"
           for t in LOCALIZATION_THRESHOLDS}
    loc[f"loc_afp_iobb_{_t(0.1)}"] = "average false positives per image at T(IoBB) = 0.1"
    loc["loc_n_boxes"] = "ground-truth boxes scored"
    cal = {"mean_brier": "Brier score of the test probabilities, mean over labels",
           "mean_ece": "expected calibration error (15 equal-width bins), mean over labels"}
    for lab in CHESTXRAY14:
        cal[f"brier_{snake(lab)}"] = f"Brier score of {lab}"
        cal[f"ece_{snake(lab)}"] = f"expected calibration error of {lab}"
    ci = {f"{auc_column(lab)}_ci_{end}": f"{'lower' if end == 'lo' else 'upper'} end of the 95% "
          f"patient-bootstrap interval of {auc_column(lab)}" for lab in CHESTXRAY14 for end in ("lo", "hi")}
    table = {**run, **metric, **cost, **prov, **expert, **loc, **cal, **ci}
    agg = {c: table[c] for c in AGG_COLUMNS if c in table}
    agg.update({"n_seeds": "completed, undamaged runs (seeds) of the configuration",
                "seeds": "their seeds, `;`-separated", "run_ids": "their run ids, `;`-separated"})
    for c in AGG_VALUE_COLUMNS:
        agg[c] = f"{c} averaged over the seeds"
        agg[f"{c}_sd"] = f"sample standard deviation of {c} over the seeds (empty with one seed)"
        agg[f"{c}_trimmed"] = f"{c} over the seeds without the best and the worst when there are 5 or more"
    sub = {"suite": run["suite"], "run_id": run["run_id"], "run_name": run["run_name"],
           "metric": "`auc` (one row per label) or `underdiagnosis_rate` (images with a finding called normal)",
           "attribute": "`sex`, `age_band` or `view`", "group": "the subgroup", "label": "label of an `auc` row",
           "value": "the AUC or the underdiagnosis rate in the subgroup",
           "ci_lo": "lower end of its 95% patient-bootstrap interval", "ci_hi": "upper end",
           "reference": "the attribute's reference group", "gap": "value minus the reference group's",
           "gap_ci_lo": "lower end of the gap's interval", "gap_ci_hi": "upper end",
           "n_pos": "positive images in the subgroup", "n_neg": "negative images",
           "n_finding": "images with a finding", "n_underdiagnosed": "of those, called normal",
           "n_images": "images in the subgroup", "n_patients": "patients in the subgroup",
           "reason": "why a value is empty"}
    return {"leaderboard.csv": {c: table[c] for c in COLUMNS}, "leaderboard_agg.csv": {c: agg[c] for c in AGG_COLUMNS},
            "leaderboard_subgroups.csv": {c: sub[c] for c in SUBGROUP_COLUMNS}}


COLUMN_DOCS: dict[str, dict[str, str]] = _column_docs()


def column_docs_markdown() -> str:
    """The text of ``docs/columns.md``: one table per leaderboard file, every column with its meaning."""
    lines = ["# Leaderboard columns", "",
             "Generated from `cxr_bench.results.leaderboard.COLUMN_DOCS` (regenerate with",
             "`python -c \"from cxr_bench.results.leaderboard import column_docs_markdown as m; "
             "print(m(), end='')\" > docs/columns.md`);",
             "a test checks this file against the code. Every file is a plain CSV (header first); its provenance",
             "and notes (e.g. why a bundled-sample run is not comparable) are in `<name>.csv.json` beside it.", ""]
    for name, cols in COLUMN_DOCS.items():
        lines += [f"## {name}", "", "| column | meaning |", "|---|---|"]
        lines += [f"| `{c}` | {d} |" for c, d in cols.items()]
        lines.append("")
    return "\n".join(lines)

# How each column is written: text as is, integers without ``.0``, booleans lower-case, hyper-parameters
# in Python's shortest round-trip form (1e-05 stays 1e-05), everything else with fixed decimals.
_STR_COLUMNS = frozenset({"suite", "run_id", "status", "problem", "run_name", "blocks", "git_commit", "data", "why_not",
                          "metadata_sha256", "profile", "seeds", "run_ids", "metric", "attribute", "group", "label",
                          "reference", "reason"}
                         | {c for c, (_, k) in FACTORS.items() if k in ("str", "json")})
_INT_COLUMNS = frozenset({"param_count", "epochs_run", "best_epoch", "expert_n", "loc_n_boxes", "n_seeds", "n_pos",
                          "n_neg", "n_finding", "n_underdiagnosed", "n_images", "n_patients", "cpu_threads"} | {c for c in EXPERT_COLUMNS if "_pos_" in c}
                         | {c for c, (_, k) in FACTORS.items() if k == "int"})
_BOOL_COLUMNS = frozenset({"git_dirty", "bundled_sample", "synthetic", "comparable"} | {c for c, (_, k) in FACTORS.items() if k == "bool"})
_REPR_COLUMNS = frozenset(c for c, (_, k) in FACTORS.items() if k == "float")


def _decimals(col: str) -> int:
    if col == "gmacs":
        return 3
    if col in ("train_images_per_s", "cpu_throughput_img_s", "gpu_throughput_img_s"):
        return 1
    if col in INFERENCE_COST_COLUMNS:
        return 3
    return 4  # AUCs and their CIs, as the papers print them


@dataclass(frozen=True)
class Leaderboard:
    """``table``: one row per completed run, :data:`COLUMNS`, sorted (damaged runs flagged in ``status``);
    ``failed``: runs that did not finish; ``subgroups``: :data:`SUBGROUP_COLUMNS`."""

    table: pd.DataFrame
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FAILED_COLUMNS)))
    subgroups: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SUBGROUP_COLUMNS)))
    # NIH vs external-set AUC per (run, set, label) (results/generalization.py); written only when non-empty.
    generalization: pd.DataFrame | None = None

    @cached_property
    def aggregate(self) -> pd.DataFrame:
        """:func:`aggregate_seeds` of the table."""
        return aggregate_seeds(self.table)

    @property
    def damaged(self) -> pd.DataFrame:
        """The rows of runs whose saved predictions no longer match their metrics.json."""
        if "status" not in self.table.columns:
            return self.table.iloc[:0]
        return self.table[self.table["status"] == "damaged"]


def _dig(d: dict[str, Any], dotted: str) -> Any:
    """The manifest value at ``dotted`` (:func:`cxr_bench.config.get_dotted`); None when absent or empty."""
    value = get_dotted(d, dotted, None)
    return None if value in ("", {}) else value


def _pretrained_label(value: Any) -> str:
    if value in (None, "", False):
        return "none"
    s = str(value)
    return s if s in ("cache", "imagenet") else os.path.basename(s.rstrip("/")) or s


def _metadata_sha(manifest: dict[str, Any]) -> str:
    """sha256 of the Data_Entry file the run used (the runner records ``data.file_hashes`` by file name)."""
    hashes = _dig(manifest, "data.file_hashes")
    if isinstance(hashes, dict):
        for name, value in sorted(hashes.items()):
            if str(name).lower().startswith("data_entry") and isinstance(value, str):
                return value
    return ""


def factor_values(rec: RunRecord) -> dict[str, Any]:
    """:data:`FACTOR_COLUMNS` of one run, from its config."""
    out: dict[str, Any] = {}
    for col, (key, kind) in FACTORS.items():
        v = get_dotted(rec.config, key)
        if col == "pretrained":
            v = _pretrained_label(v)
        elif kind == "json" and v is not None:
            v = json.dumps(v, sort_keys=True, separators=(",", ":"))
        out[col] = v
    return out


def _blocks(manifest: dict[str, Any]) -> str:
    blocks = _dig(manifest, "suite.blocks")
    return "+".join(str(b) for b in blocks) if isinstance(blocks, list) else ""


def calibration_columns(table: pd.DataFrame | None) -> dict[str, Any]:
    """:data:`CALIBRATION_COLUMNS` from a ``calibration_table`` (one row per label and bin, with the label's
    ``brier`` and ``ece`` repeated on each); NaN where the table has no row for a label."""
    out: dict[str, Any] = {c: math.nan for c in CALIBRATION_COLUMNS}
    if table is None or table.empty:
        return out
    per_label = table.groupby("label", sort=False)[["brier", "ece"]].first()
    for lab in CHESTXRAY14:
        if lab in per_label.index:
            out[f"brier_{snake(lab)}"] = float(per_label.at[lab, "brier"])
            out[f"ece_{snake(lab)}"] = float(per_label.at[lab, "ece"])
    for m in ("brier", "ece"):
        values = pd.to_numeric(per_label[m], errors="coerce").dropna()
        out[f"mean_{m}"] = float(values.mean()) if len(values) else math.nan
    return out


def _split_table(reader: str, block: dict[str, Any], key: str, rec: RunRecord) -> pd.DataFrame | None:
    """``BLOCK_TABLES[reader](block)`` (:mod:`cxr_bench.metrics.extended`) when the block has ``key``; None
    otherwise."""
    from ..metrics.extended import BLOCK_TABLES

    if not block.get(key):
        return None
    try:
        return BLOCK_TABLES[reader](block)
    except CxrBenchError as e:
        log.warning("%s/metrics.json: %s block unreadable (%s); its columns are left empty", rec.run_dir, key, e)
        return None


def subgroup_rows(rec: RunRecord, auc: pd.DataFrame | None, underdiagnosis: pd.DataFrame | None = None,
                  ) -> pd.DataFrame:
    """:data:`SUBGROUP_COLUMNS` of one run from its ``subgroup_table`` and ``underdiagnosis_table``."""
    frames = []
    for metric, table, value in (("auc", auc, "auc"), ("underdiagnosis_rate", underdiagnosis, "rate")):
        if table is None or table.empty:
            continue
        df = table.rename(columns={**_SUBGROUP_RENAMES, value: "value"}).assign(metric=metric)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(SUBGROUP_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    df = df.assign(suite=rec.suite, run_id=rec.run_id, run_name=rec.cfg("name") or "")
    if "label" in df.columns:
        df["label"] = df["label"].fillna("")
    return df.reindex(columns=list(SUBGROUP_COLUMNS))


WHY_NOT_SYNTHETIC = ("tested on a synthetic phantom release (the pipeline's sanity check): its AUCs measure the "
                     "pipeline, not a model; never ranked, compared with a paper or paired in an ablation")
WHY_NOT_SAMPLE = (f"tested on the bundled {SAMPLE_N_IMAGES:,}-image NIH sample (a smoke test at chance level): not "
                  "comparable with any paper; run with --data-root on the full NIH release")


def data_columns(rec: RunRecord) -> dict[str, Any]:
    """``data``, ``synthetic``, ``comparable`` and ``why_not`` of one run: which data it was tested on and
    whether its numbers can stand beside a paper's (the protocol itself is checked by ``compare
    --reference``)."""
    synthetic = rec.synthetic
    why = WHY_NOT_SYNTHETIC if synthetic else WHY_NOT_SAMPLE if rec.is_bundled_sample else ""
    return {"data": rec.data_name, "synthetic": synthetic, "comparable": not why, "why_not": why}


def truthy(values: Iterable[Any]) -> np.ndarray:
    """A boolean column of a leaderboard (``synthetic``, ``bundled_sample``, ``comparable`` ...) as a numpy
    mask, whether it holds booleans or the text a CSV reads back: ``True``, ``"true"`` or ``"1"`` (any case,
    blanks around ignored) are true, anything else (``False``, NaN, empty) is false."""
    return np.array([v is True or (isinstance(v, (bool, np.bool_)) and bool(v))
                     or str(v).strip().lower() in ("true", "1") for v in values], dtype=bool)


def ranked_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that may be ranked or compared: completed (not damaged) and tested on real data (not
    ``synthetic``, see :func:`truthy`). Every ranking, comparison and accuracy figure starts from these rows."""
    keep = np.ones(len(table), dtype=bool)
    if "status" in table.columns:
        keep &= (table["status"].astype(str) == "completed").to_numpy()
    if "synthetic" in table.columns:
        keep &= ~truthy(table["synthetic"])
    return table[keep]


def run_row(rec: RunRecord, *, expert: bool = True) -> dict[str, Any]:
    """The leaderboard row of one completed run (metric columns empty when it is damaged)."""
    man = rec.manifest
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    problems = rec.problems
    row.update({
        "suite": rec.suite, "run_id": rec.run_id, "status": "damaged" if problems else "completed",
        "problem": "; ".join(problems), "run_name": rec.cfg("name") or "", "blocks": _blocks(man),
        **factor_values(rec),
        "git_commit": _dig(man, "git.commit"), "git_dirty": _dig(man, "git.dirty"),
        "metadata_sha256": _metadata_sha(man), "profile": _dig(man, "suite.profile") or "",
        "bundled_sample": rec.is_bundled_sample, **data_columns(rec),
    })
    try:
        m = rec.metrics
    except RunStoreError:
        m = {}
    row.update({"param_count": m.get("params"), "gmacs": m.get("gmacs"),
                "train_images_per_s": m.get("train_images_per_s"), "epochs_run": m.get("epochs_run"),
                "best_epoch": m.get("best_epoch"), **cost_columns(rec.run_dir)})
    if problems:  # numbers that the saved predictions no longer back are not shown
        return row
    test = m.get("test") or {}
    ci = test.get("mean_auc_ci") or [None, None]
    row.update({"mean_auc": test.get("mean_auc"), "mean_auc_ci_lo": ci[0], "mean_auc_ci_hi": ci[1]})
    per_label = test.get("per_label") or {}
    for lab in CHESTXRAY14:
        entry = per_label.get(lab) or {}
        col = auc_column(lab)
        row[col] = entry.get("auc")
        row[f"{col}_ci_lo"], row[f"{col}_ci_hi"] = (entry.get("ci") or [None, None])[:2]
    if expert:
        row.update(expert_columns(rec))
    row.update(localization_columns(rec.run_dir))
    row.update(calibration_columns(_split_table("calibration_table", test, "calibration", rec)))
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
        out[f"loc_acc_iobb_{_t(t)}"] = at["accuracy"].mean() if len(at) else math.nan
    at = iobb[(iobb["threshold"] - 0.1).abs() < 1e-9]
    if len(at):
        out[f"loc_afp_iobb_{_t(0.1)}"] = at["afp"].mean()
        out["loc_n_boxes"] = int(at["n_gt"].sum())
    return out


def build_leaderboard(runs_dir: str | Path, suite: str | None = None, *, expert: bool = True) -> Leaderboard:
    """Read every run under ``runs_dir`` into a :class:`Leaderboard`.

    Completed runs are rows (a damaged one too, flagged, so one bad run neither hides the others nor
    disappears); runs that did not finish, and run directories that cannot be read at all, are listed in
    ``failed``.
    """
    rows, failed, subgroups, intact = [], [], [], []

    def unreadable(run_dir: Path, e: RunStoreError) -> None:
        log.warning("%s: %s", run_dir, e)
        failed.append({"suite": run_dir.parent.name, "run_id": run_dir.name, "status": "unreadable",
                       "error": str(e), "run_dir": str(run_dir)})

    for rec in iter_runs(runs_dir, suite, include_incomplete=True, on_unreadable=unreadable):
        try:
            completed = rec.completed
        except RunStoreError as e:  # an unknown status in the manifest
            unreadable(rec.run_dir, e)
            continue
        if completed:
            rows.append(run_row(rec, expert=expert))
            if rec.problems:
                log.warning("run %s/%s is damaged: %s; `cxr-bench run` re-evaluates it", rec.suite, rec.run_id,
                            "; ".join(rec.problems))
            else:
                intact.append(rec)
                test = rec.metrics.get("test") or {}
                subgroups.append(subgroup_rows(rec, _split_table("subgroup_table", test, "subgroups", rec),
                                               _split_table("underdiagnosis_table", test, "subgroups", rec)))
        else:
            if rec.failed:
                log.warning("run %s/%s %s: %s", rec.suite, rec.run_id, rec.status, rec.error or "(no message)")
            failed.append({"suite": rec.suite, "run_id": rec.run_id, "status": str(rec.status), "error": rec.error,
                           "run_dir": str(rec.run_dir)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    frames = [f for f in subgroups if not f.empty]
    sub = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SUBGROUP_COLUMNS))
    from .generalization import generalization_table

    return Leaderboard(sort_leaderboard(table), pd.DataFrame(failed, columns=list(FAILED_COLUMNS)),
                       subgroups=sub, generalization=generalization_table(intact))


def sort_leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the stable order of :data:`SORT_COLUMNS` (missing values last)."""
    keys = [c for c in SORT_COLUMNS if c in df.columns]
    if df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)


# ------------------------------------------------------------------------------------------ seeds
def trimmed_mean(values: Sequence[float] | np.ndarray) -> float:
    """MLPerf's aggregate of repeated runs: with 5 or more values the best and the worst are dropped and
    the rest averaged (MLPerf Training rules, "Benchmark results"); with fewer, the plain mean. NaN for no
    value."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size >= 5:
        v = v[1:-1]
    return float(v.mean()) if v.size else math.nan


def trimmed_seeds(mean_auc: Sequence[float] | np.ndarray) -> np.ndarray:
    """Which seeds MLPerf's olympic scoring keeps: with 5 or more seeds, all but the one with the best and
    the one with the worst mean AUC (a seed without a mean AUC counts as the worst); with fewer, all."""
    v = np.asarray(mean_auc, dtype=np.float64)
    keep = np.ones(v.size, dtype=bool)
    if v.size >= 5:
        order = np.argsort(np.where(np.isnan(v), -np.inf, v), kind="mergesort")
        keep[[order[0], order[-1]]] = False
    return keep


def aggregate_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (suite and every factor column except ``seed``) over its completed,
    undamaged runs: ``n_seeds``, the ``seeds`` and ``run_ids`` (``;``-separated), and for the mean AUC and
    each label's AUC the mean over seeds (same column name), the sample standard deviation (``_sd``,
    ddof = 1; empty with one seed) and the trimmed mean (``_trimmed``): the mean over the seeds that
    :func:`trimmed_seeds` keeps, chosen once by mean AUC, so every column drops the same two seeds.

    The sd is the spread of training outcomes (initialisation, data order) measured on one test set; it
    does not include the test-sampling uncertainty that each run's own CI describes.
    """
    keys = ["suite"] + [c for c in FACTOR_COLUMNS if c != "seed"]
    rows: list[dict[str, Any]] = []
    if "status" in table.columns:
        table = table[table["status"] == "completed"]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, rec in zip(table.index, table.to_dict("records")):
        groups.setdefault(tuple(_format_cell(c, rec.get(c)) for c in keys), []).append(i)
    for idx in groups.values():
        g = table.loc[idx]
        first = g.iloc[0]
        row: dict[str, Any] = {c: first.get(c) for c in keys}
        seeds = sorted(int(s) for s in pd.to_numeric(g.get("seed"), errors="coerce").dropna()) \
            if "seed" in g else []
        row.update(n_seeds=len(g), seeds=";".join(str(s) for s in seeds), run_ids=";".join(g["run_id"].astype(str)))
        keep = trimmed_seeds(pd.to_numeric(g["mean_auc"], errors="coerce").to_numpy(dtype=np.float64)
                             if "mean_auc" in g else np.full(len(g), np.nan))
        for col in AGG_VALUE_COLUMNS:
            all_v = pd.to_numeric(g[col], errors="coerce").to_numpy(dtype=np.float64) if col in g \
                else np.full(len(g), np.nan)
            v = all_v[np.isfinite(all_v)]
            kept = all_v[keep & np.isfinite(all_v)]
            row[col] = float(v.mean()) if v.size else math.nan
            row[f"{col}_sd"] = float(v.std(ddof=1)) if v.size >= 2 else math.nan
            row[f"{col}_trimmed"] = float(kept.mean()) if kept.size else math.nan
        rows.append(row)
    return sort_leaderboard(pd.DataFrame(rows, columns=list(AGG_COLUMNS)))


# ------------------------------------------------------------------------------------------ writing
def format_leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as the exact text written to the CSV: fixed decimals, integers without ``.0``, booleans
    lower-case, hyper-parameters in shortest round-trip form, missing values empty."""
    return pd.DataFrame({col: [_format_cell(col, v) for v in df[col]] for col in df.columns}, index=df.index,
                        columns=df.columns, dtype=object)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _format_cell(col: str, v: Any) -> str:
    if _missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)) or col in _BOOL_COLUMNS:
        if isinstance(v, str):
            return v.lower()
        return str(bool(v)).lower()
    if col in _STR_COLUMNS:
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if col in _INT_COLUMNS:
        return str(int(round(f)))
    if col in _REPR_COLUMNS:
        return repr(f)
    return f"{f:.{_decimals(col)}f}"


def sample_facts(rows: pd.DataFrame, *, n_total: int | None = None, sanity: bool = False) -> SampleFacts:
    """:class:`~cxr_bench.data.sample_note.SampleFacts` of leaderboard rows on the bundled sample, from their
    own columns (a CSV read back included): the steps are the caps, epochs x ``max_steps_per_epoch``."""
    def col(name: str) -> pd.Series:
        return rows[name] if name in rows.columns else pd.Series([None] * len(rows), index=rows.index, dtype=object)

    epochs = pd.to_numeric(col("epochs_run"), errors="coerce").fillna(pd.to_numeric(col("epochs"), errors="coerce"))
    caps = (epochs * pd.to_numeric(col("max_steps_per_epoch"), errors="coerce")).dropna()
    return SampleFacts(
        n_runs=len(rows), n_total=n_total,
        profiles=tuple(sorted({str(p) for p in col("profile").dropna()} - {""})),
        image_sizes=whole(col("image_size")), pretrained=tuple(str(p) for p in col("pretrained").dropna()),
        steps=whole(caps), steps_capped=True, epochs=whole(epochs), mean_aucs=finite(col("mean_auc")), sanity=sanity)


def sample_banner(table: pd.DataFrame) -> list[str]:
    """The sidecar notes that tell a reader of the CSV itself (not only the terminal) that the runs on the
    bundled sample are a smoke test at chance level and why (:func:`sample_facts` of those rows); ``[]`` when
    no run trained on the bundled sample."""
    if "bundled_sample" not in table.columns or table.empty:
        return []
    s = table[truthy(table["bundled_sample"])]
    if s.empty:
        return []
    sanity = "synthetic" in table.columns and bool(truthy(table["synthetic"]).any())
    return sample_note_lines(sample_facts(s, n_total=len(table), sanity=sanity))


def leaderboard_csv(df: pd.DataFrame) -> str:
    """The exact text of a leaderboard CSV (plain: header first), made safe against spreadsheet formula
    injection (:func:`cxr_bench.utils.io.csv_safe_cell`)."""
    return csv_text(format_leaderboard(df), float_format=None)


def output_paths(path: str | Path) -> dict[str, Path]:
    """``leaderboard.csv`` -> the three files written: ``table`` (that path), ``aggregate``
    (``leaderboard_agg.csv``) and ``subgroups`` (``leaderboard_subgroups.csv``), beside it."""
    path = Path(path)
    return {"table": path, "aggregate": path.with_name(f"{path.stem}_agg{path.suffix or '.csv'}"),
            "subgroups": path.with_name(f"{path.stem}_subgroups{path.suffix or '.csv'}")}


def _provenance(table: pd.DataFrame, kind: str) -> dict[str, Any]:
    """The sidecar's provenance of a leaderboard file: what it is, the commits, data and suites of its runs."""
    def distinct(col: str) -> list[str]:
        return sorted({str(v) for v in table[col].dropna()} - {""}) if col in table.columns else []

    synthetic = int(truthy(table["synthetic"]).sum()) if "synthetic" in table.columns and len(table) else 0
    return {"kind": {"table": "leaderboard", "aggregate": "leaderboard over seeds",
                     "subgroups": "leaderboard by subgroup"}[kind],
            "runs": int(len(table)), "suites": distinct("suite"), "git_commits": distinct("git_commit"),
            "data": distinct("data"), "synthetic_runs": synthetic,
            "not_comparable_runs": int((~truthy(table["comparable"])).sum())
            if "comparable" in table.columns and len(table) else 0,
            "column_dictionary": "docs/columns.md (cxr_bench.results.leaderboard.COLUMN_DOCS)"}


def generalization_path(path: str | Path) -> Path:
    """``leaderboard.csv`` -> ``leaderboard_generalization.csv`` beside it (written when a run has external
    metrics)."""
    path = Path(path)
    return path.with_name(f"{path.stem}_generalization{path.suffix or '.csv'}")


# The first columns of each file's header: how an existing file is recognised as one the tool wrote.
_OWN_HEADER = {"table": ("suite", "run_id", "status"), "aggregate": AGG_COLUMNS[:2] + ("n_seeds",),
               "subgroups": SUBGROUP_COLUMNS[:4], "generalization": ("run_id", "dataset", "label", "nih_auc")}


def is_own_leaderboard_file(path: str | Path, kind: str) -> bool:
    """Whether ``path`` is a leaderboard file of ``kind`` (``table``/``aggregate``/``subgroups``) that
    cxr-bench wrote: a plain file whose header holds that kind's columns."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            line = fh.readline(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    header = next(csv.reader([line]), [])
    want = _OWN_HEADER[kind]
    return set(want) <= set(header) and header[:1] == [want[0]]


def write_leaderboard(lb: Leaderboard | pd.DataFrame, path: str | Path, *, named: bool = True) -> Path:
    """Write the leaderboard CSV and its two companions (:func:`output_paths`), each atomically (a reader
    never sees a half-written file); returns ``path``.

    A path that is a directory, or that cannot be written, is a :class:`RunStoreError` naming it, raised
    before anything is written. So is an existing file the user did not name (``named``: ``path`` was, its
    companions never are) that is not a leaderboard file the tool wrote (:func:`is_own_leaderboard_file`):
    it is left as it is.
    """
    if isinstance(lb, pd.DataFrame):
        lb = Leaderboard(lb)
    paths = output_paths(path)
    gen = lb.generalization
    if gen is not None and len(gen):
        paths["generalization"] = generalization_path(path)
    for kind, p in paths.items():
        if p.is_dir():
            raise RunStoreError(f"leaderboard output {p} is a directory; pass a file name (e.g. "
                                f"{p / 'leaderboard.csv'})")
        side = sidecar_path(p)
        if (side.exists() or side.is_symlink()) and not is_own_sidecar(side):
            raise RunStoreError(f"{side} exists and is not a sidecar cxr-bench wrote; writing the leaderboard "
                                f"{paths['table'].name} would replace it. Move it away or pass another --out; "
                                "nothing was written")
        if (p.exists() or p.is_symlink()) and not (named and kind == "table") \
                and not is_own_leaderboard_file(p, kind):
            raise RunStoreError(f"{p} exists and is not a leaderboard {kind} file cxr-bench wrote (its header "
                                f"does not start with {','.join(_OWN_HEADER[kind])}); writing the leaderboard "
                                f"{paths['table'].name} would replace it. Move it away or pass another --out; "
                                "nothing was written")
    banner = sample_banner(lb.table)
    frames = {"table": lb.table, "aggregate": lb.aggregate, "subgroups": lb.subgroups}
    for kind, df in frames.items():
        provenance = _provenance(lb.table, kind)
        try:
            write_csv(format_leaderboard(df), paths[kind], float_format=None, header_lines=banner,
                      provenance=provenance)
        except OSError as e:  # the temporary file's name would only confuse: name the target
            raise RunStoreError(f"cannot write {paths[kind]}: {e.strerror or e}; pass a writable --out") from None
    if gen is not None and len(gen):
        gen_path = paths["generalization"]
        try:
            write_csv(gen, gen_path, float_format=None)
        except OSError as e:
            raise RunStoreError(f"cannot write {gen_path}: {e.strerror or e}; pass a writable --out") from None
    log.info("wrote %s (%d runs, %d configurations)", paths["table"], len(lb.table), len(lb.aggregate))
    return paths["table"]


# ------------------------------------------------------------------------------------------ reading
def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """Read a leaderboard CSV back (text columns kept as text: run ids and commits can look numeric)."""
    path = Path(path)
    if not path.is_file():
        raise RunStoreError(f"leaderboard {path} does not exist; write one with `cxr-bench leaderboard`")
    try:
        df = pd.read_csv(path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False,
                         na_values={c: [""] for c in COLUMNS if c not in _STR_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RunStoreError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in ("run_id", "mean_auc") if c not in df.columns]
    if missing:
        raise RunStoreError(f"{path}: not a cxr-bench leaderboard (no {missing[0]!r} column)")
    return df
