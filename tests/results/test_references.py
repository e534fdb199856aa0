from __future__ import annotations

import hashlib

import pytest

from cxr_bench.errors import ConfigError
from cxr_bench.results.references import (
    REFERENCE_FILES,
    chexnet2017,
    match_reference,
    read_reference,
    replication_dir,
    wang2017_table3,
    wang2017_table4,
    wang2017_table17,
)

# sha256 of the transcriptions as they stand in the project's shared reference folder (/work/shared/reference,
# checked byte for byte when these were recorded): a changed digit in replication/ fails here on any machine.
SHARED_SHA256 = {
    "wang2017_table3_auc_8class.csv": "b2a89494c20119aa504bd85e60d784c7278d6a7f76207a85a77ea15371d3201e",
    "wang2017_table17_auc_14class_resnet50.csv": "987ec6336d4c9d9016f02ffa246fc4ee2c592dd6f216c8532027770d05e4d557",
    "wang2017_table4_localization_iobb_resnet50.csv":
        "88e652a2d46aecc61396bd7cfa4014e5b1ccb7985786ba979731c6020e681f24",
    "chexnet2017_auc_14class.csv": "d33691dc836023a1b11fa6518283c8dce27d994de7f6374f024c89a604c8960b",
}


@pytest.mark.parametrize("name", sorted(SHARED_SHA256))
def test_every_number_equals_the_shared_transcription(name):
    assert name in REFERENCE_FILES
    assert hashlib.sha256((replication_dir() / name).read_bytes()).hexdigest() == SHARED_SHA256[name]


def test_published_numbers_and_means():
    t3 = wang2017_table3()
    assert list(t3.columns) == ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                                "Pneumonia", "Pneumothorax"]
    assert t3.loc["ResNet-50", "Cardiomegaly"] == 0.8141
    assert t3.loc["AlexNet", "Pneumothorax"] == 0.7425
    assert t3.loc["ResNet-50 (unweighted CEL)", "Pneumonia"] == 0.5164
    means = t3.mean(axis=1).round(4)
    assert means["AlexNet"] == 0.6389
    assert means["GoogLeNet"] == 0.6385
    assert means["VGGNet-16"] == 0.6255
    assert means["ResNet-50"] == 0.6962
    t17 = wang2017_table17()
    assert len(t17) == 14 and t17["Hernia"] == 0.8717 and t17["Atelectasis"] == 0.7003
    assert round(t17.mean(), 4) == 0.7451
    assert round(t17.iloc[:8].mean(), 4) == 0.7187
    assert wang2017_table4().loc[0.1, "Cardiomegaly"] == 0.9931
    assert chexnet2017().loc["Pneumonia", "chexnet_densenet121"] == 0.7680


def test_unknown_reference_table():
    with pytest.raises(ConfigError, match="unknown reference table"):
        read_reference("nope.csv")


@pytest.mark.parametrize(("backbone", "label_set", "loss", "split", "setting", "table", "comparable"), [
    ("alexnet", "chestxray8", "wcel", "official", "AlexNet", "Table 3", False),
    # Table 3 is never comparable, even on the paper's own random image split: another data release.
    ("googlenet", "chestxray8", "wcel", "random-image", "GoogLeNet", "Table 3", False),
    ("vgg16", "chestxray8", "wcel", "official", "VGGNet-16", "Table 3", False),
    ("resnet50", "chestxray8", "wcel", "official", "ResNet-50", "Table 3", False),
    ("resnet50", "chestxray8", "bce", "official", "ResNet-50 (unweighted CEL)", "Table 3", False),
    ("resnet50", "chestxray14", "wcel", "official", "ResNet-50", "Table 17", True),
])
def test_wang2017_mapping(backbone, label_set, loss, split, setting, table, comparable):
    m = match_reference("wang2017", {"backbone": backbone, "label_set": label_set, "loss": loss, "split": split})
    assert m is not None and m.setting == setting and table in m.source and m.comparable is comparable
    assert len(m.auc) == (14 if label_set == "chestxray14" else 8)
    if setting == "ResNet-50" and label_set == "chestxray8":
        assert m.mean_auc == 0.6962
    if table == "Table 3":
        assert "ChestX-ray8 release (108,948 images of 32,717 patients" in m.note and not m.same_test_set
    assert m.same_test_set is (table == "Table 17" and split == "official")
    # The reference run: the suite's replication block for the same backbone and label set (loss for the
    # unweighted row).
    run = m.replicated_by
    assert run is not None and (run.suite, run.profile, run.block) == ("wang2017", "paper", "replication")
    assert dict(run.select) == {"model.backbone": backbone, "data.label_set": label_set}
    assert dict(run.overrides) == ({"loss.name": "bce"} if loss == "bce" and label_set == "chestxray8" else {})


def test_no_counterpart_and_chexnet():
    assert match_reference("wang2017", {"backbone": "mobilenet_v1", "label_set": "chestxray14"}) is None
    assert match_reference("wang2017", {"backbone": "alexnet", "label_set": "chestxray14"}) is None
    m = match_reference("chexnet", {"backbone": "densenet121", "label_set": "chestxray14", "split": "official"})
    assert m is not None and not m.comparable and m.auc["Emphysema"] == 0.9371
    assert match_reference("chexnet", {"backbone": "resnet50", "label_set": "chestxray14"}) is None
    with pytest.raises(ConfigError, match="unknown reference"):
        match_reference("nope", {})
