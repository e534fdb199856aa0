"""Label sets as data: names, fixed order, aliases, and a vectorised encoder.

The NIH ``Finding Labels`` field is a ``|``-separated list of findings, or ``No Finding``. A label set is an
ordered tuple of finding names; :meth:`LabelSet.encode` turns finding strings into an (N, L) float32
matrix in that order. ``No Finding`` is the all-zeros row and may not be combined with a finding.

Three sets are registered in :data:`LABEL_SETS`:

- ``chestxray8``: the 8 findings of Wang et al., CVPR 2017 (ChestX-ray8).
- ``chestxray14``: those 8, then the 6 added in the 2017 ChestX-ray14 update.
- ``chestxray13``: ChestX-ray14 without Hernia, the labels of the original MobileNet project
  (paloukari/NIH-Chest-X-rays-Classification), which kept the findings with more than 1,000 images
  (Hernia has 227). An image whose only finding is Hernia becomes an all-zeros row there too.

A finding of ChestX-ray14 that is not in the set being encoded (e.g. ``Hernia`` for ``chestxray8``) is a
valid finding and simply has no column; an unknown name is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import MetadataError
from ..registry import Registry

NO_FINDING = "No Finding"

CHESTXRAY8: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
)
CHESTXRAY14: tuple[str, ...] = CHESTXRAY8 + (
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
CHESTXRAY13: tuple[str, ...] = tuple(lab for lab in CHESTXRAY14 if lab != "Hernia")
# Every finding name any NIH file may use (canonical spelling).
ALL_FINDINGS: tuple[str, ...] = CHESTXRAY14

# Spellings used by NIH files other than Data_Entry (BBox_List says "Infiltrate") and by papers.
ALIASES: dict[str, str] = {
    "Infiltrate": "Infiltration",
    "Pleural Thickening": "Pleural_Thickening",
}


def _norm(raw: str) -> str:
    """Case-, space-, underscore- and hyphen-insensitive key."""
    return re.sub(r"[\s_\-]+", "_", raw.strip()).lower()


def _build_lookup() -> tuple[dict[str, str], dict[str, str]]:
    exact: dict[str, str] = {name: name for name in (*ALL_FINDINGS, NO_FINDING)}
    exact.update(ALIASES)
    loose: dict[str, str] = {}
    for spelling, canonical in exact.items():
        key = _norm(spelling)
        if loose.get(key, canonical) != canonical:  # pragma: no cover - guards future additions
            raise RuntimeError(f"label spelling {spelling!r} is ambiguous")
        loose[key] = canonical
    return exact, loose


_EXACT, _LOOSE = _build_lookup()


def canonical_label(raw: str) -> str:
    """The canonical name of a finding (or ``"No Finding"``).

    Accepts the canonical names, the aliases ``Infiltrate`` and ``Pleural Thickening``, and any spelling that
    differs from one of those only in case, surrounding space, or space/underscore/hyphen (``no finding``,
    ``PLEURAL-THICKENING``). Raises :class:`MetadataError` for anything else.
    """
    if not isinstance(raw, str):
        raise MetadataError(f"finding label must be a string, got {type(raw).__name__} {raw!r}")
    hit = _EXACT.get(raw)
    if hit is not None:
        return hit
    hit = _LOOSE.get(_norm(raw))
    if hit is not None:
        return hit
    known = ", ".join((*ALL_FINDINGS, NO_FINDING))
    raise MetadataError(f"unknown finding label {raw!r}; known: {known} (aliases: "
                        f"{', '.join(ALIASES)})")


def parse_finding_labels(value: str) -> tuple[str, ...]:
    """Split one ``Finding Labels`` value into canonical findings; ``()`` for ``No Finding``.

    Order of first appearance is kept; a finding repeated in one value counts once. Raises
    :class:`MetadataError` for an empty value, an empty element (``"Mass||Nodule"``), an unknown finding, or
    ``No Finding`` combined with a finding.
    """
    if not isinstance(value, str):
        raise MetadataError(f"finding labels must be a string, got {type(value).__name__} {value!r}")
    if value.strip() == "":
        raise MetadataError("empty finding labels (use 'No Finding' for an image without findings)")
    parts = value.split("|")
    out: list[str] = []
    saw_no_finding = False
    for part in parts:
        if part.strip() == "":
            raise MetadataError(f"empty element in finding labels {value!r}")
        name = canonical_label(part)
        if name == NO_FINDING:
            saw_no_finding = True
        elif name not in out:
            out.append(name)
    if saw_no_finding and out:
        raise MetadataError(f"'No Finding' combined with findings in {value!r}")
    return tuple(out)


def canonical_finding_labels(value: str) -> str:
    """The canonical form of a ``Finding Labels`` value (aliases resolved, repeats dropped)."""
    found = parse_finding_labels(value)
    return "|".join(found) if found else NO_FINDING


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of finding names; the column order of every label matrix built with it."""

    name: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        object.__setattr__(self, "labels", labels)
        for lab in labels:
            if lab not in ALL_FINDINGS:
                raise MetadataError(f"label set {self.name!r}: {lab!r} is not a canonical NIH finding")
        if len(set(labels)) != len(labels):
            raise MetadataError(f"label set {self.name!r} repeats a label")

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def index(self, label: str) -> int:
        """Column of ``label`` (aliases accepted)."""
        name = canonical_label(label)
        try:
            return self.labels.index(name)
        except ValueError:
            raise MetadataError(f"{name!r} is not in label set {self.name!r} ({', '.join(self.labels)})") from None

    def encode_one(self, value: str) -> np.ndarray:
        """One ``Finding Labels`` value -> (L,) float32."""
        return self.encode([value])[0]

    def encode(self, finding_labels: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
        """``Finding Labels`` values -> (N, L) float32 matrix of 0/1, columns in :attr:`labels` order.

        Vectorised: each distinct value is parsed once (the full NIH file has 836 distinct values in 112,120
        rows). Raises :class:`MetadataError` naming the first bad value and its position.
        """
        if isinstance(finding_labels, str):
            raise TypeError("encode() takes a sequence of finding-label strings; use encode_one() for one")
        values = pd.Series(finding_labels, dtype=object) if not isinstance(finding_labels, pd.Series) \
            else finding_labels.astype(object)
        n = len(values)
        out = np.zeros((n, len(self.labels)), dtype=np.float32)
        if n == 0:
            return out
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        if (codes < 0).any():
            pos = int(np.flatnonzero(codes < 0)[0])
            raise MetadataError(f"missing finding labels at position {pos}")
        col = {lab: j for j, lab in enumerate(self.labels)}
        table = np.zeros((len(uniques), len(self.labels)), dtype=np.float32)
        for u, value in enumerate(uniques):
            try:
                found = parse_finding_labels(value)
            except MetadataError as e:
                pos = int(np.flatnonzero(codes == u)[0])
                raise MetadataError(f"{e} (at position {pos})") from None
            for name in found:
                j = col.get(name)
                if j is not None:
                    table[u, j] = 1.0
        out[:] = table[codes]
        return out

    def decode(self, matrix: np.ndarray) -> list[str]:
        """(N, L) 0/1 matrix -> ``Finding Labels`` strings in set order; all zeros -> ``No Finding``."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[1] != len(self.labels):
            raise ValueError(f"expected shape (N, {len(self.labels)}), got {m.shape}")
        out = []
        for row in m > 0.5:
            names = [lab for lab, on in zip(self.labels, row) if on]
            out.append("|".join(names) if names else NO_FINDING)
        return out


LABEL_SETS: Registry[LabelSet] = Registry("label set")
LABEL_SETS.add("chestxray8", LabelSet("chestxray8", CHESTXRAY8))
LABEL_SETS.add("chestxray14", LabelSet("chestxray14", CHESTXRAY14))
LABEL_SETS.add("chestxray13", LabelSet("chestxray13", CHESTXRAY13))


def get_label_set(name: str | LabelSet) -> LabelSet:
    """The registered label set ``name`` (a :class:`LabelSet` passes through); unknown -> ConfigError."""
    if isinstance(name, LabelSet):
        return name
    return LABEL_SETS.get(name)


def label_counts(finding_labels: Iterable[str], label_set: str | LabelSet) -> dict[str, int]:
    """Positives per label of ``label_set`` (in set order)."""
    ls = get_label_set(label_set)
    m = ls.encode(list(finding_labels))
    return {lab: int(v) for lab, v in zip(ls.labels, m.sum(axis=0))}
