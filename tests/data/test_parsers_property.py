"""Property tests (hypothesis) of the label parser and the metadata readers.

- any combination of findings, in any order and any accepted spelling, round-trips through encode/decode;
- any text given to the label parser returns a canonical name or raises MetadataError, nothing else;
- random valid Data_Entry files (both forms, plain or gzip, LF or CRLF) read back exactly;
- a targeted corruption of one row raises MetadataError naming the file and that row's line;
- random byte corruption either still reads or raises MetadataError, never another exception.
"""

from __future__ import annotations

import gzip
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr_bench.data.labels import (
    CHESTXRAY8,
    CHESTXRAY14,
    NO_FINDING,
    canonical_finding_labels,
    canonical_label,
    get_label_set,
    parse_finding_labels,
)
from cxr_bench.data.metadata import read_bbox_list, read_data_entry, read_split_list
from cxr_bench.errors import MetadataError

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")

SPELLINGS = {lab: [lab, lab.lower(), lab.upper()] for lab in CHESTXRAY14}
SPELLINGS["Infiltration"] += ["Infiltrate", "infiltrate"]
SPELLINGS["Pleural_Thickening"] += ["Pleural Thickening", "pleural thickening", "Pleural-Thickening"]
NO_FINDING_SPELLINGS = ["No Finding", "no finding", "No_Finding", "NO FINDING"]


@st.composite
def finding_strings(draw) -> tuple[str, list[str]]:
    """(raw Finding Labels value, the canonical findings it names, in order)."""
    found = draw(st.lists(st.sampled_from(CHESTXRAY14), unique=True, max_size=7))
    if not found:
        return draw(st.sampled_from(NO_FINDING_SPELLINGS)), []
    raw = "|".join(draw(st.sampled_from(SPELLINGS[lab])) for lab in found)
    return raw, found


# ------------------------------------------------------------------------------------------------ labels

@SETTINGS
@given(finding_strings())
def test_label_combinations_round_trip(case):
    raw, found = case
    assert parse_finding_labels(raw) == tuple(found)
    assert canonical_finding_labels(raw) == ("|".join(found) if found else NO_FINDING)
    ls14 = get_label_set("chestxray14")
    y = ls14.encode([raw])
    assert y.dtype == np.float32 and y.shape == (1, 14)
    assert set(np.flatnonzero(y[0])) == {CHESTXRAY14.index(f) for f in found}
    # decode gives the canonical value in label-set order, which encodes to the same row
    decoded = ls14.decode(y)[0]
    assert decoded == ("|".join(f for f in CHESTXRAY14 if f in found) or NO_FINDING)
    np.testing.assert_array_equal(ls14.encode([decoded]), y)
    # chestxray8 is the first 8 columns of chestxray14
    np.testing.assert_array_equal(get_label_set("chestxray8").encode([raw]), y[:, :8])
    assert get_label_set("chestxray8").labels == CHESTXRAY8


@SETTINGS
@given(st.lists(finding_strings(), min_size=1, max_size=40))
def test_encode_vectorised_equals_rowwise(cases):
    raws = [r for r, _ in cases]
    ls = get_label_set("chestxray14")
    y = ls.encode(raws)
    for i, raw in enumerate(raws):
        np.testing.assert_array_equal(y[i], ls.encode_one(raw))


@SETTINGS
@given(st.text(max_size=40))
def test_label_parser_total(text):
    try:
        name = canonical_label(text)
    except MetadataError:
        return
    assert name in CHESTXRAY14 or name == NO_FINDING


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("|ab Mas_sNoduleFinding")), max_size=40))
def test_finding_parser_total(text):
    try:
        found = parse_finding_labels(text)
    except MetadataError:
        return
    assert all(f in CHESTXRAY14 for f in found)


# -------------------------------------------------------------------------------------------- Data_Entry

@dataclass
class Row:
    pid: int
    idx: int
    labels: str
    follow_up: int
    age: int
    sex: str
    view: str
    width: int
    height: int
    sx: float
    sy: float

    @property
    def name(self) -> str:
        return f"{self.pid:08d}_{self.idx:03d}.png"

    def fields(self) -> list[str]:
        return [self.name, self.labels, str(self.follow_up), str(self.pid), str(self.age), self.sex, self.view,
                str(self.width), str(self.height), repr(self.sx), repr(self.sy)]


positive = st.floats(min_value=1e-3, max_value=10.0, allow_nan=False, allow_infinity=False)
rows_strategy = st.lists(
    st.builds(Row, pid=st.integers(0, 99_999_999), idx=st.integers(0, 999),
              labels=finding_strings().map(lambda c: c[0]), follow_up=st.integers(0, 999),
              age=st.integers(0, 120), sex=st.sampled_from(["M", "F"]), view=st.sampled_from(["PA", "AP"]),
              width=st.integers(1, 5000), height=st.integers(1, 5000), sx=positive, sy=positive),
    min_size=1, max_size=12, unique_by=lambda r: (r.pid, r.idx),
)


@dataclass
class Form:
    trailing: bool  # the 2017 form
    gz: bool
    crlf: bool


forms = st.builds(Form, trailing=st.booleans(), gz=st.booleans(), crlf=st.booleans())


def render(lines: list[list[str]] | list[str], form: Form) -> bytes:
    text_lines = [",".join(x) if isinstance(x, list) else x for x in lines]
    if form.trailing:
        text_lines = [line + "," for line in text_lines]
    nl = "\r\n" if form.crlf else "\n"
    data = (nl.join(text_lines) + nl).encode("utf-8")
    return gzip.compress(data, mtime=0) if form.gz else data


def write_and_read(data: bytes, name: str = "Data_Entry_2017.csv"):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        return read_data_entry(p)


@SETTINGS
@given(rows_strategy, forms)
def test_random_valid_rows_parse(rows, form):
    df = write_and_read(render([HEADER] + [r.fields() for r in rows], form))
    assert df.attrs["format"] == ("2017" if form.trailing else "v2020")
    assert df["image"].tolist() == [r.name for r in rows]
    assert df["patient_id"].tolist() == [r.pid for r in rows]
    assert df["follow_up"].tolist() == [r.follow_up for r in rows]
    assert df["age"].tolist() == [r.age for r in rows]
    assert df["sex"].tolist() == [r.sex for r in rows] and df["view"].tolist() == [r.view for r in rows]
    assert df["orig_width"].tolist() == [r.width for r in rows]
    assert df["orig_height"].tolist() == [r.height for r in rows]
    assert df["spacing_x"].tolist() == [r.sx for r in rows] and df["spacing_y"].tolist() == [r.sy for r in rows]
    assert df["finding_labels"].tolist() == [canonical_finding_labels(r.labels) for r in rows]


CORRUPTIONS = ["unknown label", "no finding plus", "bad name", "pid text", "pid mismatch", "age text",
               "width text", "spacing text", "drop field", "extra field", "duplicate", "empty sex"]
unknown_labels = st.sampled_from(["Fracture", "Nodules", "Lung Opacity", "Covid", "Normal", "Infiltrat", "X"])


@SETTINGS
@given(rows_strategy, forms, st.sampled_from(CORRUPTIONS), st.data())
def test_targeted_corruption_raises_with_line(rows, form, kind, data):
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    table = [r.fields() for r in rows]
    f = table[i]
    line = i + 2  # header is line 1
    if kind == "unknown label":
        f[1] = f[1] + "|" + data.draw(unknown_labels)
    elif kind == "no finding plus":
        f[1] = "No Finding|" + data.draw(st.sampled_from(CHESTXRAY14))
    elif kind == "bad name":
        f[0] = data.draw(st.sampled_from([f[0][1:], f[0].replace(".png", ".jpg"), f[0].replace("_", "-"),
                                          "x" + f[0], f[0] + " "]))
    elif kind == "pid text":
        f[3] = data.draw(st.sampled_from(["", "abc", f[3] + ".0", "-" + f[3], f[3] + "x"]))
    elif kind == "pid mismatch":
        f[3] = str((rows[i].pid + 1) % 100_000_000)
    elif kind == "age text":
        f[4] = data.draw(st.sampled_from(["", "1.5", "old", "-3", "12M"]))
    elif kind == "width text":
        f[7] = data.draw(st.sampled_from(["", "0", "2.5", "wide", "-1"]))
    elif kind == "spacing text":
        f[9] = data.draw(st.sampled_from(["", "0", "nan", "inf", "1e999", "-0.1", "0.1.2"]))
    elif kind == "drop field":
        del f[data.draw(st.integers(0, len(f) - 1))]
    elif kind == "extra field":
        f.insert(data.draw(st.integers(0, len(f))), data.draw(st.sampled_from(["", "x", "1"])))
    elif kind == "duplicate":
        table.append(list(f))
        line = len(table) + 1
    elif kind == "empty sex":
        f[5] = ""
    with pytest.raises(MetadataError) as ei:
        write_and_read(render([HEADER] + table, form))
    msg = str(ei.value)
    assert "Data_Entry_2017.csv" in msg and f"line {line}:" in msg, msg


@SETTINGS
@given(rows_strategy, forms, st.sampled_from(["Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                                              "Patient Age", "Patient Gender", "View Position"]))
def test_missing_column_raises(rows, form, column):
    header = HEADER.replace(column, column + "s")
    with pytest.raises(MetadataError) as ei:
        write_and_read(render([header] + [r.fields() for r in rows], form))
    assert "line 1:" in str(ei.value) and column in str(ei.value)


mutation = st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1, exclude_max=True),
                     st.integers(0, 255))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_strategy, forms, st.lists(mutation, min_size=1, max_size=4))
def test_random_byte_corruption_only_raises_metadata_error(rows, form, mutations):
    data = bytearray(render([HEADER] + [r.fields() for r in rows], form))
    for op, where, byte in mutations:
        pos = int(where * len(data))
        if op == "insert":
            data.insert(pos, byte)
        elif op == "delete" and len(data) > 1:
            del data[pos]
        else:
            data[pos] = byte
    try:
        df = write_and_read(bytes(data))
    except MetadataError:
        return
    assert len(df) >= 1 and df["image"].is_unique


# -------------------------------------------------------------------------------------- lists and boxes

names_strategy = st.lists(st.builds(lambda p, i: f"{p:08d}_{i:03d}.png", st.integers(0, 99_999_999),
                                    st.integers(0, 999)), unique=True, max_size=30)


@SETTINGS
@given(names_strategy, st.sampled_from(["\n", "\r\n", " ", "\t"]), st.booleans())
def test_split_list_round_trip(names, sep, final_newline):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "test_list.txt"
        p.write_bytes((sep.join(names) + (sep if final_newline else "")).encode())
        assert read_split_list(p) == names


@SETTINGS
@given(st.binary(max_size=300))
def test_split_list_total(blob):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "train_val_list.txt"
        p.write_bytes(blob)
        try:
            names = read_split_list(p)
        except MetadataError:
            return
        assert len(set(names)) == len(names)


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_bbox_reader_total(blob, with_header):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "BBox_List_2017.csv"
        header = b"Image Index,Finding Label,Bbox [x,y,w,h],,,\n" if with_header else b""
        p.write_bytes(header + blob)
        try:
            df = read_bbox_list(p)
        except MetadataError:
            return
        assert list(df.columns) == ["image", "label", "x", "y", "w", "h"]
