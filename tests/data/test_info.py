"""``cxr-bench data info``: the counts it prints, checked against counts computed here from the raw files."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cxr_bench.cli import main
from cxr_bench.data.bundled import full_metadata_root, sample_root
from cxr_bench.data.info import data_info, format_data_info
from cxr_bench.data.release import NIHRelease

CX8 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
CX14 = CX8 + ["Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def independent_counts(root: Path, entry: str) -> dict:
    """Everything data info reports, from csv/gzip and str.split only."""
    path = root / entry
    opener = gzip.open if entry.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    by_name = {r[0]: r for r in rows}
    lists = {k: (root / f"{k}_list.txt").read_text().split() for k in ("train_val", "test")}
    out: dict = {"images": {k: len(v) for k, v in lists.items()}, "patients": {}, "views": {}, "pos": {}}
    for k, names in lists.items():
        sel = [by_name[n] for n in names]
        out["patients"][k] = len({r[3] for r in sel})
        out["views"][k] = dict(Counter(r[6] for r in sel))
        out["pos"][k] = Counter(lab for r in sel for lab in r[1].split("|"))
        out["pos"][k + "_nofinding"] = sum(r[1] == "No Finding" for r in sel)
        out["pos"][k + "_zero8"] = sum(not (set(r[1].split("|")) & set(CX8)) for r in sel)
    out["images"]["total"] = len(rows)
    out["patients"]["total"] = len({r[3] for r in rows})
    out["shared"] = len({n[:8] for n in lists["train_val"]} & {n[:8] for n in lists["test"]})
    return out


@pytest.fixture(scope="module")
def full_json():
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["data", "info", "--json"]) == 0
    return json.loads(buf.getvalue())


def _check_against(info: dict, ref: dict) -> None:
    for k in ("train_val", "test", "total"):
        assert info["images"][k] == ref["images"][k], k
        assert info["patients"][k] == ref["patients"][k], k
    assert info["patient_overlap"]["shared_patients"] == ref["shared"]
    for k in ("train_val", "test"):
        assert {v: n for v, n in info["views"][k].items() if n} == ref["views"][k]
        for name, labels in (("chestxray8", CX8), ("chestxray14", CX14)):
            block = info["labels"][name]
            assert block["labels"] == labels
            assert block["positives"][k] == {lab: ref["pos"][k].get(lab, 0) for lab in labels}
        assert info["labels"]["chestxray14"]["all_zero_images"][k] == ref["pos"][k + "_nofinding"]
        assert info["labels"]["chestxray8"]["all_zero_images"][k] == ref["pos"][k + "_zero8"]
        assert info["no_finding"][k] == ref["pos"][k + "_nofinding"]


def test_json_on_bundled_full_metadata(full_json):
    ref = independent_counts(full_metadata_root(), "Data_Entry_2017_v2020.csv.gz")
    _check_against(full_json, ref)
    # The numbers the project promises, literally.
    assert full_json["images"]["train_val"] == 86_524 and full_json["images"]["test"] == 25_596
    assert full_json["patients"]["total"] == 30_805 and full_json["patient_overlap"]["shared_patients"] == 0
    assert full_json["patient_overlap"]["ok"] is True and full_json["images"]["unlisted"] == 0
    assert full_json["release"]["kind"] == "bundled-full" and full_json["release"]["has_images"] is False
    pop = full_json["population"]
    assert pop["views"] == ["AP", "PA"] and pop["all_follow_ups"] and not pop["one_image_per_patient"]
    assert "torchxrayvision" in pop["description"]
    sp = full_json["official_split"]
    assert sp["images"]["train"] + sp["images"]["val"] == 86_524 and sp["images"]["test"] == 25_596
    assert sp["shared_patients"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    assert full_json["bboxes"]["boxes"] == 984 and full_json["bboxes"]["images"] == 880


def test_json_keys_are_stable(full_json):
    assert list(full_json) == ["schema", "release", "population", "images", "patients", "patient_overlap", "views",
                               "labels", "no_finding", "bboxes", "official_split"]
    assert full_json["schema"] == 1
    assert list(full_json["images"]) == ["train_val", "test", "unlisted", "total"]


def test_sample_json(capsys):
    assert main(["data", "info", "--sample", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ref = independent_counts(sample_root(), "Data_Entry_2017_v2020.csv")
    _check_against(info, ref)
    assert info["images"]["total"] == 1673 and info["release"]["kind"] == "bundled-sample"
    assert info["images"]["train_val"] == 1408 and info["images"]["test"] == 265
    assert info["bboxes"]["boxes"] == 60 and info["bboxes"]["images"] == 55


def test_data_root_json(tmp_path, capsys):
    root = tmp_path / "nih"
    root.mkdir()
    # The 2017 form (trailing empty column), gzipped, under its 2017 name.
    lines = (sample_root() / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    (root / "Data_Entry_2017.csv.gz").write_bytes(gzip.compress("".join(f"{line},\n" for line in lines).encode()))
    for name in ("train_val_list.txt", "test_list.txt"):
        (root / name).write_bytes((sample_root() / name).read_bytes())
    assert main(["data", "info", "--data-root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["release"]["kind"] == "data-root" and info["release"]["data_entry_format"] == "2017"
    assert info["images"]["total"] == 1673 and info["bboxes"]["file"] is None
    _check_against(info, independent_counts(sample_root(), "Data_Entry_2017_v2020.csv"))


def test_human_output(full_json, capsys):
    out = format_data_info(full_json)  # what `cxr-bench data info` prints for the same dict
    for needle in ("86,524", "25,596", "30,805", "28,008", "2,797", "PA and AP", "torchxrayvision",
                   "Patient-overlap check (OK): 0 patient(s)", "chestxray8", "chestxray14", "Pleural_Thickening",
                   "Hernia", "19,894"):
        assert needle in out, needle


def test_human_output_cli_sample(capsys):
    assert main(["data", "info", "--sample"]) == 0
    out = capsys.readouterr().out
    for needle in ("1,673", "1,408", "265", "1,314", "bundled 1,673-image sample", "60 on 55 images"):
        assert needle in out, needle


def test_problems_are_reported_not_raised(tmp_path):
    root = tmp_path / "nih"
    root.mkdir()
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
    rows = [f"0000000{p}_00{j}.png,Mass,{j},{p},40,M,PA,1,1,0.1,0.1" for p in (1, 2, 3) for j in (0, 1)]
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([header] + rows))
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png")
    (root / "test_list.txt").write_text("00000002_001.png\n00000009_000.png")
    info = data_info(NIHRelease.open(root))
    ov = info["patient_overlap"]
    assert ov["ok"] is False and ov["shared_patients"] == 1 and ov["listed_images_not_in_metadata"] == 1
    assert info["images"]["unlisted"] == 2 and "error" in info["official_split"]


def test_bad_data_root_exits_2(tmp_path, capsys):
    assert main(["data", "info", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and str(tmp_path) in err and err.count("\n") == 1


def test_verify_command(capsys):
    assert main(["data", "verify"]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_console_script_from_elsewhere(tmp_path):
    # The installed package, run from a directory that is not the repository.
    out = subprocess.run([sys.executable, "-m", "cxr_bench", "data", "info", "--sample", "--json"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["images"]["total"] == 1673


def test_parts_of_a_release_unpacked_by_hand(tmp_path, capsys):
    # No download manifest (a Kaggle copy, a manual unpack): parts come from the NIH list's name ranges.
    # A phantom's 40 images are named 00000001_000 ... 00000020_001, all inside part 1's range.
    from cxr_bench.data.phantoms import make_phantom_release

    root = make_phantom_release(tmp_path / "nih", n_patients=20, images_per_patient=2, size=16, layout="kaggle")
    pngs = sorted(root.rglob("*.png"))
    pngs[0].unlink()
    assert main(["data", "info", "--data-root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images_on_disk"] == {"checked": True, "found": 39, "missing": 1,
                                      "missing_examples": [pngs[0].name]}
    rows = {r["part"]: r for r in info["parts"]["parts"]}
    assert rows[1] == {"part": 1, "file": "images_001.tar.gz", "status": "partial", "present": 39, "expected": 40}
    assert all(rows[k]["status"] == "missing" and rows[k]["expected"] == 0 for k in range(2, 13))
    assert info["parts"]["complete"] == [] and info["parts"]["missing"] == list(range(1, 13))
