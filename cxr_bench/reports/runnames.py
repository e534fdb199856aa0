"""What a report calls a run: a short name made of the factors that tell it apart from the runs beside it,
and the groups runs are shown in (by label set: a mean over 8 labels is not a mean over 14)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..results.runs import RunRecord

# Factors that name a run inside a group of runs, most telling first (see short_names).
NAME_FACTORS: tuple[tuple[str, str], ...] = (
    ("model.backbone", ""), ("model.head", ""), ("data.label_set", ""), ("data.grayscale", ""),
    ("data.channels", ""), ("loss.name", ""), ("model.pretrained", "weights "),
    ("model.freeze_backbone", "frozen "), ("data.image_size", "px "), ("data.split", "split "),
    ("seed", "seed "),
)


def run_label(row: dict[str, Any] | pd.Series | RunRecord) -> str:
    """A full human name for a run: the factors that usually differ inside a suite."""
    if isinstance(row, RunRecord):
        get = row.cfg
        parts = [get("model.backbone"), get("model.head"), get("data.label_set"), get("data.grayscale"),
                 get("data.channels")]
        seed = get("seed")
    else:
        parts = [row.get("backbone"), row.get("head"), row.get("label_set"), row.get("grayscale"),
                 row.get("channels")]
        seed = row.get("seed")
    name = " / ".join(str(p) for p in parts if p not in (None, ""))
    return f"{name} (seed {seed})" if seed not in (None, 0, "0") else name


def _show_value(prefix: str, value: Any) -> str:
    if prefix == "frozen ":
        return "frozen" if value else "fine-tuned"
    if prefix == "px ":
        return f"{value} px"
    if prefix == "weights ":
        return "random init" if value in (None, "", "none") else f"weights {Path(str(value)).name}"
    return f"{prefix}{value}"


def short_names(runs: Sequence[RunRecord]) -> dict[str, str]:
    """Run id -> a short name within ``runs``: the backbone, plus each factor of :data:`NAME_FACTORS` on
    which the run departs from the most common value among ``runs`` (so a replication run reads
    "resnet50" and its ablation variant "mobilenet_v1 · gamma"). Names that still collide get the run id."""
    if not runs:
        return {}
    modal = {k: Counter(repr(r.cfg(k)) for r in runs).most_common(1)[0][0] for k, _ in NAME_FACTORS}
    names = {}
    for r in runs:
        parts = [_show_value(pre, r.cfg(k)) for k, pre in NAME_FACTORS
                 if k == "model.backbone" or repr(r.cfg(k)) != modal[k]]
        names[r.run_id] = " · ".join(parts)
    counts = Counter(names.values())
    return {rid: (f"{n} ({rid})" if counts[n] > 1 else n) for rid, n in names.items()}


def label_set_of(rec: RunRecord) -> str:
    return str(rec.cfg("data.label_set") or "?")


def by_label_set(runs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs grouped by label set (ChestX-ray8 before 14), because AUCs are only ranked within a label set:
    a mean over 8 labels and a mean over 14 are different quantities."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(label_set_of(r), []).append(r)
    return dict(sorted(groups.items()))


def one_per_backbone(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """One run per backbone for a figure 'per backbone': the one with the most labels, then the one that
    departs least from the runs' common settings (the replication run, not an ablation variant)."""
    names = {}
    for group in by_label_set(runs).values():
        names.update(short_names(group))
    best: dict[str, RunRecord] = {}

    def key(r: RunRecord) -> tuple[int, int]:
        return (-len(r.labels), names.get(r.run_id, "").count(" · "))

    for r in runs:
        b = str(r.cfg("model.backbone"))
        if b not in best or key(r) < key(best[b]):
            best[b] = r
    return list(best.values())


def configuration_name(name: str) -> str:
    """A run's short name without its seed: the name of its configuration (all its seeds)."""
    return re.sub(r"( · )?seed \S+$", "", name).strip() or name
