"""``cxr-bench data info``: what a release holds, per official split, as a JSON-able dict and as a table.

The population reported (and used by every protocol of :mod:`cxr_bench.data.splits`) is every image of the
Data_Entry file: PA and AP views, all follow-up visits of a patient. This differs from torchxrayvision's
``NIH_Dataset``, whose default keeps PA views only and one image per patient; numbers from the two are not
comparable without the same filter.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CxrBenchError, ImageError
from ..utils.text import format_table
from .labels import LABEL_SETS, NO_FINDING, get_label_set
from .release import NIHRelease

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

POPULATION_NOTE = (
    "every image in the Data_Entry file: PA and AP views, all follow-up visits of each patient "
    "(no view filter, no one-image-per-patient filter; unlike torchxrayvision's NIH_Dataset default, "
    "which keeps PA views only and one image per patient)"
)

SPLITS = ("train_val", "test", "total")


def _split_rows(release: NIHRelease) -> dict[str, Any]:
    index = pd.Index(release.metadata["image"].to_numpy(dtype=object))
    out: dict[str, Any] = {}
    for key, names in (("train_val", release.train_val_names), ("test", release.test_names)):
        pos = index.get_indexer(pd.Index(names, dtype=object)) if names else np.zeros(0, dtype=np.int64)
        out[key] = np.sort(pos[pos >= 0]).astype(np.int64)
        out[f"{key}_missing"] = [names[i] for i in np.flatnonzero(pos < 0)]
    listed = np.zeros(len(index), dtype=bool)
    listed[out["train_val"]] = True
    listed[out["test"]] = True
    out["unlisted"] = np.flatnonzero(~listed).astype(np.int64)
    out["total"] = np.arange(len(index), dtype=np.int64)
    return out


SPLIT_KEYS = ("train_val", "test", "unlisted", "total")  # the official lists, images on neither, all


def data_info(release: NIHRelease, *, val_fraction: float = 0.1, seed: int = 0,
              check_images: bool | None = None) -> dict[str, Any]:
    """Counts of ``release`` for ``cxr-bench data info``: a JSON-able dict with stable keys.

    Keys: ``schema``, ``release`` (kind, root, files and hashes, Data_Entry form), ``population``,
    ``images`` / ``patients`` (per official list: ``train_val``, ``test``, ``unlisted``, ``total``),
    ``patient_overlap`` (the check that the official lists are patient-disjoint), ``views`` (per list),
    ``labels`` (per label set: labels in order, positives per list, all-zero rows per list), ``no_finding``,
    ``bboxes``, ``official_split`` (the train/val/test carve for ``val_fraction`` and ``seed``, or the error),
    and with ``check_images`` (default: for a ``--data-root`` release) ``images_on_disk`` and ``parts`` (which
    image archives of the release are on disk, see :func:`parts_on_disk`).
    """
    if check_images is None:
        check_images = release.kind == "data-root"
    md = release.metadata
    pid = md["patient_id"].to_numpy()
    rows = _split_rows(release)
    views_all = sorted(md["view"].unique().tolist())
    no_finding = (md["finding_labels"] == NO_FINDING).to_numpy()
    info: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "release": _release_block(release),
        "population": {
            "description": POPULATION_NOTE,
            "views": views_all,
            "all_follow_ups": True,
            "one_image_per_patient": False,
            "images": int(len(md)),
            "patients": int(np.unique(pid).size),
        },
        "images": {k: int(len(rows[k])) for k in SPLIT_KEYS},
        "patients": {k: int(np.unique(pid[rows[k]]).size) for k in SPLIT_KEYS},
        "patient_overlap": _patient_overlap(release, rows),
        "views": {k: {v: int(n) for v, n in md["view"].iloc[rows[k]].value_counts().reindex(views_all, fill_value=0)
                      .items()} for k in SPLIT_KEYS},
        "labels": _label_counts(md, rows),
        "no_finding": {k: int(no_finding[rows[k]].sum()) for k in SPLIT_KEYS},
        "bboxes": _box_counts(release),
        "official_split": _official_split(release, val_fraction, seed),
    }
    if check_images:
        info.update(_image_check(release))
    return info


def _release_block(release: NIHRelease) -> dict[str, Any]:
    return {"kind": release.kind, "root": str(release.root), "data_entry_file": release.data_entry_path.name,
            "data_entry_format": release.data_entry_format, "files": release.file_hashes(),
            "has_images": release.has_images}


def _patient_overlap(release: NIHRelease, rows: dict[str, Any]) -> dict[str, Any]:
    """The check that the official lists are patient-disjoint, name each image once and name only images of
    the metadata."""
    pid = release.metadata["patient_id"].to_numpy()
    shared = np.intersect1d(np.unique(pid[rows["train_val"]]), np.unique(pid[rows["test"]]))
    both_names = sorted(set(release.train_val_names) & set(release.test_names))
    missing = rows["train_val_missing"] + rows["test_missing"]
    return {
        "shared_patients": int(shared.size),
        "shared_patient_examples": [int(p) for p in shared[:5]],
        "images_on_both_lists": len(both_names),
        "listed_images_not_in_metadata": len(missing),
        "listed_images_not_in_metadata_examples": missing[:5],
        "ok": bool(shared.size == 0 and not both_names and not missing),
    }


def _label_counts(md: pd.DataFrame, rows: dict[str, Any]) -> dict[str, Any]:
    """Per label set: its labels in order, positives per list, all-zero rows per list."""
    labels: dict[str, Any] = {}
    for name in LABEL_SETS.names():
        ls = get_label_set(name)
        y = ls.encode(md["finding_labels"].to_numpy(dtype=object))
        labels[name] = {
            "labels": list(ls.labels),
            "positives": {k: {lab: int(v) for lab, v in zip(ls.labels, y[rows[k]].sum(axis=0))} for k in SPLIT_KEYS},
            "all_zero_images": {k: int((y[rows[k]].sum(axis=1) == 0).sum()) for k in SPLIT_KEYS},
        }
    return labels


def _box_counts(release: NIHRelease) -> dict[str, Any]:
    boxes = release.bboxes
    return {"file": release.bbox_path.name if release.bbox_path is not None else None, "boxes": int(len(boxes)),
            "images": int(boxes["image"].nunique()),
            "per_label": {lab: int(n) for lab, n in boxes["label"].value_counts().sort_index().items()}}


def _official_split(release: NIHRelease, val_fraction: float, seed: int) -> dict[str, Any]:
    """The official split's train/val/test carve, or the error that prevents it."""
    from .splits import make_splits  # splits imports release; keep module import order simple

    try:
        return make_splits(release, "official", val_fraction=val_fraction, seed=seed).summary(release)
    except CxrBenchError as e:
        return {"error": str(e)}


def _image_check(release: NIHRelease) -> dict[str, Any]:
    """``images_on_disk`` (and, for a ``--data-root`` release, ``parts``: which image archives are there)."""
    try:
        paths = release.image_paths() if release.has_images else {}
    except ImageError as e:  # e.g. an image present twice: report it, the counts still hold
        return {"images_on_disk": {"checked": False, "reason": str(e)}}
    out: dict[str, Any] = {"images_on_disk": _images_on_disk(release, paths)}
    if release.kind == "data-root":
        out["parts"] = parts_on_disk(release, paths)
    return out


def _images_on_disk(release: NIHRelease, paths: dict[str, Any]) -> dict[str, Any]:
    if not release.has_images:
        return {"checked": False, "reason": "the bundled full metadata ships without images"}
    names = release.metadata["image"].to_numpy(dtype=object)
    missing = [n for n in names if n not in paths]
    return {"checked": True, "found": int(len(names) - len(missing)), "missing": len(missing),
            "missing_examples": missing[:5]}


def parts_on_disk(release: NIHRelease, paths: dict[str, Any]) -> dict[str, Any]:
    """Which image archives of the release are on disk: per part ``complete``, ``partial`` or ``missing``.

    The parts and their image-name ranges come from the download manifest when ``cxr-bench data download``
    wrote one (the list it used, and per extracted part the names it really held), otherwise from the
    packaged NIH list (whose archives hold the sorted image names in ranges of 4,999 / 10,000 / 7,121), so a
    release unpacked by hand or from the Kaggle mirror is reported too. ``present`` counts the PNGs on disk
    whose name falls in the part's range; ``expected`` is the manifest's count for an extracted part, else
    the metadata's images in that range.
    """
    from bisect import bisect_left, bisect_right

    from .download import MANIFEST_NAME, load_part_list, read_manifest

    manifest = release.root / MANIFEST_NAME
    if manifest.is_file():
        man = read_manifest(manifest)
        parts, files, source = man["parts"], man["files"], str(manifest)
    else:
        parts, files, source = load_part_list().to_json(), {}, "the NIH list (no download manifest here)"
    on_disk = sorted(paths)
    listed = sorted(release.metadata["image"].tolist())

    def count(names: list[str], first: str, last: str) -> int:
        return bisect_right(names, last) - bisect_left(names, first)

    rows = []
    for p in parts:
        if p.get("kind") != "images":
            continue
        rec = files.get(p["file"]) or {}
        extracted = rec.get("status") == "extracted" and rec.get("first") is not None
        first, last = (rec["first"], rec["last"]) if extracted else (p.get("first"), p.get("last"))
        present = count(on_disk, first, last) if first and last else 0
        if extracted:
            expected: int | None = int(rec["images"])
        else:
            expected = count(listed, first, last) if first and last else None
        if present == 0:
            status = "missing"
        elif expected is not None and present >= expected:
            status = "complete"
        else:
            status = "partial"
        rows.append({"part": p.get("part"), "file": p["file"], "status": status, "present": present,
                     "expected": expected})
    return {"source": source, "parts": rows,
            "complete": [r["part"] for r in rows if r["status"] == "complete"],
            "missing": [r["part"] for r in rows if r["status"] != "complete"]}


# ------------------------------------------------------------------------------------------ human table

def _table(header: list[str], rows: list[list[Any]], align: str | None = None) -> list[str]:
    return format_table(header, rows, align or ("l" + "r" * (len(header) - 1))).split("\n")


def format_data_info(info: dict[str, Any]) -> str:
    """The human-readable report of :func:`data_info`."""
    rel = info["release"]
    kind = {"bundled-full": "bundled full NIH metadata (no images)",
            "bundled-sample": "bundled 1,673-image sample release (biased selection; see its README.md)",
            "data-root": "NIH release"}.get(rel["kind"], rel["kind"])
    out = [f"NIH ChestX-ray14: {kind}", f"  root: {rel['root']}"]
    for name, sha in rel["files"].items():
        extra = f" ({rel['data_entry_format']} form)" if name == rel["data_entry_file"] else ""
        out.append(f"  {name}{extra}  sha256 {sha}")
    pop = info["population"]
    out += ["", f"Population: {pop['images']:,} images of {pop['patients']:,} patients = {pop['description']}.", ""]

    keys = ["train_val", "test", "unlisted", "total"]
    shown = [k for k in keys if k != "unlisted" or info["images"]["unlisted"]]
    out += _table(["official list", "images", "patients"],
                  [[k, info["images"][k], info["patients"][k]] for k in shown])
    ov = info["patient_overlap"]
    status = "OK" if ov["ok"] else "PROBLEM"
    out += ["", f"Patient-overlap check ({status}): {ov['shared_patients']:,} patient(s) on both lists, "
                f"{ov['images_on_both_lists']:,} image(s) on both lists, "
                f"{ov['listed_images_not_in_metadata']:,} listed image(s) not in the metadata."]
    if info["images"]["unlisted"]:
        out.append(f"  {info['images']['unlisted']:,} image(s) of the metadata are on neither list "
                   "(left out of the official split).")

    sp = info.get("official_split", {})
    if "error" in sp:
        out += ["", f"Official split: cannot be made: {sp['error']}"]
    else:
        out += ["", f"Official split with a validation set carved from train_val by patient "
                    f"(val_fraction={sp['val_fraction']}, seed={sp['seed']}):"]
        out += _table(["set", "images", "patients"],
                      [[k, sp["images"][k], sp["patients"][k]] for k in ("train", "val", "test")])

    cols = [k for k in shown if k != "total"] + ["total"]
    out += [""]
    out += _table(["view"] + cols, [[v] + [info["views"][k][v] for k in cols] for v in info["population"]["views"]])

    for name, block in info["labels"].items():
        total = info["images"]["total"] or 1
        rows = [[lab] + [block["positives"][k][lab] for k in cols]
                + [f"{100.0 * block['positives']['total'][lab] / total:.2f}"] for lab in block["labels"]]
        rows.append(["(all zeros)"] + [block["all_zero_images"][k] for k in cols]
                    + [f"{100.0 * block['all_zero_images']['total'] / total:.2f}"])
        out += ["", f"Positives per label, label set {name} ({len(block['labels'])} labels; "
                    "'(all zeros)' = images with none of them):"]
        out += _table(["label"] + cols + ["% total"], rows)
    out += ["", "No Finding: " + ", ".join(f"{k} {info['no_finding'][k]:,}" for k in cols)]

    bb = info["bboxes"]
    if bb["file"]:
        out += [f"Boxes ({bb['file']}): {bb['boxes']:,} on {bb['images']:,} images: "
                + ", ".join(f"{k} {v}" for k, v in bb["per_label"].items())]
    else:
        out += ["Boxes: no BBox_List_2017.csv in this release"]
    if "images_on_disk" in info:
        d = info["images_on_disk"]
        if d.get("checked"):
            out += [f"Images on disk: {d['found']:,} found, {d['missing']:,} missing"
                    + (f" (e.g. {', '.join(d['missing_examples'])})" if d["missing"] else "")]
        else:
            out += [f"Images on disk: not checked ({d['reason']})"]
    if "parts" in info:
        out += _format_parts(info["parts"], rel["root"])
    return "\n".join(out)


def _format_parts(parts: dict[str, Any], root: str) -> list[str]:
    from .download import format_part_numbers

    rows = [[r["part"], r["file"], r["status"], r["present"], "?" if r["expected"] is None else r["expected"]]
            for r in parts["parts"]]
    out = ["", f"Image archives (from {parts['source']}):"]
    out += _table(["part", "file", "status", "images present", "expected"], rows, align="rllrr")
    missing = [n for n in parts["missing"] if n is not None]
    if missing:
        out.append(f"Missing or incomplete parts: {format_part_numbers(missing)}; fetch them with "
                   f"`cxr-bench data download --data-root {root} --parts {format_part_numbers(missing)}`")
    else:
        out.append("Every image archive is on disk.")
    return out
