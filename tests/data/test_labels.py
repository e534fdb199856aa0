"""Label sets: fixed order, aliases, No Finding, vectorised encoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cxr_bench.data.labels import (
    LABEL_SETS,
    NO_FINDING,
    LabelSet,
    canonical_finding_labels,
    canonical_label,
    get_label_set,
    label_counts,
    parse_finding_labels,
)
from cxr_bench.errors import ConfigError, CxrBenchError, MetadataError

CX8 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
CX14 = CX8 + ["Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def test_registered_sets_and_exact_order():
    assert set(LABEL_SETS.names()) >= {"chestxray8", "chestxray14"}
    assert list(get_label_set("chestxray8").labels) == CX8
    assert list(get_label_set("chestxray14").labels) == CX14
    assert len(get_label_set("chestxray14")) == 14


def test_unknown_label_set_is_config_error_listing_names():
    with pytest.raises(ConfigError, match="chestxray14"):
        get_label_set("chexpert")


def test_label_set_is_frozen_and_passes_through():
    ls = get_label_set("chestxray8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ls.name = "x"  # type: ignore[misc]
    assert get_label_set(ls) is ls
    assert isinstance(ls.labels, tuple)


def test_label_set_rejects_non_nih_names():
    with pytest.raises(MetadataError):
        LabelSet("bad", ("Atelectasis", "Fracture"))
    with pytest.raises(MetadataError):
        LabelSet("bad", ("Mass", "Mass"))


@pytest.mark.parametrize("raw,canonical", [
    ("Infiltration", "Infiltration"),
    ("Infiltrate", "Infiltration"),
    ("infiltrate", "Infiltration"),
    ("Pleural Thickening", "Pleural_Thickening"),
    ("pleural_thickening", "Pleural_Thickening"),
    ("PLEURAL-THICKENING", "Pleural_Thickening"),
    (" Pleural  Thickening ", "Pleural_Thickening"),
    ("No Finding", NO_FINDING),
    ("no finding", NO_FINDING),
    ("No_Finding", NO_FINDING),
    ("effusion", "Effusion"),
])
def test_canonical_label(raw, canonical):
    assert canonical_label(raw) == canonical


@pytest.mark.parametrize("raw", ["Fracture", "Infiltrat", "Pleural", "", "Nodule or mass", "Effusions"])
def test_unknown_label_raises_with_value(raw):
    with pytest.raises(MetadataError) as ei:
        canonical_label(raw)
    assert repr(raw) in str(ei.value)
    assert isinstance(ei.value, CxrBenchError)


def test_parse_finding_labels():
    assert parse_finding_labels("No Finding") == ()
    assert parse_finding_labels("Cardiomegaly|Effusion") == ("Cardiomegaly", "Effusion")
    assert parse_finding_labels("Infiltrate|Pleural Thickening") == ("Infiltration", "Pleural_Thickening")
    assert parse_finding_labels("Mass|Mass") == ("Mass",)
    assert canonical_finding_labels("Infiltrate|Mass") == "Infiltration|Mass"
    assert canonical_finding_labels("no finding") == "No Finding"


@pytest.mark.parametrize("bad", ["No Finding|Mass", "Mass|No Finding", "", "   ", "Mass||Nodule", "Mass|",
                                 "Mass|Fracture"])
def test_parse_rejects(bad):
    with pytest.raises(MetadataError):
        parse_finding_labels(bad)


def test_encode_no_finding_is_all_zeros():
    for name in ("chestxray8", "chestxray14"):
        ls = get_label_set(name)
        y = ls.encode(["No Finding", "No Finding"])
        assert y.shape == (2, len(ls)) and y.dtype == np.float32
        assert not y.any()


def test_encode_columns_follow_set_order():
    ls = get_label_set("chestxray14")
    y = ls.encode(["Hernia|Atelectasis", "Infiltrate", "Pleural_Thickening|Pneumothorax"])
    expected = np.zeros((3, 14), np.float32)
    expected[0, [CX14.index("Hernia"), CX14.index("Atelectasis")]] = 1
    expected[1, CX14.index("Infiltration")] = 1
    expected[2, [CX14.index("Pleural_Thickening"), CX14.index("Pneumothorax")]] = 1
    np.testing.assert_array_equal(y, expected)


def test_chestxray8_ignores_the_six_later_findings():
    y = get_label_set("chestxray8").encode(["Hernia", "Hernia|Mass", "Edema|Emphysema"])
    assert y.sum() == 1 and y[1, CX8.index("Mass")] == 1


def test_encode_accepts_series_and_arrays_and_empty():
    ls = get_label_set("chestxray8")
    s = pd.Series(["Mass", "No Finding", "Mass"])
    np.testing.assert_array_equal(ls.encode(s), ls.encode(s.to_numpy()))
    assert ls.encode([]).shape == (0, 8)
    with pytest.raises(TypeError):
        ls.encode("Mass")  # a bare string is not a sequence of values


def test_encode_error_names_value_and_position():
    with pytest.raises(MetadataError) as ei:
        get_label_set("chestxray14").encode(["Mass", "Mass", "Nodule|Foo"])
    assert "'Foo'" in str(ei.value) and "position 2" in str(ei.value)
    with pytest.raises(MetadataError):
        get_label_set("chestxray14").encode(["Mass", None])


def test_encode_vectorised_matches_per_row():
    rng = np.random.default_rng(0)
    values = []
    for _ in range(500):
        k = rng.integers(0, 4)
        picks = rng.choice(CX14, size=k, replace=False).tolist()
        values.append("|".join(picks) if picks else "No Finding")
    ls = get_label_set("chestxray14")
    y = ls.encode(values)
    for i, v in enumerate(values):
        np.testing.assert_array_equal(y[i], ls.encode_one(v))
        assert set(ls.decode(y[i:i + 1])[0].split("|")) == (set(v.split("|")) if v != "No Finding" else {NO_FINDING})


def test_index_and_counts():
    ls = get_label_set("chestxray14")
    assert ls.index("Infiltrate") == 3
    assert ls.index("Hernia") == 13
    with pytest.raises(MetadataError):
        get_label_set("chestxray8").index("Hernia")
    counts = label_counts(["Mass|Nodule", "Mass", "No Finding"], "chestxray8")
    assert counts["Mass"] == 2 and counts["Nodule"] == 1 and list(counts) == CX8


def test_chestxray13_is_the_original_projects_min_cases_rule():
    """The MobileNet project kept the findings with more than 1,000 images (`MIN_CASES = 1000`, counted with
    `c_label in finding` over every row); recomputed here from the bundled full metadata."""
    from cxr_bench.data.bundled import full_metadata_root

    df = pd.read_csv(full_metadata_root() / "Data_Entry_2017_v2020.csv.gz", usecols=["Finding Labels"])
    findings = df["Finding Labels"].str.replace("No Finding", "")
    counts = {lab: int(findings.str.contains(lab, regex=False).sum()) for lab in CX14}
    kept = [lab for lab in CX14 if counts[lab] > 1000]
    assert kept == [lab for lab in CX14 if lab != "Hernia"] and counts["Hernia"] < 1000
    ls = get_label_set("chestxray13")
    assert list(ls.labels) == kept and len(ls) == 13
    # A Hernia-only image is an all-zeros row, as in the original (its label column was dropped).
    y = ls.encode(["Hernia", "Hernia|Mass", "No Finding"])
    assert y.sum() == 1 and y[1, kept.index("Mass")] == 1
