"""The external sets: label mapping tables, view filtering, patient ids and layouts (see ``__init__``).

Each adapter parses its set's metadata with torchxrayvision (``xrv``), which ships the metadata of every
set here, and prefers the metadata file found in the data root (the set's own download) over the shipped
copy. xrv's constructors are called with every view and every image of a patient (its defaults keep PA
only and one image per patient, which is not NIH's test population); the frontal filter is ours.
xrv reseeds numpy's global generator in every constructor; the caller's state is put back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import MetadataError
from ..labels import CHESTXRAY14

log = logging.getLogger(__name__)

__all__ = ["DATASETS", "MAPPINGS", "ExternalDataError", "ExternalSet", "ExternalSpec", "LabelMap", "get_spec",
           "mapping_table", "open_external", "release_list", "require_xrv", "FRONTAL"]

FRONTAL = ("PA", "AP")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ExternalDataError(MetadataError):
    """An external set that cannot be read: missing torchxrayvision, a wrong layout, missing images."""


@dataclass(frozen=True)
class LabelMap:
    """One NIH label in one set: ``theirs`` is the xrv pathology it is read from (None: not labelled)."""

    nih: str
    theirs: str | None
    note: str = ""


@dataclass(frozen=True)
class ExternalSpec:
    """What a set is, where it comes from, how it is laid out and how it is read."""

    name: str
    title: str
    access: str  # where to get it (a URL and what to ask for)
    layout: str  # what --data-root must hold
    views: str  # the frontal filter, in words
    patients: str  # what the bootstrap resamples
    labels: str  # where the labels come from (report NLP, radiologists, ...)
    mapping: tuple[LabelMap, ...]
    unit: str = "patient"  # what one bootstrap cluster is: patient, report or image
    from_nih: bool = False  # its images are NIH ChestX-ray14 images
    downloadable: bool = False  # `cxr-bench data download --dataset NAME` fetches it

    @property
    def shared(self) -> tuple[str, ...]:
        return tuple(m.nih for m in self.mapping if m.theirs is not None)

    @property
    def dropped(self) -> dict[str, str]:
        return {m.nih: m.note for m in self.mapping if m.theirs is None}


def _table(shared: dict[str, tuple[str, str]], dropped: dict[str, str]) -> tuple[LabelMap, ...]:
    out = []
    for lab in CHESTXRAY14:
        if lab in shared:
            out.append(LabelMap(lab, shared[lab][0], shared[lab][1]))
        else:
            out.append(LabelMap(lab, None, dropped[lab]))
    return tuple(out)


_SAME = ""
MAPPINGS: dict[str, tuple[LabelMap, ...]] = {
    "openi": _table(
        {lab: (lab, _SAME) for lab in CHESTXRAY14 if lab != "Consolidation"} | {
            "Atelectasis": ("Atelectasis", "MeSH 'atelectases' counted too"),
            "Infiltration": ("Infiltration", "MeSH 'infiltrate'"),
            "Pleural_Thickening": ("Pleural_Thickening", "MeSH 'pleural thickening'"),
            "Effusion": ("Effusion", "MeSH 'pleural effusion'"),
        },
        {"Consolidation": "OpenI's MeSH terms have no consolidation that xrv reads; it falls under the broader "
                          "'Lung Opacity', which is not NIH's Consolidation"}),
    "padchest": _table(
        {lab: (lab, _SAME) for lab in CHESTXRAY14} | {
            "Infiltration": ("Infiltration", "xrv's synonyms: infiltrates, interstitial / ground glass / reticular / "
                                             "alveolar pattern, consolidation, air bronchogram"),
            "Pleural_Thickening": ("Pleural_Thickening", "'pleural thickening'"),
        }, {}),
    "chexpert": _table(
        {"Atelectasis": ("Atelectasis", _SAME), "Cardiomegaly": ("Cardiomegaly", _SAME),
         "Consolidation": ("Consolidation", _SAME), "Edema": ("Edema", _SAME),
         "Effusion": ("Effusion", "CheXpert 'Pleural Effusion'"), "Pneumonia": ("Pneumonia", _SAME),
         "Pneumothorax": ("Pneumothorax", _SAME)},
        {"Infiltration": "no CheXpert observation; 'Lung Opacity' is broader",
         "Mass": "CheXpert merges masses and nodules into 'Lung Lesion'",
         "Nodule": "CheXpert merges masses and nodules into 'Lung Lesion'",
         "Emphysema": "not a CheXpert observation", "Fibrosis": "not a CheXpert observation",
         "Hernia": "not a CheXpert observation",
         "Pleural_Thickening": "CheXpert folds it into 'Pleural Other' with other pleural findings"}),
    "rsna": _table(
        {"Pneumonia": ("Pneumonia", "the challenge's Target: a lung opacity suggestive of pneumonia")},
        {lab: "the challenge labels pneumonia-like opacity only" for lab in CHESTXRAY14 if lab != "Pneumonia"}),
    "siim": _table(
        {"Pneumothorax": ("Pneumothorax", "an image with a pneumothorax mask (EncodedPixels != -1)")},
        {lab: "the challenge labels pneumothorax only" for lab in CHESTXRAY14 if lab != "Pneumothorax"}),
}

_FROM_NIH = ("its images are NIH ChestX-ray14 images: a model trained on NIH's train list has probably seen many "
             "of them, so this is not an external test")

DATASETS: dict[str, ExternalSpec] = {
    "openi": ExternalSpec(
        "openi", "OpenI (Indiana University)",
        access="open: `cxr-bench data download --dataset openi --data-root DIR` (NLMCXR_png.tgz and NLMCXR_reports.tgz "
               "from https://openi.nlm.nih.gov/faq)",
        layout="the PNGs of NLMCXR_png.tgz anywhere under the data root (e.g. images/CXR1_1_IM-0001-3001.png), "
               "optionally NLMCXR_reports.tgz beside them",
        views="frontal: DICOM View Position PA or AP; where it is missing, xrv's t-SNE-derived view when PA",
        patients="report (uId): OpenI has no patient ids, one report per examination",
        labels="MeSH terms of the radiology reports (automatic), as xrv reads them",
        mapping=MAPPINGS["openi"], unit="report", downloadable=True),
    "padchest": ExternalSpec(
        "padchest", "PadChest (Hospital San Juan, Alicante)",
        access="request access at https://bimcv.cipf.es/bimcv-projects/padchest/ (BIMCV); download the image "
               "zips and PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
        layout="the PNGs (folders 0/ ... 54/ of the zips, any depth) under the data root, and optionally "
               "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz) in it",
        views="frontal: Projection PA, AP or AP_horizontal (supine AP); lateral, costal and excluded dropped",
        patients="PatientID",
        labels="Spanish reports: 27% by physicians, the rest by NLP; xrv's filters apply (images without labels, "
               "21 known-broken files and patients under 10 are left out)",
        mapping=MAPPINGS["padchest"]),
    "chexpert": ExternalSpec(
        "chexpert", "CheXpert (Stanford)",
        access="register at https://stanfordmlgroup.github.io/competitions/chexpert/ and download "
               "CheXpert-v1.0-small (or CheXpert-v1.0)",
        layout="DIR/CheXpert-v1.0-small/train.csv and DIR/CheXpert-v1.0-small/train/patientNNNNN/studyN/"
               "viewN_frontal.jpg (DIR may also be the CheXpert-v1.0-small folder itself)",
        views="frontal: AP/PA column PA or AP on Frontal/Lateral = Frontal",
        patients="patientNNNNN of the image path",
        labels="CheXpert labeler on reports (train.csv); uncertain (-1) and unmentioned are scored as negative "
               "(U-Zeros), counted per label in the metrics",
        mapping=MAPPINGS["chexpert"]),
    "rsna": ExternalSpec(
        "rsna", "RSNA Pneumonia Detection Challenge",
        access="Kaggle: https://www.kaggle.com/c/rsna-pneumonia-detection-challenge (accept the rules); convert "
               "the DICOMs to PNG or take the JPEG release "
               "(https://academictorrents.com/details/95588a735c9ae4d123f3ca408e56570409bcf2a9)",
        layout="<patientId>.jpg or .png anywhere under the data root, optionally stage_2_train_labels.csv",
        views="frontal: DICOM ViewPosition PA or AP (all are frontal)",
        patients="none: one id per image, so the bootstrap resamples images",
        labels="radiologists (Shih et al. 2019)",
        mapping=MAPPINGS["rsna"], unit="image", from_nih=True),
    "siim": ExternalSpec(
        "siim", "SIIM-ACR Pneumothorax Segmentation",
        access="Kaggle: https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation; convert the DICOMs to PNG",
        layout="<ImageId>.png anywhere under the data root, optionally train-rle.csv",
        views="all images (no view is recorded; the set is frontal radiographs)",
        patients="none: one id per image, so the bootstrap resamples images",
        labels="radiologists' pneumothorax masks",
        mapping=MAPPINGS["siim"], unit="image", from_nih=True),
}


def get_spec(name: str) -> ExternalSpec:
    try:
        return DATASETS[str(name).lower()]
    except KeyError:
        raise ExternalDataError(f"unknown external dataset {name!r}; known: {', '.join(DATASETS)}") from None


def release_list(name: str) -> Path:
    """The download list (the format of ``data/nih_release.json``) of an openly downloadable set."""
    from importlib import resources

    spec = get_spec(name)
    if not spec.downloadable:
        raise ExternalDataError(f"{spec.title} is not openly downloadable: {spec.access}")
    return Path(str(resources.files(__package__).joinpath(f"{spec.name}_release.json")))


def mapping_table(name: str | None = None) -> pd.DataFrame:
    """``dataset, nih_label, their_label, scored, note``: every NIH label in every set (or one)."""
    rows = [{"dataset": spec.name, "nih_label": m.nih, "their_label": m.theirs or "", "scored": m.theirs is not None,
             "note": m.note} for spec in DATASETS.values() if name is None or spec.name == name for m in spec.mapping]
    return pd.DataFrame(rows, columns=["dataset", "nih_label", "their_label", "scored", "note"])


def require_xrv() -> Any:
    """The torchxrayvision module, or a one-line error saying how to install it."""
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise ExternalDataError("external test sets need torchxrayvision: pip install 'cxr-bench[external]'") from None
    return xrv


@contextlib.contextmanager
def _numpy_state_kept() -> Iterator[None]:
    """Around an xrv constructor: numpy's global state put back, and the pandas deprecation warnings raised
    inside xrv's own code (nothing the user can act on) kept out of the output."""
    state = np.random.get_state()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"torchxrayvision(\.|$)")
            yield
    finally:
        np.random.set_state(state)


def _shipped(name: str) -> Path:
    xrv = require_xrv()
    return Path(xrv.datasets.datapath) / name


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


@lru_cache(maxsize=1)
def _nih_split_sizes() -> tuple[int, int]:
    from ..bundled import full_metadata_root

    root = full_metadata_root()
    return (len((root / "train_val_list.txt").read_text().split()), len((root / "test_list.txt").read_text().split()))


def nih_overlap_note(spec: ExternalSpec) -> str | None:
    """The warning of a set whose images come from NIH (None for the others)."""
    if not spec.from_nih:
        return None
    tv, test = _nih_split_sizes()
    return (f"{spec.title}: {_FROM_NIH}. Its metadata carries no NIH image index, so which split each image "
            f"sits in cannot be told; NIH's official lists put {tv:,} of {tv + test:,} images "
            f"({tv / (tv + test):.1%}) in train_val and {test:,} ({test / (tv + test):.1%}) in test")


@dataclass
class ExternalSet:
    """One external set read from a data root: frontal images, NIH-named labels, patients, files."""

    spec: ExternalSpec
    root: Path
    metadata: pd.DataFrame
    data_entry_path: Path  # the metadata file the labels came from
    paths: dict[str, Path]
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> images left out before scoring
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def shared_labels(self) -> tuple[str, ...]:
        return self.spec.shared

    def image_paths(self) -> dict[str, Path]:
        return dict(self.paths)

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for the metrics file: what was scored and how it was chosen."""
        m = self.metadata
        return {"dataset": self.spec.name, "title": self.spec.title, "root": str(self.root),
                "metadata_file": str(self.data_entry_path), "n_images": int(len(m)),
                "n_patients": int(m["patient_id"].nunique()), "views": self.spec.views,
                "view_counts": {str(k): int(v) for k, v in m["view"].value_counts().items()},
                "excluded": dict(self.excluded), "patient_unit": self.spec.patients,
                "bootstrap_unit": self.spec.unit,
                "label_source": self.spec.labels,
                "label_mapping": [{"nih": x.nih, "theirs": x.theirs, "note": x.note} for x in self.spec.mapping],
                "dropped_labels": self.spec.dropped, "nih_overlap": nih_overlap_note(self.spec),
                "attributes": [a for a in ("sex", "age", "view") if _known(m[a]).any()], **self.notes}


def _known(values: pd.Series) -> pd.Series:
    if values.dtype.kind in "fi":
        return values.notna()
    return ~values.astype(str).isin(["unknown", "nan", "", "UNKNOWN", "None"])


def _sex(values: pd.Series) -> np.ndarray:
    v = values.astype(str).str.strip().str.upper().map({"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"})
    return v.fillna("unknown").to_numpy(dtype=object)


def _labels_by_nih(spec: ExternalSpec, pathologies: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
    names = [str(p) for p in pathologies]
    out = {}
    for m in spec.mapping:
        if m.theirs is None:
            continue
        if m.theirs not in names:
            raise ExternalDataError(f"{spec.title}: torchxrayvision has no pathology {m.theirs!r} (it has "
                                    f"{', '.join(names)}); install torchxrayvision>=1.2")
        # 1 = present; 0, NaN (unmentioned) and CheXpert's uncertain (NaN in xrv) are negative.
        out[m.nih] = labels[:, names.index(m.theirs)] == 1
    return out


# ------------------------------------------------------------------------------------------ the adapters
Parsed = tuple[pd.DataFrame, dict[str, np.ndarray], Path, dict[str, int], dict[str, Any]]


def _openi(spec: ExternalSpec, root: Path) -> Parsed:
    xrv = require_xrv()
    reports = _first(root, ("NLMCXR_reports.tgz",)) or _shipped("NLMCXR_reports.tgz")
    with _numpy_state_kept():
        ds = xrv.datasets.Openi_Dataset(imgpath=str(root), xmlpath=str(reports), views=["*"], unique_patients=False)
    csv = ds.csv.reset_index(drop=True)
    vp = csv["View Position"].astype(str).str.upper()
    tsne = csv["tsne-view"].astype(str)
    view = np.where(vp.isin(FRONTAL), vp, np.where(vp.isin(["UNKNOWN", "NAN"]) & (tsne == "PA"), "PA", ""))
    study = pd.to_numeric(csv["Study Date"], errors="coerce") // 10000
    birth = pd.to_numeric(csv["Patient's Birth Date"], errors="coerce") // 10000
    frame = pd.DataFrame({"image": csv["imageid"].astype(str) + ".png", "patient_id": csv["uid"].astype(str),
                          "sex": _sex(csv["Patient's Sex"]), "age": (study - birth).to_numpy(dtype=np.float64),
                          "view": view, "report_id": csv["uid"].astype(str)})
    return frame, _labels_by_nih(spec, ds.pathologies, ds.labels), reports, {}, {}


PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def _padchest(spec: ExternalSpec, root: Path) -> Parsed:
    xrv = require_xrv()
    meta = _first(root, (PADCHEST_CSV, PADCHEST_CSV + ".gz")) or _shipped(PADCHEST_CSV + ".gz")
    with _numpy_state_kept():
        ds = xrv.datasets.PC_Dataset(imgpath=str(root), csvpath=str(meta), views=["*"], unique_patients=False)
    csv = ds.csv.reset_index(drop=True)
    proj = csv["view"].astype(str)
    view = np.where(proj == "PA", "PA", np.where(proj.isin(["AP", "AP Supine"]), "AP", ""))
    year = pd.to_numeric(csv["StudyDate_DICOM"], errors="coerce") // 10000
    frame = pd.DataFrame({"image": csv["ImageID"].astype(str), "patient_id": csv["PatientID"].astype(str),
                          "sex": _sex(csv["PatientSex_DICOM"]),
                          "age": (year - pd.to_numeric(csv["PatientBirth"], errors="coerce")).to_numpy(np.float64),
                          "view": view, "image_dir": csv["ImageDir"].astype(str)})
    return frame, _labels_by_nih(spec, ds.pathologies, ds.labels), meta, {}, {}


def _chexpert_base(root: Path) -> tuple[Path, Path | None]:
    for base in (root / "CheXpert-v1.0-small", root / "CheXpert-v1.0", root):
        if (base / "train.csv").is_file():
            return base, base / "train.csv"
    base = next((b for b in (root / "CheXpert-v1.0-small", root / "CheXpert-v1.0") if b.is_dir()), root)
    return base, None


def _chexpert(spec: ExternalSpec, root: Path) -> Parsed:
    xrv = require_xrv()
    base, meta = _chexpert_base(root)
    meta = meta or _shipped("chexpert_train.csv.gz")
    with _numpy_state_kept():
        ds = xrv.datasets.CheX_Dataset(imgpath=str(base), csvpath=str(meta), views=["*"], unique_patients=False)
    csv = ds.csv.reset_index(drop=True)
    rel = csv["Path"].astype(str).str.replace(r"^CheXpert-v1\.0(-small)?/", "", regex=True)
    view = np.where(csv["view"].astype(str).isin(FRONTAL), csv["view"].astype(str), "")
    age = pd.to_numeric(csv["Age"], errors="coerce").replace(0, np.nan)
    frame = pd.DataFrame({"image": rel, "patient_id": rel.str.extract(r"(patient\d+)")[0].fillna(rel),
                          "sex": _sex(csv["Sex"]), "age": age.to_numpy(np.float64), "view": view})
    their = {m.nih: m.theirs if m.theirs != "Effusion" else "Pleural Effusion" for m in spec.mapping if m.theirs}
    frontal = view != ""
    uncertain = {lab: int((pd.to_numeric(csv[col], errors="coerce")[frontal] == -1).sum()) for lab, col in their.items()}
    return (frame, _labels_by_nih(spec, ds.pathologies, ds.labels), meta, {},
            {"uncertain_scored_negative": uncertain, "image_base": str(base)})


def _rsna(spec: ExternalSpec, root: Path) -> Parsed:
    xrv = require_xrv()
    meta = _first(root, ("stage_2_train_labels.csv",)) or _shipped("kaggle_stage_2_train_labels.csv.zip")
    with _numpy_state_kept():
        ds = xrv.datasets.RSNA_Pneumonia_Dataset(imgpath=str(root), csvpath=str(meta), views=["*"])
    csv = ds.csv.reset_index(drop=True)
    view = np.where(csv["view"].astype(str).isin(FRONTAL), csv["view"].astype(str), "")
    frame = pd.DataFrame({"image": csv["patientId"].astype(str) + ".jpg", "patient_id": csv["patientId"].astype(str),
                          "sex": _sex(csv["PatientSex"]),
                          "age": pd.to_numeric(csv["PatientAge"], errors="coerce").to_numpy(np.float64), "view": view})
    return frame, _labels_by_nih(spec, ds.pathologies, ds.labels), meta, {}, {}


def _siim(spec: ExternalSpec, root: Path) -> Parsed:
    xrv = require_xrv()
    meta = _first(root, ("train-rle.csv",)) or _shipped("siim-pneumothorax-train-rle.csv.gz")
    cache = xrv.datasets._cache_dict
    cache.pop("siim_file_map", None)  # xrv keys its file walk by class, not by folder
    try:
        with _numpy_state_kept():
            ds = xrv.datasets.SIIM_Pneumothorax_Dataset(imgpath=str(root), csvpath=str(meta))
    finally:
        cache.pop("siim_file_map", None)
    # One row per mask: an image with several masks (or none) is one image, positive if any mask is.
    per = pd.DataFrame({"ImageId": ds.csv["ImageId"].astype(str).to_numpy(), "pos": ds.labels[:, 0] == 1})
    per = per.groupby("ImageId", sort=False)["pos"].any().reset_index()
    frame = pd.DataFrame({"image": per["ImageId"] + ".png", "patient_id": per["ImageId"], "sex": "unknown",
                          "age": np.nan, "view": "unknown"})
    return frame, {"Pneumothorax": per["pos"].to_numpy()}, meta, {}, {}


_ADAPTERS: dict[str, Callable[[ExternalSpec, Path], Parsed]] = {
    "openi": _openi, "padchest": _padchest, "chexpert": _chexpert, "rsna": _rsna, "siim": _siim}


# ------------------------------------------------------------------------------------------ files
def _walk(root: Path) -> dict[str, Path]:
    """Basename -> file of every image under ``root`` (hidden folders skipped; the first of twins wins)."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(_IMAGE_SUFFIXES + (".dcm",)):
                out.setdefault(f, Path(dirpath) / f)
    return out


def _locate(spec: ExternalSpec, root: Path, frame: pd.DataFrame, notes: dict[str, Any]) -> dict[str, Path | None]:
    names = frame["image"].tolist()
    if spec.name == "chexpert":
        base = Path(notes["image_base"])
        return {n: (base / n if (base / n).is_file() else None) for n in names}
    found = _walk(root)
    out: dict[str, Path | None] = {}
    for n in names:
        stem = n.rsplit(".", 1)[0]
        hit = next((found[stem + s] for s in _IMAGE_SUFFIXES if stem + s in found), None)
        if hit is None and stem + ".dcm" in found:
            raise ExternalDataError(f"{spec.title}: {found[stem + '.dcm']} is DICOM; cxr-bench reads PNG and JPEG "
                                    "only (as it does for NIH): convert the images to 8- or 16-bit PNG named "
                                    f"<id>.png, see docs/external.md")
        out[n] = hit
    return out


def open_external(name: str, root: str | os.PathLike) -> ExternalSet:
    """Read external set ``name`` from ``root``: frontal images only, NIH-named shared labels, every file found.

    Raises :class:`ExternalDataError` (one line: the set, what is wrong, what to do) before any work when
    torchxrayvision is missing, ``root`` is not a folder, no listed image is under it (a wrong layout) or
    some are missing.
    """
    spec = get_spec(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ExternalDataError(f"{spec.title}: data root {root} is not a folder; pass --data-root DIR (expected "
                                f"layout: {spec.layout}; get it: {spec.access})")
    frame, labels, meta, excluded, notes = _ADAPTERS[spec.name](spec, root)
    frontal = frame["view"].astype(str) != ""
    if spec.name == "siim":
        frontal[:] = True
    if (~frontal).any():
        excluded["not frontal (lateral or unknown view)"] = int((~frontal).sum())
    keep = frontal.to_numpy()
    frame = frame[keep].reset_index(drop=True)
    y = np.column_stack([labels[lab][keep] for lab in spec.shared])
    frame.insert(1, "finding_labels", ["|".join(np.asarray(spec.shared)[row]) or "No Finding" for row in y])
    if frame["image"].duplicated().any():
        dup = frame.loc[frame["image"].duplicated(), "image"].iloc[0]
        raise ExternalDataError(f"{spec.title}: {meta} lists image {dup!r} twice; use the set's original metadata")
    if frame.empty:
        raise ExternalDataError(f"{spec.title}: {meta} lists no frontal image; use the set's original metadata")
    located = _locate(spec, root, frame, notes)
    missing = [n for n, p in located.items() if p is None]
    if len(missing) == len(located):
        raise ExternalDataError(f"{spec.title}: none of the {len(located):,} frontal images of {meta.name} is under "
                                f"{root} (first: {missing[0]}); expected layout: {spec.layout}. "
                                f"Get it: {spec.access}")
    if missing:
        raise ExternalDataError(f"{spec.title}: {len(missing):,} of the {len(located):,} frontal images of {meta.name} "
                                f"are missing under {root} (first: {missing[0]}); finish the download, or put "
                                f"the metadata file of the part you have in the data root (expected layout: {spec.layout})")
    log.info("%s: %d frontal images of %d patients from %s", spec.title, len(frame), frame["patient_id"].nunique(),
             meta)
    overlap = nih_overlap_note(spec)
    if overlap:
        log.warning("%s", overlap)
    found = {n: p for n, p in located.items() if p is not None}  # all of them: none is missing
    if spec.name != "chexpert":  # the file's own name (an RSNA image may be .png or .jpg)
        frame["image"] = [found[n].name for n in frame["image"]]
    paths = dict(zip(frame["image"], found.values()))
    return ExternalSet(spec, root, frame, meta, paths, excluded, notes)
