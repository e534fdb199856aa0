"""Readers for the NIH ChestX-ray14 metadata files, with validation that names file, line and value.

``Data_Entry_2017.csv`` exists in two released forms, and both are read:

- the 2017 original (NIH box 2017, Kaggle): every line, the header included, ends with a comma, i.e. a
  trailing empty column (12 comma-separated fields);
- ``Data_Entry_2017_v2020.csv``: the same columns without the trailing one (11 fields).

In both, the header names ``OriginalImage[Width,Height]`` and ``OriginalImagePixelSpacing[x,y]`` contain a
comma, so each covers two comma-separated fields; the reader joins them back. Either form may be gzipped
(detected from the content, whatever the file name). Rows are parsed by the pandas C parser and validated
with vectorised checks (112,120 rows in well under a second). Any problem raises :class:`MetadataError`
naming the file, the 1-based line number (the header is line 1) and the offending value.

Also here: :func:`read_split_list` (``train_val_list.txt``, ``test_list.txt``), :func:`read_bbox_list`
(``BBox_List_2017.csv``) and :func:`read_google2019` (the Google 2019 adjudicated labels).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MetadataError
from ..utils.io import sha256_bytes
from .labels import NO_FINDING, canonical_finding_labels, canonical_label

log = logging.getLogger(__name__)

IMAGE_NAME_RE = r"[0-9]{8}_[0-9]{3}\.png"
_IMAGE_NAME = re.compile(IMAGE_NAME_RE)

# Output columns of read_data_entry, in order.
DATA_ENTRY_COLUMNS: tuple[str, ...] = (
    "image", "finding_labels", "follow_up", "patient_id", "age", "sex", "view",
    "orig_width", "orig_height", "spacing_x", "spacing_y",
)

# (header name as NIH spells it, output column(s) its comma-separated fields go to)
_DATA_ENTRY_SPEC: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Image Index", ("image",)),
    ("Finding Labels", ("finding_labels",)),
    ("Follow-up #", ("follow_up",)),
    ("Patient ID", ("patient_id",)),
    ("Patient Age", ("age",)),
    ("Patient Gender", ("sex",)),
    ("View Position", ("view",)),
    ("OriginalImage[Width,Height]", ("orig_width", "orig_height")),
    ("OriginalImagePixelSpacing[x,y]", ("spacing_x", "spacing_y")),
)

GOOGLE2019_FINDINGS: tuple[tuple[str, str], ...] = (
    ("Fracture", "fracture"),
    ("Pneumothorax", "pneumothorax"),
    ("Airspace opacity", "airspace_opacity"),
    ("Nodule or mass", "nodule_or_mass"),
)
_GOOGLE2019_SPEC = _DATA_ENTRY_SPEC + tuple((h, (c,)) for h, c in GOOGLE2019_FINDINGS) + (("Set Id", ("set_id",)),)

BBOX_COLUMNS: tuple[str, ...] = ("image", "label", "x", "y", "w", "h")

_INT = r"[0-9]{1,18}"
_FLOAT = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_AGE = r"[0-9]{1,3}Y?"  # some NIH-derived files write ages as "058Y"


# ----------------------------------------------------------------------------------------------- raw text

def _show(value: object, limit: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 4] + "...'"


def _load_text(path: str | os.PathLike) -> tuple[Path, str, str]:
    """Read ``path`` (plain or gzip), return (path, text, sha256 of the bytes on disk)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MetadataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MetadataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise MetadataError(f"{path}: cannot read ({e.strerror or e})") from None
    sha = sha256_bytes(raw)
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise MetadataError(f"{path}: not a valid gzip file ({e}); re-download it") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise MetadataError(f"{path}: line {line}: not UTF-8 text (byte {data[e.start:e.start + 1]!r} "
                            f"at offset {e.start}); is this the right file?") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise MetadataError(f"{path}: line {line}: contains a NUL byte; the file is corrupt or binary")
    return path, text, sha


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines


# ------------------------------------------------------------------------------------------- CSV tables

@dataclass
class _Table:
    path: Path
    sha256: str
    format: str  # "2017" (trailing empty column) or "v2020"
    frame: pd.DataFrame  # one str column per output column, row i = file line lines[i]
    lines: np.ndarray  # int64, 1-based line numbers


def _norm_header(name: str) -> str:
    return re.sub(r"\s+", "", name).lower()


def _logical_header(path: Path, header: str) -> list[tuple[str, list[int]]]:
    """Header fields with bracketed names joined back: [(name, [field indices])]."""
    fields = header.split(",")
    out: list[tuple[str, list[int]]] = []
    i = 0
    while i < len(fields):
        name = fields[i].strip()
        if "[" in name and "]" not in name:
            j = i
            while "]" not in fields[j] and j + 1 < len(fields):
                j += 1
            if "]" not in fields[j]:
                raise MetadataError(f"{path}: line 1: header name {_show(name)} opens '[' but never closes it")
            out.append((",".join(f.strip() for f in fields[i:j + 1]), list(range(i, j + 1))))
            i = j + 1
        else:
            out.append((name, [i]))
            i += 1
    return out


def _read_table(path: str | os.PathLike, spec: tuple[tuple[str, tuple[str, ...]], ...], what: str) -> _Table:
    path, text, sha = _load_text(path)
    lines = _split_lines(text)
    if not lines or lines[0].strip() == "":
        raise MetadataError(f"{path}: line 1: empty file or empty header; expected a {what} header "
                            f"starting {spec[0][0]!r}")
    header = lines[0]
    n_fields = header.count(",") + 1
    logical = _logical_header(path, header)

    by_norm: dict[str, list[int]] = {}
    for name, idx in logical:
        if name == "":
            continue  # the 2017 form's trailing empty column, or an unnamed extra
        key = _norm_header(name)
        if key in by_norm:
            raise MetadataError(f"{path}: line 1: column {name!r} appears twice in the header")
        by_norm[key] = idx
    targets: dict[str, int] = {}
    for name, cols in spec:
        idx = by_norm.get(_norm_header(name))  # type: ignore[assignment]  # reuses the loop's int name for int | None
        if idx is None:
            raise MetadataError(f"{path}: line 1: missing column {name!r} in the {what} header "
                                f"{_show(header, 300)}; expected columns: {', '.join(n for n, _ in spec)}")
        if len(idx) != len(cols):
            raise MetadataError(f"{path}: line 1: column {name!r} should span {len(cols)} comma-separated "
                                f"field(s), found {len(idx)}")
        for c, i in zip(cols, idx):
            targets[c] = i
    known = {_norm_header(n) for n, _ in spec}
    extras = [n for n, _ in logical if n and _norm_header(n) not in known]
    if extras:
        log.debug("%s: ignoring extra column(s) %s", path, extras)
    fmt = "2017" if logical[-1][0] == "" else "v2020"

    line_numbers = [i + 1 for i, ln in enumerate(lines) if i > 0 and ln != ""]
    body = [ln for i, ln in enumerate(lines) if i > 0 and ln != ""]
    if not body:
        raise MetadataError(f"{path}: no data rows after the header; expected one row per image")
    counts = np.fromiter((ln.count(",") + 1 for ln in body), dtype=np.int64, count=len(body))
    bad = np.flatnonzero(counts != n_fields)
    if bad.size:
        k = int(bad[0])
        more = f" ({bad.size - 1} more malformed row(s))" if bad.size > 1 else ""
        raise MetadataError(f"{path}: line {line_numbers[k]}: malformed row: {counts[k]} comma-separated fields, "
                            f"the header has {n_fields}{more}: {_show(body[k], 200)}")

    usecols = sorted(targets.values())
    try:
        raw = pd.read_csv(
            io.StringIO("\n".join(body)), header=None, names=list(range(n_fields)), usecols=usecols,
            dtype=str, na_filter=False, keep_default_na=False, quoting=csv.QUOTE_NONE, lineterminator="\n",
            skip_blank_lines=False, index_col=False, engine="c",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:  # pragma: no cover - pre-checked
        raise MetadataError(f"{path}: cannot parse as CSV: {e}") from None
    if len(raw) != len(body):  # pragma: no cover - pre-checked field counts make this impossible
        raise MetadataError(f"{path}: parsed {len(raw)} rows from {len(body)} lines; the file is malformed")
    frame = pd.DataFrame({c: raw[i] for c, i in targets.items()})
    return _Table(path, sha, fmt, frame, np.asarray(line_numbers, dtype=np.int64))


def _fail(table: _Table, mask: np.ndarray, column: str, problem: str, hint: str = "") -> None:
    """Raise for the first row where ``mask`` is True."""
    bad = np.flatnonzero(mask)
    if bad.size == 0:
        return
    k = int(bad[0])
    value = table.frame[column].iloc[k]
    more = f" ({bad.size - 1} more row(s) like it)" if bad.size > 1 else ""
    hint = f"; {hint}" if hint else ""
    raise MetadataError(f"{table.path}: line {table.lines[k]}: {problem} {_show(value)} in column "
                        f"{column!r}{hint}{more}")


def _factorize(s: pd.Series) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(s.to_numpy(dtype=object))
    return codes, uniques.tolist()


def _match(s: pd.Series, pattern: str) -> np.ndarray:
    """Row-wise ``re.fullmatch``; each distinct value is checked once."""
    codes, uniques = _factorize(s)
    rx = re.compile(pattern)
    ok = np.fromiter((rx.fullmatch(u) is not None for u in uniques), dtype=bool, count=len(uniques))
    return ok[codes]


def _int_column(table: _Table, col: str, pattern: str = _INT, what: str = "an integer") -> np.ndarray:
    s = table.frame[col]
    codes, uniques = _factorize(s)
    rx = re.compile(pattern)
    ok = np.fromiter((rx.fullmatch(u) is not None for u in uniques), dtype=bool, count=len(uniques))
    _fail(table, ~ok[codes], col, "malformed row: expected " + what + ", got")
    values = np.fromiter((int(u.rstrip("Y")) for u in uniques), dtype=np.int64, count=len(uniques))
    return values[codes]


def _positive_float_column(table: _Table, col: str) -> np.ndarray:
    s = table.frame[col]
    codes, uniques = _factorize(s)
    rx = re.compile(_FLOAT)
    ok = np.fromiter((rx.fullmatch(u) is not None for u in uniques), dtype=bool, count=len(uniques))
    _fail(table, ~ok[codes], col, "malformed row: expected a number, got")
    values = np.fromiter((float(u) for u in uniques), dtype=np.float64, count=len(uniques))[codes]
    _fail(table, ~(np.isfinite(values) & (values > 0)), col, "malformed row: expected a positive finite number, got")
    return values


def _patient_of_names(names: np.ndarray) -> np.ndarray:
    """int64 patient id from validated ``NNNNNNNN_NNN.png`` names (the first 8 digits), vectorised."""
    if len(names) == 0:
        return np.zeros(0, dtype=np.int64)
    chars = np.asarray(names, dtype="U16").view(np.uint32).reshape(len(names), 16)[:, :8].astype(np.int64) - 48
    return chars @ (10 ** np.arange(7, -1, -1, dtype=np.int64))


def _validate_entries(table: _Table) -> pd.DataFrame:
    """Validate the Data_Entry columns of ``table``; return the typed frame (DATA_ENTRY_COLUMNS)."""
    f = table.frame
    image = f["image"]
    images = image.to_numpy(dtype=object)
    joined = "\n".join(images)
    if not re.fullmatch(r"(?:" + IMAGE_NAME_RE + r"\n)*" + IMAGE_NAME_RE, joined):
        ok = np.fromiter((_IMAGE_NAME.fullmatch(v) is not None for v in images), dtype=bool, count=len(images))
        _fail(table, ~ok, "image", "image name",
              "expected NNNNNNNN_NNN.png (8-digit patient id, 3-digit index)")
    dup = image.duplicated(keep="first").to_numpy()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(images == images[k])[0])
        _fail(table, dup, "image", "duplicate image", f"first listed at line {table.lines[first]}")

    codes, uniques = _factorize(f["finding_labels"])
    canon = np.empty(len(uniques), dtype=object)
    for u, value in enumerate(uniques):
        try:
            canon[u] = canonical_finding_labels(value)
        except MetadataError as e:
            _fail(table, codes == u, "finding_labels", "bad finding labels", str(e))
    follow_up = _int_column(table, "follow_up")
    patient_id = _int_column(table, "patient_id")
    _fail(table, patient_id != _patient_of_names(images), "patient_id", "patient id",
          "it disagrees with the image name, whose first 8 digits are the patient id")
    age = _int_column(table, "age", _AGE, "an age in years")
    for col in ("sex", "view"):
        _fail(table, ~_match(f[col], r".*\S.*"), col, "malformed row: empty value")
    width = _int_column(table, "orig_width")
    height = _int_column(table, "orig_height")
    _fail(table, width <= 0, "orig_width", "malformed row: expected a positive width, got")
    _fail(table, height <= 0, "orig_height", "malformed row: expected a positive height, got")
    sx = _positive_float_column(table, "spacing_x")
    sy = _positive_float_column(table, "spacing_y")

    return pd.DataFrame({
        "image": images,
        "finding_labels": canon[codes] if len(canon) else np.array([], dtype=object),
        "follow_up": follow_up,
        "patient_id": patient_id,
        "age": age,
        "sex": f["sex"].to_numpy(dtype=object),
        "view": f["view"].to_numpy(dtype=object),
        "orig_width": width,
        "orig_height": height,
        "spacing_x": sx,
        "spacing_y": sy,
    })


def read_data_entry(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate ``Data_Entry_2017.csv`` or ``Data_Entry_2017_v2020.csv`` (optionally gzipped).

    Returns one row per image in file order with columns :data:`DATA_ENTRY_COLUMNS`: ``image`` (str),
    ``finding_labels`` (canonical ``|``-joined findings or ``No Finding``), ``follow_up``, ``patient_id``,
    ``age`` (int64), ``sex``, ``view`` (str), ``orig_width``, ``orig_height`` (int64), ``spacing_x``,
    ``spacing_y`` (float64). ``df.attrs`` holds ``path``, ``sha256`` (of the file as stored) and ``format``
    (``"2017"``: trailing empty column, or ``"v2020"``).

    Raises :class:`MetadataError` (file, line, value) for: a missing column, a row with the wrong number of
    fields, a non-integer follow-up / patient id / age / size, a bad spacing, an image name not of the form
    ``NNNNNNNN_NNN.png``, a patient id that disagrees with the name, a duplicate image, an unknown finding,
    or ``No Finding`` combined with a finding.
    """
    table = _read_table(path, _DATA_ENTRY_SPEC, "Data_Entry")
    df = _validate_entries(table)
    df.attrs = {"path": str(table.path), "sha256": table.sha256, "format": table.format}
    return df


def read_google2019(path: str | os.PathLike) -> pd.DataFrame:
    """Read the Google 2019 adjudicated labels (Majkowska et al., Radiology 2019).

    Columns: those of :func:`read_data_entry` (as the Google file copies them from the 2017 Data_Entry),
    then ``fracture``, ``pneumothorax``, ``airspace_opacity``, ``nodule_or_mass`` (int8, YES = 1, NO = 0) and
    ``set_id`` (``"test"`` or ``"val"``). ``df.attrs`` as for :func:`read_data_entry`.
    """
    table = _read_table(path, _GOOGLE2019_SPEC, "Google 2019 labels")
    df = _validate_entries(table)
    for _, col in GOOGLE2019_FINDINGS:
        s = table.frame[col].str.strip().str.upper()
        _fail(table, ~s.isin(["YES", "NO"]).to_numpy(dtype=bool), col, "expected YES or NO, got")
        df[col] = (s == "YES").to_numpy().astype(np.int8)
    sid = table.frame["set_id"].str.strip().str.lower()
    _fail(table, ~sid.isin(["test", "val"]).to_numpy(dtype=bool), "set_id", "expected 'test' or 'val', got")
    df["set_id"] = sid.to_numpy()
    df.attrs = {"path": str(table.path), "sha256": table.sha256, "format": table.format}
    return df


# -------------------------------------------------------------------------------------------- split lists

def read_split_list(path: str | os.PathLike) -> list[str]:
    """Read ``train_val_list.txt`` / ``test_list.txt``: image names separated by whitespace, in file order.

    The NIH files have one name per line and no newline at the end. A name not of the form
    ``NNNNNNNN_NNN.png`` or a name listed twice raises :class:`MetadataError` with the line number.
    """
    path, text, _ = _load_text(path)
    names: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        for name in line.split():
            if not _IMAGE_NAME.fullmatch(name):
                raise MetadataError(f"{path}: line {lineno}: image name {_show(name)} is not of the form "
                                    "NNNNNNNN_NNN.png")
            if name in first_line:
                raise MetadataError(f"{path}: line {lineno}: duplicate image {name!r} (first listed at line "
                                    f"{first_line[name]})")
            first_line[name] = lineno
            names.append(name)
    return names


# ------------------------------------------------------------------------------------------- bounding boxes

_BBOX_SPEC = (("Image Index", 1), ("Finding Label", 1), ("Bbox [x,y,w,h]", 4))


def read_bbox_list(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``BBox_List_2017.csv`` (optionally gzipped): one row per box.

    Header ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (three trailing empty names); rows have six
    fields (trailing empty ones allowed). Returns columns ``image, label, x, y, w, h``: ``label`` canonical
    (the file's ``Infiltrate`` becomes ``Infiltration``), x, y the top-left corner and w, h the size, in
    1024-px image coordinates (float64). ``df.attrs`` holds ``path`` and ``sha256``.
    """
    path, text, sha = _load_text(path)
    lines = _split_lines(text)
    if not lines:
        raise MetadataError(f"{path}: line 1: empty file; expected the header 'Image Index,Finding Label,"
                            "Bbox [x,y,w,h],,,'")
    logical = _logical_header(path, lines[0])
    named = [(n, idx) for n, idx in logical if n != ""]
    for k, (name, width) in enumerate(_BBOX_SPEC):
        if k >= len(named) or _norm_header(named[k][0]) != _norm_header(name):
            raise MetadataError(f"{path}: line 1: missing column {name!r} (header {_show(lines[0], 200)}); "
                                "expected 'Image Index,Finding Label,Bbox [x,y,w,h],,,'")
        if len(named[k][1]) != width:
            raise MetadataError(f"{path}: line 1: column {name!r} should span {width} fields")
    if len(named) > len(_BBOX_SPEC):
        raise MetadataError(f"{path}: line 1: unexpected column {named[len(_BBOX_SPEC)][0]!r} in a BBox_List header")
    n_header = lines[0].count(",") + 1

    images: list[str] = []
    labels: list[str] = []
    coords: list[tuple[float, float, float, float]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if line == "":
            continue
        fields = line.split(",")
        if not 6 <= len(fields) <= max(6, n_header) or any(f.strip() for f in fields[6:]):
            raise MetadataError(f"{path}: line {lineno}: malformed row: expected 6 fields "
                                f"(image, label, x, y, w, h), got {len(fields)}: {_show(line, 200)}")
        name, raw_label = fields[0], fields[1]
        if not _IMAGE_NAME.fullmatch(name):
            raise MetadataError(f"{path}: line {lineno}: image name {_show(name)} is not of the form NNNNNNNN_NNN.png")
        try:
            label = canonical_label(raw_label)
        except MetadataError:
            raise MetadataError(f"{path}: line {lineno}: unknown finding label {_show(raw_label)}") from None
        if label == NO_FINDING:
            raise MetadataError(f"{path}: line {lineno}: a box cannot be labelled {raw_label!r}")
        vals = []
        for what, s in zip("xywh", fields[2:6]):
            if not re.fullmatch(r"-?" + _FLOAT, s.strip()):
                raise MetadataError(f"{path}: line {lineno}: malformed row: box {what} {_show(s)} is not a number")
            v = float(s)
            if not np.isfinite(v) or (what in "wh" and v <= 0):
                raise MetadataError(f"{path}: line {lineno}: malformed row: box {what} {_show(s)} must be "
                                    f"{'positive and ' if what in 'wh' else ''}finite")
            vals.append(v)
        images.append(name)
        labels.append(label)
        coords.append(tuple(vals))  # type: ignore[arg-type]  # four values: one per box field, checked above
    xywh = np.asarray(coords, dtype=np.float64).reshape(-1, 4)
    df = pd.DataFrame({
        "image": pd.Series(images, dtype=object),
        "label": pd.Series(labels, dtype=object),
        "x": xywh[:, 0], "y": xywh[:, 1], "w": xywh[:, 2], "h": xywh[:, 3],
    })
    df.attrs = {"path": str(path), "sha256": sha}
    return df
