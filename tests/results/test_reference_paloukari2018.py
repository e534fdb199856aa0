"""The original MobileNet project's published AUCs (replication/paloukari2018_mobilenet_auc_13class.csv) and
which leaderboard rows they are held against."""

from __future__ import annotations

import pytest

from cxr_bench.data.labels import get_label_set
from cxr_bench.results.references import REFERENCE_FILES, match_reference, paloukari2018


def test_transcribed_numbers_and_means():
    assert "paloukari2018_mobilenet_auc_13class.csv" in REFERENCE_FILES
    t = paloukari2018()
    # The 13 labels (Hernia dropped), in the source's alphabetical order (np.unique of the findings).
    assert list(t.index) == sorted(get_label_set("chestxray13").labels)
    assert list(t.columns) == ["tx2_notebook", "tx2_script"]
    # Spot values typed from tx2/mobilenetInferenceDF.csv @ a8c22c8f and tx2/cl_mobilenetInferenceDF.csv
    # @ 86e63c6e of github.com/paloukari/NIH-Chest-X-rays-Classification.
    assert t.loc["Cardiomegaly", "tx2_notebook"] == 0.902825331551352
    assert t.loc["Pneumonia", "tx2_notebook"] == 0.671044887607011
    assert t.loc["Pneumothorax", "tx2_script"] == 0.8510674000535208
    # The "about 0.78" of the project: unweighted means over the 13 labels, summed by hand from the files:
    # notebook 10.1042207 / 13 = 0.7772, script 10.0621895 / 13 = 0.7740.
    assert round(t["tx2_notebook"].mean(), 4) == 0.7772
    assert round(t["tx2_script"].mean(), 4) == 0.7740
    # Same weights, two differently augmented passes over the test images: the spread is evaluation noise.
    assert (t["tx2_notebook"] - t["tx2_script"]).abs().max() < 0.015


def _row(**kw: str) -> dict[str, str]:
    base = {"backbone": "mobilenet_v1", "label_set": "chestxray13", "head": "simple", "split": "random-image"}
    return {**base, **kw}


@pytest.mark.parametrize(("row", "expected"), [
    (_row(), True),
    ({"backbone": "mobilenet_v1", "label_set": "chestxray13", "split": "official"}, True),  # no head column
    (_row(head="attention"), False),  # the project published no per-label AUCs of its attention model
    (_row(label_set="chestxray14"), False),
    (_row(backbone="resnet50"), False),
])
def test_which_rows_get_the_projects_numbers(row, expected):
    m = match_reference("paloukari2018", row)
    assert (m is not None) == expected
    if m is not None:
        # Never comparable: the original's test population (a resample weighted to multi-finding images),
        # checkpoint selection on the test set and augmented test images differ from every split of ours.
        assert not m.comparable and "40,000-image resample" in m.note and row["split"] in m.note
        assert len(m.auc) == 13 and "Hernia" not in m.auc and m.mean_auc == 0.7772
