"""Readers of Data_Entry (both released forms), split lists, BBox_List and the Google 2019 labels.

Expected values are computed here with plain ``csv`` / ``gzip``, not with the reader under test.
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_bench.data.bundled import full_metadata_root, sample_root
from cxr_bench.data.metadata import (
    DATA_ENTRY_COLUMNS,
    read_bbox_list,
    read_data_entry,
    read_google2019,
    read_split_list,
)
from cxr_bench.errors import MetadataError

FULL_ENTRY = full_metadata_root() / "Data_Entry_2017_v2020.csv.gz"
SAMPLE_ENTRY = sample_root() / "Data_Entry_2017_v2020.csv"
HEADER_V2020 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def full_df():
    return read_data_entry(FULL_ENTRY)


@pytest.fixture(scope="module")
def full_rows():
    return _csv_rows(FULL_ENTRY)


# ------------------------------------------------------------------------------------------- Data_Entry

def test_full_metadata_matches_independent_parse(full_df, full_rows):
    header, rows = full_rows
    assert header == HEADER_V2020.split(",")
    assert list(full_df.columns) == list(DATA_ENTRY_COLUMNS)
    assert len(full_df) == len(rows) == 112_120
    assert full_df["image"].tolist() == [r[0] for r in rows]  # file order kept
    assert full_df["patient_id"].nunique() == len({r[3] for r in rows}) == 30_805
    assert full_df["patient_id"].tolist() == [int(r[3]) for r in rows]
    assert full_df["age"].tolist() == [int(r[4]) for r in rows]
    assert full_df["view"].value_counts().to_dict() == dict(Counter(r[6] for r in rows))
    assert full_df["sex"].value_counts().to_dict() == dict(Counter(r[5] for r in rows))
    assert full_df["orig_width"].tolist() == [int(r[7]) for r in rows]
    assert full_df["orig_height"].tolist() == [int(r[8]) for r in rows]
    np.testing.assert_array_equal(full_df["spacing_x"].to_numpy(), [float(r[9]) for r in rows])
    np.testing.assert_array_equal(full_df["spacing_y"].to_numpy(), [float(r[10]) for r in rows])
    expected = Counter(lab for r in rows for lab in r[1].split("|"))
    got = Counter(lab for v in full_df["finding_labels"] for lab in v.split("|"))
    assert got == expected
    for col in ("follow_up", "patient_id", "age", "orig_width", "orig_height"):
        assert full_df[col].dtype == np.int64
    assert full_df.attrs["format"] == "v2020"
    assert full_df.attrs["sha256"] == "9d4de640ee4f760215d8be98376b20387ca52f9c6b4d1b727cb588fb82f40b80"
    assert full_df.attrs["path"] == str(FULL_ENTRY)


def _write_2017_form(src: Path, dst: Path, *, gz: bool = False, crlf: bool = False) -> None:
    """The 2017 original form: the same rows, every line (header included) ending with a comma."""
    lines = src.read_text(encoding="utf-8").splitlines()
    nl = "\r\n" if crlf else "\n"
    text = nl.join(line + "," for line in lines) + nl
    if gz:
        dst.write_bytes(gzip.compress(text.encode()))
    else:
        dst.write_text(text, newline="")


@pytest.mark.parametrize("gz", [False, True])
def test_2017_form_reads_the_same(tmp_path, gz):
    v2020 = read_data_entry(SAMPLE_ENTRY)
    dst = tmp_path / ("Data_Entry_2017.csv.gz" if gz else "Data_Entry_2017.csv")
    _write_2017_form(SAMPLE_ENTRY, dst, gz=gz)
    with (gzip.open(dst, "rt") if gz else open(dst)) as fh:
        first, second = fh.readline(), fh.readline()
    assert first.rstrip("\n").endswith("y],") and second.rstrip("\n").endswith(",")
    old = read_data_entry(dst)
    assert old.attrs["format"] == "2017"
    assert v2020.attrs["format"] == "v2020"
    pd.testing.assert_frame_equal(old, v2020, check_like=False)


def test_full_2017_form(tmp_path, full_df):
    dst = tmp_path / "Data_Entry_2017.csv.gz"
    with gzip.open(FULL_ENTRY, "rt") as fh:
        lines = fh.read().splitlines()
    dst.write_bytes(gzip.compress(("\n".join(line + "," for line in lines) + "\n").encode()))
    old = read_data_entry(dst)
    assert old.attrs["format"] == "2017"
    pd.testing.assert_frame_equal(old, full_df)


def test_gzip_detected_by_content_and_crlf(tmp_path):
    ref = read_data_entry(SAMPLE_ENTRY)
    p = tmp_path / "Data_Entry_2017_v2020.csv"  # gzipped bytes under a .csv name
    p.write_bytes(gzip.compress(SAMPLE_ENTRY.read_bytes()))
    pd.testing.assert_frame_equal(read_data_entry(p), ref)
    q = tmp_path / "lf.csv"
    q.write_text(SAMPLE_ENTRY.read_text().replace("\r\n", "\n"), newline="")
    pd.testing.assert_frame_equal(read_data_entry(q), ref)


def test_sample_is_crlf_and_reads(tmp_path):
    assert b"\r\n" in SAMPLE_ENTRY.read_bytes()[:400]
    df = read_data_entry(SAMPLE_ENTRY)
    assert len(df) == 1673 and not df["image"].str.contains("\r").any()
    assert not df["spacing_y"].isna().any()


def test_age_with_year_suffix(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text(HEADER_V2020 + "\n00000001_000.png,Mass,0,1,058Y,M,PA,2500,2048,0.168,0.168\n")
    assert read_data_entry(p)["age"].tolist() == [58]


def test_aliases_in_data_entry_are_canonicalised(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text(HEADER_V2020 + "\n00000001_000.png,Infiltrate|Pleural Thickening,0,1,58,M,PA,2500,2048,0.168,0.168\n")
    assert read_data_entry(p)["finding_labels"].tolist() == ["Infiltration|Pleural_Thickening"]


def test_extra_columns_are_ignored_and_order_free(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("Patient ID,Image Index,Finding Labels,Follow-up #,Patient Age,Patient Gender,View Position,"
                 "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],Note\n"
                 "1,00000001_000.png,Mass,0,58,M,PA,2500,2048,0.168,0.168,hello\n")
    df = read_data_entry(p)
    assert df.loc[0, "image"] == "00000001_000.png" and df.loc[0, "patient_id"] == 1


# --------------------------------------------------------------------------------- broken Data_Entry files

GOOD_LINES = [
    HEADER_V2020,
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000002_000.png,No Finding,0,2,81,M,AP,2500,2048,0.171,0.171",
]


def _write(tmp_path: Path, lines: list[str], name: str = "Data_Entry_2017_v2020.csv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _replace(line_no: int, new: str) -> list[str]:
    lines = list(GOOD_LINES)
    lines[line_no - 1] = new
    return lines


BROKEN = {
    "unknown label": (_replace(3, "00000001_001.png,Cardiomegaly|Fracture,1,1,58,M,PA,2894,2729,0.143,0.143"),
                      3, "Fracture"),
    "no finding combined": (_replace(4, "00000002_000.png,No Finding|Mass,0,2,81,M,AP,2500,2048,0.171,0.171"),
                            4, "No Finding|Mass"),
    "empty labels": (_replace(4, "00000002_000.png,,0,2,81,M,AP,2500,2048,0.171,0.171"), 4, "''"),
    "duplicate image": (GOOD_LINES + ["00000001_001.png,Mass,1,1,58,M,PA,2894,2729,0.143,0.143"], 5,
                        "00000001_001.png"),
    "missing field": (_replace(2, "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143"), 2,
                      "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143"),
    "extra field": (_replace(3, GOOD_LINES[2] + ","), 3, GOOD_LINES[2]),
    "non-integer patient id": (_replace(4, "00000002_000.png,No Finding,0,2x,81,M,AP,2500,2048,0.171,0.171"), 4, "2x"),
    "non-integer age": (_replace(2, "00000001_000.png,Cardiomegaly,0,1,fifty,M,PA,2682,2749,0.143,0.143"), 2, "fifty"),
    "non-integer follow-up": (_replace(2, "00000001_000.png,Cardiomegaly,0.5,1,57,M,PA,2682,2749,0.143,0.143"), 2,
                              "0.5"),
    "bad width": (_replace(3, "00000001_001.png,Cardiomegaly,1,1,58,M,PA,-2894,2729,0.143,0.143"), 3, "-2894"),
    "bad spacing": (_replace(3, "00000001_001.png,Cardiomegaly,1,1,58,M,PA,2894,2729,abc,0.143"), 3, "abc"),
    "empty view": (_replace(3, "00000001_001.png,Cardiomegaly,1,1,58,M,,2894,2729,0.143,0.143"), 3, "''"),
    "bad image name": (_replace(3, "00000001_1.png,Cardiomegaly,1,1,58,M,PA,2894,2729,0.143,0.143"), 3,
                       "00000001_1.png"),
    "jpg image name": (_replace(3, "00000001_001.jpg,Cardiomegaly,1,1,58,M,PA,2894,2729,0.143,0.143"), 3,
                       "00000001_001.jpg"),
    "patient id disagrees": (_replace(3, "00000001_001.png,Cardiomegaly,1,7,58,M,PA,2894,2729,0.143,0.143"), 3, "7"),
    "missing column": ([HEADER_V2020.replace("Patient Age,", "")] + [
        ",".join(f for i, f in enumerate(line.split(",")) if i != 4) for line in GOOD_LINES[1:]], 1, "Patient Age"),
    "renamed column": ([HEADER_V2020.replace("View Position", "View")] + GOOD_LINES[1:], 1, "View Position"),
    "duplicated column": ([HEADER_V2020 + ",Patient ID"] + [line + ",1" for line in GOOD_LINES[1:]], 1, "Patient ID"),
    "header only": ([HEADER_V2020], 0, ""),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_data_entry(tmp_path, case):
    lines, line_no, value = BROKEN[case]
    path = _write(tmp_path, lines)
    with pytest.raises(MetadataError) as ei:
        read_data_entry(path)
    msg = str(ei.value)
    assert path.name in msg
    if line_no:
        assert f"line {line_no}:" in msg
    assert value in msg


@pytest.mark.parametrize("case", ["unknown label", "duplicate image", "missing field", "missing column"])
def test_broken_2017_form_and_gz(tmp_path, case):
    lines, line_no, value = BROKEN[case]
    p = tmp_path / "Data_Entry_2017.csv.gz"
    p.write_bytes(gzip.compress(("\n".join(line + "," for line in lines) + "\n").encode()))
    with pytest.raises(MetadataError) as ei:
        read_data_entry(p)
    assert p.name in str(ei.value) and f"line {line_no}:" in str(ei.value) and value in str(ei.value)


def test_error_in_bundled_sized_file_names_line(tmp_path):
    with gzip.open(FULL_ENTRY, "rt") as fh:
        lines = fh.read().splitlines()
    lines[100_000] = lines[100_000].replace(",M,", ",M,,", 1) if ",M," in lines[100_000] else lines[100_000] + ","
    p = tmp_path / "big.csv"
    p.write_text("\n".join(lines))
    with pytest.raises(MetadataError, match=r"big\.csv: line 100001:"):
        read_data_entry(p)


@pytest.mark.parametrize("content,needle", [
    (b"", "line 1"),
    (b"\xff\xfe" + "x".encode("utf-16-le"), "UTF-8"),
    (b"\x1f\x8bnot really gzip", "gzip"),
    (HEADER_V2020.encode() + b"\n00000001_000.png,Mass\x00,0,1,57,M,PA,1,1,0.1,0.1\n", "NUL"),
])
def test_unreadable_files(tmp_path, content, needle):
    p = tmp_path / "Data_Entry_2017.csv"
    p.write_bytes(content)
    with pytest.raises(MetadataError, match=needle):
        read_data_entry(p)


def test_missing_file(tmp_path):
    with pytest.raises(MetadataError, match="not found"):
        read_data_entry(tmp_path / "nope.csv")
    with pytest.raises(MetadataError, match="directory"):
        read_data_entry(tmp_path)


# ------------------------------------------------------------------------------------------- split lists

@pytest.mark.parametrize("name,n", [("train_val_list.txt", 86_524), ("test_list.txt", 25_596)])
def test_bundled_split_lists(name, n):
    path = full_metadata_root() / name
    raw = path.read_bytes()
    assert not raw.endswith(b"\n")  # NIH files end without a newline
    names = read_split_list(path)
    assert names == raw.decode().split() and len(names) == n


def test_split_list_whitespace_and_errors(tmp_path):
    p = tmp_path / "test_list.txt"
    p.write_text("00000001_000.png\r\n00000001_001.png 00000002_000.png\n\n  00000003_000.png")
    assert read_split_list(p) == ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]
    p.write_text("00000001_000.png\n00000001_001.png\n00000001_000.png")
    with pytest.raises(MetadataError) as ei:
        read_split_list(p)
    assert "test_list.txt: line 3:" in str(ei.value) and "00000001_000.png" in str(ei.value) and "line 1" in str(ei.value)
    p.write_text("00000001_000.png\nimage.png\n")
    with pytest.raises(MetadataError, match=r"test_list\.txt: line 2: image name 'image\.png'"):
        read_split_list(p)
    p.write_text("")
    assert read_split_list(p) == []


# ------------------------------------------------------------------------------------------------ boxes

def test_bundled_bbox_list():
    path = full_metadata_root() / "BBox_List_2017.csv.gz"
    header, rows = _csv_rows(path)
    assert header == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""]
    df = read_bbox_list(path)
    assert list(df.columns) == ["image", "label", "x", "y", "w", "h"]
    assert len(df) == len(rows) == 984 and df["image"].nunique() == 880
    expected = Counter("Infiltration" if r[1] == "Infiltrate" else r[1] for r in rows)
    assert df["label"].value_counts().to_dict() == dict(expected)
    assert "Infiltrate" not in set(df["label"])
    np.testing.assert_allclose(df[["x", "y", "w", "h"]].to_numpy(), [[float(v) for v in r[2:6]] for r in rows])
    assert df.attrs["sha256"] == "cf9dc6029f65daa8b389415b0546af0eeeb91fbac7d63ec49d7f8de2fd8f40cd"


def test_sample_bbox_list():
    df = read_bbox_list(sample_root() / "BBox_List_2017.csv")
    assert len(df) == 60 and df["image"].nunique() == 55


BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


@pytest.mark.parametrize("lines,line_no,value", [
    ([BBOX_HEADER, "00000001_000.png,Fracture,1,2,3,4"], 2, "Fracture"),
    ([BBOX_HEADER, "00000001_000.png,Mass,1,2,3"], 2, "00000001_000.png,Mass,1,2,3"),
    ([BBOX_HEADER, "00000001_000.png,Mass,1,2,3,0"], 2, "'0'"),
    ([BBOX_HEADER, "00000001_000.png,Mass,1,2,x,4"], 2, "'x'"),
    ([BBOX_HEADER, "00000001_000.png,Mass,1,2,3,4", "0000001_000.png,Mass,1,2,3,4"], 3, "0000001_000.png"),
    (["Image Index,Label,Bbox [x,y,w,h],,,", "00000001_000.png,Mass,1,2,3,4"], 1, "Finding Label"),
])
def test_broken_bbox_list(tmp_path, lines, line_no, value):
    p = tmp_path / "BBox_List_2017.csv"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError) as ei:
        read_bbox_list(p)
    assert p.name in str(ei.value) and f"line {line_no}:" in str(ei.value) and value in str(ei.value)


def test_bbox_rows_with_trailing_empty_fields(tmp_path):
    p = tmp_path / "BBox_List_2017.csv"
    p.write_text(BBOX_HEADER + "\n00000001_000.png,Infiltrate,1.5,2,3,4,,,\n")
    df = read_bbox_list(p)
    assert df.to_dict("records") == [{"image": "00000001_000.png", "label": "Infiltration", "x": 1.5, "y": 2.0,
                                      "w": 3.0, "h": 4.0}]


# ------------------------------------------------------------------------------------------ Google 2019

def test_google2019():
    path = full_metadata_root() / "google2019_nih-chest-xray-labels.csv.gz"
    header, rows = _csv_rows(path)
    df = read_google2019(path)
    assert len(df) == len(rows) == 4376 and df["image"].is_unique
    for raw_col, col in (("Fracture", "fracture"), ("Pneumothorax", "pneumothorax"),
                         ("Airspace opacity", "airspace_opacity"), ("Nodule or mass", "nodule_or_mass")):
        i = header.index(raw_col)
        assert int(df[col].sum()) == sum(r[i] == "YES" for r in rows)
    assert df["set_id"].value_counts().to_dict() == dict(Counter(r[header.index("Set Id")] for r in rows))
    full = read_data_entry(FULL_ENTRY)
    assert df["image"].isin(full["image"]).all()


def test_google2019_bad_value(tmp_path):
    path = full_metadata_root() / "google2019_nih-chest-xray-labels.csv.gz"
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    lines[5] = lines[5].replace(",NO,", ",MAYBE,", 1)
    p = tmp_path / "g.csv"
    p.write_text("\n".join(lines))
    with pytest.raises(MetadataError, match=r"g\.csv: line 6: .*MAYBE"):
        read_google2019(p)
