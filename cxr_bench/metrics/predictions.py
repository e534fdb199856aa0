"""The predictions CSV of a run: ``predictions/val.csv`` and ``predictions/test.csv``.

Format (docs/architecture.md, "engine"): one row per image, columns ``image, patient_id``, then
``true_<Label>`` for every label, then ``prob_<Label>`` for every label, in the label set's order. Truths
are 0/1, probabilities finite and in [0, 1], written with Python's shortest round-trip ``repr`` so a
metric recomputed from the file equals the one computed in memory.

Why it is validated on read: every metric, comparison and leaderboard row of the project is recomputed
from these files, so a truncated file, a NaN probability or a label column missing after a label-set
change must stop with the file, the row and the column named, not as a silently wrong AUC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RunStoreError
from ..utils.io import atomic_open

__all__ = ["Predictions", "read_predictions", "take_rows", "write_predictions"]

TRUE_PREFIX = "true_"
PROB_PREFIX = "prob_"
ID_COLUMNS = ("image", "patient_id")


@dataclass(frozen=True)
class Predictions:
    """Row-aligned predictions of one split: ``y_true`` ``(N, L)`` int8 in {0, 1}, ``y_prob`` ``(N, L)``
    float64 in [0, 1], ``images`` and ``patient_ids`` ``(N,)`` str arrays, ``labels`` in column order."""

    images: np.ndarray
    patient_ids: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray
    labels: tuple[str, ...]
    source: str = "<memory>"

    def __len__(self) -> int:
        return int(self.y_true.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """The CSV layout as a DataFrame."""
        cols: dict[str, Any] = {"image": self.images, "patient_id": self.patient_ids}
        for j, name in enumerate(self.labels):
            cols[TRUE_PREFIX + name] = self.y_true[:, j]
        for j, name in enumerate(self.labels):
            cols[PROB_PREFIX + name] = self.y_prob[:, j]
        return pd.DataFrame(cols)

    def select(self, labels: Sequence[str]) -> Predictions:
        """The same rows restricted to (and ordered as) ``labels``."""
        unknown = [name for name in labels if name not in self.labels]
        if unknown:
            raise RunStoreError(
                f"{self.source}: no predictions for label(s) {', '.join(unknown)}; the file has "
                f"{', '.join(self.labels)}. Was the run trained on another label set?"
            )
        idx = [self.labels.index(name) for name in labels]
        return Predictions(self.images, self.patient_ids, self.y_true[:, idx], self.y_prob[:, idx],
                           tuple(labels), self.source)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, source: str = "<DataFrame>",
                   labels: Sequence[str] | None = None) -> Predictions:
        """Validate a DataFrame in the CSV layout. Cells may be strings (as read) or numbers.

        ``labels`` (optional) is the label order the caller expects; the file must hold exactly those.
        Errors name ``source``, the column and the file line (header = line 1).
        """
        missing = [c for c in ID_COLUMNS if c not in df.columns]
        if missing:
            raise RunStoreError(f"{source}: missing column(s) {', '.join(missing)}; a predictions file "
                                f"starts with 'image,patient_id'")
        true_labels = [c[len(TRUE_PREFIX):] for c in df.columns if str(c).startswith(TRUE_PREFIX)]
        prob_labels = [c[len(PROB_PREFIX):] for c in df.columns if str(c).startswith(PROB_PREFIX)]
        if not true_labels:
            raise RunStoreError(f"{source}: no true_<Label> columns; nothing to evaluate")
        for name in true_labels:
            if name not in prob_labels:
                raise RunStoreError(f"{source}: column true_{name} has no matching prob_{name}")
        for name in prob_labels:
            if name not in true_labels:
                raise RunStoreError(f"{source}: column prob_{name} has no matching true_{name}")
        if prob_labels != true_labels:
            raise RunStoreError(f"{source}: prob_ columns are in another order than true_ columns")
        if labels is not None and list(labels) != true_labels:
            raise RunStoreError(f"{source}: labels {true_labels} differ from the expected {list(labels)}")
        extra = [c for c in df.columns
                 if c not in ID_COLUMNS and not str(c).startswith((TRUE_PREFIX, PROB_PREFIX))]
        if extra:
            raise RunStoreError(f"{source}: unexpected column(s) {', '.join(map(str, extra))}")

        images = df["image"].astype(str).to_numpy()
        patients = df["patient_id"].astype(str).to_numpy()
        for col, values in (("image", images), ("patient_id", patients)):
            # numpy's string ufuncs: the same test as str.strip() per cell, without a Python call per cell
            empty = np.flatnonzero(np.strings.str_len(np.strings.strip(values.astype(str))) == 0)
            if empty.size:
                raise RunStoreError(f"{source} line {empty[0] + 2}: empty {col}")
        dup = pd.Index(images).duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            raise RunStoreError(f"{source} line {i + 2}: image {images[i]} appears twice; a predictions "
                                f"file has one row per image (distributed padding not removed?)")
        y_true = np.column_stack([_numeric(df, TRUE_PREFIX + n, source) for n in true_labels])
        y_prob = np.column_stack([_numeric(df, PROB_PREFIX + n, source) for n in true_labels])
        for j, name in enumerate(true_labels):
            bad = np.flatnonzero((y_true[:, j] != 0) & (y_true[:, j] != 1))
            if bad.size:
                i = int(bad[0])
                raise RunStoreError(f"{source} line {i + 2}, column true_{name}: {y_true[i, j]!r} is not 0 or 1")
            bad = np.flatnonzero((y_prob[:, j] < 0) | (y_prob[:, j] > 1))
            if bad.size:
                i = int(bad[0])
                raise RunStoreError(f"{source} line {i + 2}, column prob_{name}: {y_prob[i, j]!r} is "
                                    f"outside [0, 1]; write probabilities (sigmoid outputs), not logits")
        return cls(images, patients, y_true.astype(np.int8).reshape(len(df), -1),
                   y_prob.reshape(len(df), -1), tuple(true_labels), source)


def _numeric(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """A column as finite float64; an unparsable, empty or non-finite cell names its line."""
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise RunStoreError(f"{source} line {i + 2}, column {col}: {raw.iloc[i]!r} is not a finite number")
    return values


def take_rows(pred: Predictions, images: Sequence[str]) -> Predictions:
    """The rows of ``images`` (each must be present), in that order; for aligning two runs or a subset."""
    pos = pd.Index(pred.images).get_indexer(list(images))
    if (pos < 0).any():
        missing = list(images)[int(np.flatnonzero(pos < 0)[0])]
        raise RunStoreError(f"{pred.source}: image {missing!r} has no prediction")
    return Predictions(pred.images[pos], pred.patient_ids[pos], pred.y_true[pos], pred.y_prob[pos],
                       pred.labels, pred.source)


def write_predictions(path: str | os.PathLike, images: Sequence[str], patient_ids: Sequence[Any],
                      y_true: Any, y_prob: Any, labels: Sequence[str]) -> Path:
    """Validate and write a predictions CSV atomically (a reader never sees a half-written file).

    ``y_true`` and ``y_prob`` are ``(N, L)`` arrays in the order of ``labels``. Raises ``RunStoreError``
    on bad values (the same checks as :func:`read_predictions`), so a bad file is never written.
    """
    path = Path(path)
    t = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    labels = list(labels)
    if t.ndim != 2 or t.shape != p.shape or t.shape[1] != len(labels):
        raise ValueError(f"y_true {t.shape} and y_prob {p.shape} must both be (N, {len(labels)})")
    if len(images) != t.shape[0] or len(patient_ids) != t.shape[0]:
        raise ValueError(f"{len(images)} images and {len(patient_ids)} patient ids for {t.shape[0]} rows")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate label names in {labels}")
    cols: dict[str, Any] = {"image": [str(x) for x in images], "patient_id": [str(x) for x in patient_ids]}
    for j, name in enumerate(labels):
        cols[TRUE_PREFIX + name] = t[:, j]
    for j, name in enumerate(labels):
        cols[PROB_PREFIX + name] = p[:, j]
    df = pd.DataFrame(cols)
    pred = Predictions.from_frame(df, source=str(path))  # same validation as reading
    out = pred.to_frame()
    for name in labels:
        out[TRUE_PREFIX + name] = out[TRUE_PREFIX + name].astype(np.int8)
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, index=False, lineterminator="\n")
    return path


def read_predictions(path: str | os.PathLike, labels: Sequence[str] | None = None) -> Predictions:
    """Read and validate a predictions CSV; ``labels`` (optional) is the exact label order expected."""
    path = Path(path)
    if not path.is_file():
        raise RunStoreError(f"{path}: predictions file not found; has the run finished evaluation?")
    typed = _read_typed(path)
    if typed is not None:
        return Predictions.from_frame(typed, source=str(path), labels=labels)
    # A cell that is not a finite number (or a malformed file): read every cell as text, so that the error
    # names the file, line, column and the cell as written.
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise RunStoreError(f"{path}: empty file; delete it and re-run the evaluation") from None
    except pd.errors.ParserError as e:
        raise RunStoreError(f"{path}: not a valid CSV ({e}); re-run the evaluation") from None
    return Predictions.from_frame(df, source=str(path), labels=labels)


def _read_typed(path: Path) -> pd.DataFrame | None:
    """The file with its truth and probability columns parsed as float64 by the CSV reader itself (ten
    times faster than text then ``pd.to_numeric``, and the same doubles); None when a cell of those
    columns is not a finite number or the file does not parse, for the text path to report."""
    try:
        header = pd.read_csv(path, nrows=0).columns
        numeric = [c for c in header if str(c).startswith((TRUE_PREFIX, PROB_PREFIX))]
        dtypes: dict[Any, Any] = {c: str for c in header}
        dtypes.update({c: np.float64 for c in numeric})
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_filter=False)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if numeric and not np.isfinite(df[numeric].to_numpy(dtype=np.float64)).all():
        return None
    return df
