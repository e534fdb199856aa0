"""Published numbers to compare against: the replication/ tables, and which table fits which run.

The CSVs in ``replication/`` are byte-for-byte copies of the figures transcribed from the papers (the
citation of each lives in ``replication/README.md``). This module reads them and answers one question for
a leaderboard row: *which published number, if any, is the fair comparison for this run?* The answer is a
:class:`ReferenceMatch` from a resolver in :data:`REFERENCES`; a row with no fair counterpart gets
``None`` rather than the nearest-looking table, because a comparison across label sets or splits says
nothing about a replication.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..registry import Registry

# Backbone names of our model registry -> row names of Wang et al. 2017, Table 3.
WANG2017_BACKBONES: dict[str, str] = {
    "alexnet": "AlexNet",
    "googlenet": "GoogLeNet",
    "vgg16": "VGGNet-16",
    "resnet50": "ResNet-50",
}
# Losses that are *not* Wang's weighted cross-entropy: they compare with the unweighted-CEL ablation row.
UNWEIGHTED_LOSSES = frozenset({"bce"})

WANG2017_CITATION = "Wang et al., ChestX-ray8, CVPR 2017"
WANG2017_ARXIV_CITATION = "Wang et al., arXiv:1705.02315v5"
CHEXNET_CITATION = "Rajpurkar et al., CheXNet, arXiv:1711.05225 (2017)"
PALOUKARI2018_CITATION = ("Garyfallos, Biseda, Khan, NIH-Chest-X-rays-Classification "
                          "(github.com/paloukari), tx2/mobilenetInferenceDF.csv @ a8c22c8f")

REFERENCE_FILES = (
    "wang2017_table3_auc_8class.csv",
    "wang2017_table17_auc_14class_resnet50.csv",
    "wang2017_table4_localization_iobb_resnet50.csv",
    "chexnet2017_auc_14class.csv",
    "paloukari2018_mobilenet_auc_13class.csv",
)


def replication_dir() -> Path:
    """Directory of the packaged reference tables (``cxr_bench.replication_data``).

    Falls back to the source checkout's ``replication/`` when the package data is not installed (an
    editable install made before the package was declared).
    """
    try:
        res = importlib.resources.files("cxr_bench.replication_data")
        path = Path(str(res))
        if (path / REFERENCE_FILES[0]).is_file():
            return path
    except ModuleNotFoundError:
        pass
    import cxr_bench

    path = Path(cxr_bench.__file__).resolve().parents[1] / "replication"
    if not (path / REFERENCE_FILES[0]).is_file():
        raise ConfigError(
            f"replication tables not found (looked for package cxr_bench.replication_data and {path}); "
            "reinstall cxr-bench with `pip install -e .`"
        )
    return path


def read_reference(filename: str) -> pd.DataFrame:
    """One reference CSV as read from disk (first column as index, floats as printed in the paper)."""
    if filename not in REFERENCE_FILES:
        raise ConfigError(f"unknown reference table {filename!r}; known: {', '.join(REFERENCE_FILES)}")
    return pd.read_csv(replication_dir() / filename, index_col=0)


def wang2017_table3() -> pd.DataFrame:
    """CVPR 2017 Table 3: ROC AUC, 8 labels, rows = setting (4 backbones + unweighted-CEL ResNet-50)."""
    return read_reference("wang2017_table3_auc_8class.csv")


def wang2017_table17() -> pd.Series:
    """arXiv v5 Table 17: ResNet-50 ROC AUC on the 14 labels, official patient-wise split."""
    return read_reference("wang2017_table17_auc_14class_resnet50.csv")["auc"]


def wang2017_table4() -> pd.DataFrame:
    """CVPR 2017 Table 4: localization accuracy (IoBB > T) for ResNet-50; rows = T(IoBB)."""
    return read_reference("wang2017_table4_localization_iobb_resnet50.csv")


def chexnet2017() -> pd.DataFrame:
    """CheXNet's per-label AUCs (DenseNet-121) beside Yao et al. 2017, as tabulated in CheXNet."""
    return read_reference("chexnet2017_auc_14class.csv")


def paloukari2018() -> pd.DataFrame:
    """The original MobileNet project's per-label AUCs (13 labels), as its two TX2 inference runs wrote them:
    ``tx2_notebook`` (tx2/mobilenetInferenceDF.csv, the run behind the README's ROC figure) and
    ``tx2_script`` (tx2/cl_mobilenetInferenceDF.csv); same weights, differently augmented test images."""
    return read_reference("paloukari2018_mobilenet_auc_13class.csv")


@dataclass(frozen=True)
class ReplicationRun:
    """The run of a shipped suite that replicates a published number: ``block`` of suite ``suite`` expanded
    under ``profile``, the run whose dotted config keys equal ``select`` (seed 0), with ``overrides``
    applied as ``--set`` would. Its whole identity config is what a run must match to be comparable."""

    suite: str
    profile: str
    block: str
    select: tuple[tuple[str, Any], ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()


# The release Table 3 was computed on, which no run of ours (ChestX-ray14) can reproduce.
CHESTXRAY8_RELEASE = ("paper: the ChestX-ray8 release (108,948 images of 32,717 patients, 8 labels from the "
                      "original text mining), a random 70/10/20 image split; ours: the ChestX-ray14 release "
                      "(112,120 images of 30,805 patients, 14 labels from an updated mining)")


@dataclass(frozen=True)
class ReferenceMatch:
    """The published numbers a run should be held against.

    ``auc`` maps label -> published AUC; ``mean_auc`` is the unweighted mean over those labels (the way the
    papers report it, rounded to 4 decimals like the papers); ``comparable`` is False where the paper's
    protocol differs from ours in a way no run of ours can remove (its ``note`` says how);
    ``replicated_by`` names the run of a shipped suite whose whole config a run must match to compare (None:
    no run of ours replicates it); ``same_test_set``: the paper scored the same test images as the row
    (its test-sampling error is then shared with ours, not added to ours minus paper).
    """

    reference: str
    source: str
    setting: str
    auc: dict[str, float]
    comparable: bool
    note: str
    replicated_by: ReplicationRun | None = None
    same_test_set: bool = False

    @property
    def mean_auc(self) -> float:
        return round(sum(self.auc.values()) / len(self.auc), 4)


# A resolver takes one leaderboard row (a mapping with backbone, label_set, loss, split) and returns a
# match or None.
Resolver = Callable[[dict[str, Any]], "ReferenceMatch | None"]
REFERENCES: Registry[Resolver] = Registry("reference")


def _backbone_key(name: Any) -> str:
    # Registry names may carry a source prefix ("tv_resnet50", "timm/resnet50"); the mapping is on the arch.
    s = str(name or "").lower().split("/")[-1]
    for prefix in ("tv_", "torchvision_", "timm_"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    return s


@REFERENCES.register("wang2017")
def wang2017_reference(row: dict[str, Any]) -> ReferenceMatch | None:
    """Table 3 for ``chestxray8`` runs of the four CVPR backbones; Table 17 for ``chestxray14`` ResNet-50.

    Table 3 was computed on the ChestX-ray8 release (108,948 images, 32,717 patients, the original 8-label
    mining) with a random image-level split: no run of ours reproduces that release, so it is never
    comparable. Table 17 is on the official split of ChestX-ray14, the fair comparison for the suite's
    ``paper`` profile (its replication block is the reference run). A ResNet-50 trained with plain BCE is
    held against Table 3's unweighted-CEL ablation row.
    """
    arch = _backbone_key(row.get("backbone"))
    label_set = row.get("label_set")
    split = row.get("split")
    if label_set == "chestxray8" and arch in WANG2017_BACKBONES:
        setting = WANG2017_BACKBONES[arch]
        overrides: tuple[tuple[str, Any], ...] = ()
        if arch == "resnet50" and row.get("loss") in UNWEIGHTED_LOSSES:
            setting = "ResNet-50 (unweighted CEL)"
            overrides = (("loss.name", "bce"),)
        table = wang2017_table3()
        run = ReplicationRun("wang2017", "paper", "replication",
                             (("model.backbone", arch), ("data.label_set", "chestxray8")), overrides)
        return ReferenceMatch("wang2017", f"{WANG2017_CITATION}, Table 3", setting,
                              {k: float(v) for k, v in table.loc[setting].items()}, False, CHESTXRAY8_RELEASE, run)
    if label_set == "chestxray14" and arch == "resnet50":
        note = ("same split (official patient-wise lists)" if split == "official" else
                f"paper: official patient-wise split; ours: {split}")
        run = ReplicationRun("wang2017", "paper", "replication",
                             (("model.backbone", "resnet50"), ("data.label_set", "chestxray14")))
        return ReferenceMatch("wang2017", f"{WANG2017_ARXIV_CITATION}, Table 17", "ResNet-50",
                              {k: float(v) for k, v in wang2017_table17().items()}, True, note, run,
                              same_test_set=split == "official")
    return None


@REFERENCES.register("chexnet")
def chexnet_reference(row: dict[str, Any]) -> ReferenceMatch | None:
    """CheXNet (DenseNet-121) for ``chestxray14`` DenseNet-121 runs; never marked comparable, because
    CheXNet used its own random patient-wise 70/10/20 split, not the official lists."""
    if row.get("label_set") != "chestxray14" or _backbone_key(row.get("backbone")) != "densenet121":
        return None
    table = chexnet2017()
    return ReferenceMatch("chexnet", f"{CHEXNET_CITATION}, AUC table", "CheXNet (DenseNet-121)",
                          {k: float(v) for k, v in table["chexnet_densenet121"].items()}, False,
                          "paper: its own random patient-wise 70/10/20 split, not the official lists",
                          ReplicationRun("wang2017", "paper", "chexnet"))


# Heads whose rows the project's numbers may be held against: its published model used create_simple_model
# (our ``simple``); a leaderboard without a head column is taken at its word.
PALOUKARI2018_HEADS = frozenset({"simple", None})


@REFERENCES.register("paloukari2018")
def paloukari2018_reference(row: dict[str, Any]) -> ReferenceMatch | None:
    """The original MobileNet project's 13 AUCs for ``chestxray13`` MobileNetV1 runs with its ``simple`` head.

    Never marked comparable: its test set was a 25% image-level cut of a 40,000-image resample weighted
    towards images with several findings (few "No Finding" images), it selected its checkpoint on that same
    set, and it scored randomly augmented test images. Even our ``random-image`` run differs in all three
    (replication/paloukari2018_protocol.md); the note says which split ours used.
    """
    if row.get("label_set") != "chestxray13" or _backbone_key(row.get("backbone")) not in ("mobilenet_v1",
                                                                                            "mobilenetv1_100"):
        return None
    if row.get("head") not in PALOUKARI2018_HEADS:
        return None
    split = row.get("split")
    same = " (the same leaky image-level cut)" if split == "random-image" else ""
    note = ("paper: random 75/25 image split of a 40,000-image resample weighted to multi-finding images, "
            f"checkpoint chosen on the test set, augmented test images; ours: {split}{same} of the full "
            "release, a held-out validation set, unaugmented test images")
    table = paloukari2018()
    return ReferenceMatch("paloukari2018", PALOUKARI2018_CITATION, "MobileNetV1 (simple head)",
                          {k: float(v) for k, v in table["tx2_notebook"].items()}, False, note,
                          ReplicationRun("paloukari2018", "paper", "split", (("data.split", "random-image"),)))


def match_reference(reference: str, row: dict[str, Any]) -> ReferenceMatch | None:
    """The published numbers of ``reference`` (``wang2017``, ``chexnet``, ``paloukari2018``) that fit
    ``row``, or None."""
    return REFERENCES.get(reference)(row)
