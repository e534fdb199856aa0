"""Splits: official (lists + a patient-wise validation carve), random-image (leaky), random-patient."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cxr_bench.data.release import NIHRelease
from cxr_bench.data.splits import PROTOCOLS, Splits, make_splits
from cxr_bench.errors import ConfigError, SplitError

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def write_release(root: Path, images_per_patient: dict[int, int], train_val: list[str], test: list[str]) -> Path:
    """A metadata-only release: patient p has images_per_patient[p] images."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [HEADER]
    for pid, k in images_per_patient.items():
        for j in range(k):
            rows.append(f"{pid:08d}_{j:03d}.png,No Finding,{j},{pid},40,F,PA,2500,2048,0.168,0.168")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val))
    (root / "test_list.txt").write_text("\n".join(test))
    return root


def names_of(pids: list[int], k: int) -> list[str]:
    return [f"{p:08d}_{j:03d}.png" for p in pids for j in range(k)]


@pytest.fixture(scope="module")
def full():
    return NIHRelease.bundled_full()


@pytest.fixture(scope="module")
def sample():
    return NIHRelease.open(None)


def _check_shape(s: Splits, n: int) -> None:
    for rows in s.sets().values():
        assert rows.dtype == np.int64
        assert np.all(np.diff(rows) > 0), "rows must be sorted and unique"
        assert rows.size == 0 or (rows[0] >= 0 and rows[-1] < n)
    all_rows = np.concatenate([s.train, s.val, s.test, s.unassigned])
    assert np.unique(all_rows).size == all_rows.size == n  # a partition of the metadata


def _pids(rel: NIHRelease, rows: np.ndarray) -> set[int]:
    return set(rel.metadata["patient_id"].to_numpy()[rows].tolist())


def test_protocols_registered():
    assert {"official", "random-image", "random-patient"} <= set(PROTOCOLS.names())
    with pytest.raises(ConfigError, match="random-patient"):
        make_splits(NIHRelease.open(None), "random")


def test_official_on_full_metadata(full):
    s = make_splits(full, "official", val_fraction=0.1, seed=0)
    _check_shape(s, len(full.metadata))
    assert not s.patient_leaky and s.protocol == "official" and s.seed == 0
    assert s.train.size + s.val.size == 86_524 and s.test.size == 25_596
    images = full.metadata["image"].to_numpy(dtype=object)
    assert set(images[s.test]) == set(full.test_names)
    assert set(images[np.concatenate([s.train, s.val])]) == set(full.train_val_names)
    tr, va, te = _pids(full, s.train), _pids(full, s.val), _pids(full, s.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(te) == 2797 and len(tr) + len(va) == 28_008
    assert abs(len(va) - 0.1 * 28_008) <= 1  # the fraction is of patients
    assert abs(s.val.size / 86_524 - 0.1) < 0.01
    assert s.shared_patients(full) == {"train/val": 0, "train/test": 0, "val/test": 0}


def test_official_deterministic_and_seeded(sample):
    a = make_splits(sample, "official", seed=3)
    b = make_splits(sample, "official", seed=3)
    c = make_splits(sample, "official", seed=4)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.val, c.val)
    np.testing.assert_array_equal(a.test, c.test)  # the test list never moves


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 0.5])
def test_official_val_fraction(sample, fraction):
    s = make_splits(sample, "official", val_fraction=fraction, seed=1)
    _check_shape(s, len(sample.metadata))
    n_pat = len(_pids(sample, np.concatenate([s.train, s.val])))
    assert abs(len(_pids(sample, s.val)) - fraction * n_pat) <= 1
    assert not (_pids(sample, s.train) & _pids(sample, s.val))
    if fraction == 0.0:
        assert s.val.size == 0


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_official_bad_val_fraction(sample, bad):
    with pytest.raises(ConfigError):
        make_splits(sample, "official", val_fraction=bad)


def test_bad_seed(sample):
    with pytest.raises(ConfigError):
        make_splits(sample, "official", seed=-1)


def test_listed_name_missing_from_metadata(tmp_path):
    root = write_release(tmp_path / "r", {1: 2, 2: 2, 3: 1}, names_of([1, 2], 2) + ["00000009_000.png"],
                         names_of([3], 1))
    with pytest.raises(SplitError) as ei:
        make_splits(NIHRelease.open(root), "official")
    assert "00000009_000.png" in str(ei.value) and "train_val_list.txt" in str(ei.value)


def test_image_on_both_lists(tmp_path):
    root = write_release(tmp_path / "r", {1: 2, 2: 2, 3: 1}, names_of([1, 2], 2),
                         names_of([3], 1) + ["00000001_000.png"])
    with pytest.raises(SplitError, match="00000001_000.png"):
        make_splits(NIHRelease.open(root), "official")


def test_patient_on_both_sides(tmp_path):
    root = write_release(tmp_path / "r", {1: 2, 2: 2, 3: 1}, names_of([1, 2], 2)[:-1],
                         names_of([3], 1) + ["00000002_001.png"])
    with pytest.raises(SplitError) as ei:
        make_splits(NIHRelease.open(root), "official")
    assert "patient 2" in str(ei.value) and "00000002_001.png" in str(ei.value)


def test_unlisted_images_warned_and_reported(tmp_path, caplog):
    root = write_release(tmp_path / "r", {1: 2, 2: 2, 3: 1, 4: 1}, names_of([1, 2], 2), names_of([3], 1))
    rel = NIHRelease.open(root)
    with caplog.at_level(logging.WARNING, logger="cxr_bench.data.splits"):
        s = make_splits(rel, "official")
    assert "neither split list" in caplog.text and "00000004_000.png" in caplog.text
    assert rel.metadata["image"].iloc[s.unassigned].tolist() == ["00000004_000.png"]
    _check_shape(s, len(rel.metadata))


def test_random_image_is_leaky_and_70_10_20(full, caplog):
    with caplog.at_level(logging.WARNING, logger="cxr_bench.data.splits"):
        s = make_splits(full, "random-image", seed=0)
    assert s.patient_leaky and s.protocol == "random-image" and s.fractions == (0.7, 0.1, 0.2)
    assert "patient-leaky" in caplog.text
    _check_shape(s, len(full.metadata))
    n = len(full.metadata)
    assert s.train.size == round(0.7 * n) and s.val.size == round(0.1 * n)
    assert s.test.size == n - s.train.size - s.val.size
    assert s.shared_patients(full)["train/test"] > 0  # why it is flagged


def test_random_patient_is_disjoint(full):
    s = make_splits(full, "random-patient", seed=0, random_fractions=(0.6, 0.2, 0.2))
    assert not s.patient_leaky
    _check_shape(s, len(full.metadata))
    tr, va, te = _pids(full, s.train), _pids(full, s.val), _pids(full, s.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    n_pat = full.metadata["patient_id"].nunique()
    assert len(tr) == round(0.6 * n_pat) and len(va) == round(0.2 * n_pat) and len(te) == n_pat - len(tr) - len(va)


@pytest.mark.parametrize("protocol", ["random-image", "random-patient"])
def test_random_deterministic(sample, protocol):
    a = make_splits(sample, protocol, seed=7)
    b = make_splits(sample, protocol, seed=7)
    c = make_splits(sample, protocol, seed=8)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.train, c.train)


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.1), (0.5, 0.6, -0.1), (0.0, 0.5, 0.5), (1.0, 0.0, 0.0),
                                       ("a", 1, 2)])
def test_bad_random_fractions(sample, fractions):
    with pytest.raises(ConfigError):
        make_splits(sample, "random-patient", random_fractions=fractions)


def test_summary_and_names(sample):
    s = make_splits(sample, "official")
    summary = s.summary(sample)
    assert summary["images"] == s.sizes() and summary["patient_leaky"] is False
    names = s.names(sample)
    assert len(names["test"]) == 265 and set(names["test"]) == set(sample.test_names)
