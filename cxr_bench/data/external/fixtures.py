"""Miniature external sets for tests and timing: real metadata rows, phantom pixels, the real layout.

:func:`make_external_fixture` picks rows of the metadata torchxrayvision ships for a set (real file names,
labels, patient ids, views), writes that subset as the set's own metadata file where its download puts it,
and a phantom radiograph (:func:`cxr_bench.data.phantoms.render_phantom`) under each chosen image's real
name and folder, with the lesion of each NIH label the row is positive for. A model trained on a phantom
NIH release with the same label order therefore sees the same lesions here.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from ..labels import CHESTXRAY14
from ..phantoms import render_phantom
from .sets import _ADAPTERS, PADCHEST_CSV, _shipped, get_spec

__all__ = ["make_external_fixture", "FIXTURE_FOLDERS"]

# Where each set's images sit under the data root in the fixture (as in the set's download).
FIXTURE_FOLDERS = {"openi": "images", "padchest": "{ImageDir}", "chexpert": "CheXpert-v1.0-small",
                   "rsna": "stage_2_train_images", "siim": "train_png"}


def _choose(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` row positions: positives of every label (rarest first), then rows with no finding."""
    picked: list[int] = []
    per_label = max(2, n // (2 * max(y.shape[1], 1)))
    for j in np.argsort(y.sum(axis=0)):
        pos = np.flatnonzero(y[:, j] & ~np.isin(np.arange(len(y)), picked))
        picked += rng.choice(pos, size=min(per_label, pos.size), replace=False).tolist()
    neg = np.flatnonzero(~y.any(axis=1))
    picked += rng.choice(neg, size=min(max(n - len(picked), 2), neg.size), replace=False).tolist()
    return np.array(sorted(set(picked)), dtype=np.int64)


def _write_image(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        Image.fromarray(img, mode="L").save(path, format="JPEG", quality=95)
    elif path.parent.name.isdigit():  # PadChest's PNGs are 16-bit
        Image.fromarray(img.astype(np.uint16) * 257).save(path, format="PNG")
    else:
        Image.fromarray(img, mode="L").save(path, format="PNG")


def _openi_reports(dest: Path, uids: set[str]) -> None:
    with tarfile.open(_shipped("NLMCXR_reports.tgz"), "r:gz") as src, tarfile.open(dest, "w:gz") as out:
        for member in src:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            # ecgen-radiology/<n>.xml holds report uId CXR<n> (true of every report xrv ships)
            if "CXR" + PurePosixPath(member.name).stem not in uids:
                continue
            fh = src.extractfile(member)
            data = fh.read() if fh is not None else b""
            uid = ET.fromstring(data).find("uId")
            if uid is not None and uid.attrib.get("id") in uids:
                out.addfile(member, io.BytesIO(data))


def make_external_fixture(name: str, root: str | os.PathLike, *, n_images: int = 24, size: int = 32, seed: int = 0,
                          images: Sequence[str] | None = None, labels: Sequence[str] = CHESTXRAY14) -> Path:
    """Write a miniature of external set ``name`` under ``root`` and return ``root`` (same arguments, same files).

    ``images``: image names (as the set's metadata gives them) always taken, frontal or not; besides them about
    ``n_images`` frontal rows chosen with ``seed`` so that every shared label has positives (0: none).
    ``labels``: the phantom label order (the trained model's).
    """
    spec = get_spec(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as empty:  # an empty root: the adapter reads the shipped metadata
        frame, by_label, _, _, notes = _ADAPTERS[spec.name](spec, Path(empty))
    y = np.column_stack([by_label[lab] for lab in spec.shared])
    frontal = (frame["view"].astype(str) != "").to_numpy() if spec.name != "siim" else np.ones(len(frame), bool)
    pos = pd.Index(frame["image"]).get_indexer(list(images or ()))
    if (pos < 0).any():
        raise ValueError(f"{spec.name}: image {list(images or ())[int(np.flatnonzero(pos < 0)[0])]!r} is not in the "
                         "shipped metadata")
    candidates = np.flatnonzero(frontal)
    picked = candidates[_choose(y[candidates], n_images, rng)] if n_images > 0 else np.empty(0, np.int64)
    rows = np.union1d(pos, picked).astype(np.int64)
    chosen = frame.iloc[rows]

    if spec.name == "openi":
        uids = set(chosen["report_id"])
        _openi_reports(root / "NLMCXR_reports.tgz", uids)
        rows = np.flatnonzero(frame["report_id"].isin(uids).to_numpy() & frontal)
    elif spec.name == "padchest":
        meta = pd.read_csv(_shipped(PADCHEST_CSV + ".gz"), low_memory=False)
        meta = meta[meta["ImageID"].isin(set(chosen["image"]))].rename(columns={"Unnamed: 0": ""})
        meta.to_csv(root / PADCHEST_CSV, index=False)
    elif spec.name == "chexpert":
        meta = pd.read_csv(_shipped("chexpert_train.csv.gz"))
        meta = meta[meta["Path"].isin({"CheXpert-v1.0-small/" + p for p in chosen["image"]})]
        (root / "CheXpert-v1.0-small").mkdir(exist_ok=True)
        meta.to_csv(root / "CheXpert-v1.0-small" / "train.csv", index=False)
    elif spec.name == "rsna":
        meta = pd.read_csv(_shipped("kaggle_stage_2_train_labels.csv.zip"))
        meta[meta["patientId"].isin(set(chosen["patient_id"]))].to_csv(root / "stage_2_train_labels.csv", index=False)
    elif spec.name == "siim":
        meta = pd.read_csv(_shipped("siim-pneumothorax-train-rle.csv.gz"))
        meta[meta["ImageId"].isin(set(chosen["patient_id"]))].to_csv(root / "train-rle.csv", index=False)

    shared = np.asarray(spec.shared)
    for i in rows:
        row = frame.iloc[i]
        findings = [lab for lab in shared[y[i]] if lab in labels]
        img = render_phantom(findings, size=size, labels=labels, rng=rng)
        folder = FIXTURE_FOLDERS[spec.name].format(ImageDir=row.get("image_dir", ""))
        _write_image(root / folder / str(row["image"]), img)
    return root
