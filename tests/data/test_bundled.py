"""The bundled files: found through the installed package, and identical to their registered sha256."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cxr_bench
from cxr_bench.data import bundled
from cxr_bench.data.bundled import BUNDLED_SHA256, bundled_dir, full_metadata_root, sample_root, verify_bundled

PKG_BUNDLED = Path(cxr_bench.__file__).resolve().parent / "bundled"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dirs_are_the_package_data():
    assert bundled_dir().resolve() == PKG_BUNDLED
    assert full_metadata_root().resolve() == PKG_BUNDLED / "nih"
    assert sample_root().resolve() == PKG_BUNDLED / "nih-sample"


@pytest.mark.parametrize("relpath", sorted(BUNDLED_SHA256))
def test_registry_matches_files(relpath):
    path = PKG_BUNDLED / relpath
    assert path.is_file(), f"{relpath} is registered but missing"
    assert _sha(path) == BUNDLED_SHA256[relpath]


def test_every_bundled_data_file_is_registered():
    # Every metadata / list / box / label file must carry a registered hash; docs and images are exempt.
    on_disk = {
        p.relative_to(PKG_BUNDLED).as_posix()
        for sub in ("nih", "nih-sample")
        for p in (PKG_BUNDLED / sub).iterdir()
        if p.is_file() and p.suffix != ".md"
    }
    assert on_disk == set(BUNDLED_SHA256)


def test_registry_agrees_with_sources_notes():
    # The provenance notes record the same hashes (guards against copying the wrong file version).
    notes = "".join((PKG_BUNDLED / "nih" / f).read_text() for f in ("SOURCES-metadata.md", "SOURCES-splits.md"))
    for rel in ("nih/Data_Entry_2017_v2020.csv.gz", "nih/BBox_List_2017.csv.gz",
                "nih/google2019_nih-chest-xray-labels.csv.gz", "nih/train_val_list.txt", "nih/test_list.txt"):
        assert BUNDLED_SHA256[rel] in notes, rel


def test_verify_bundled_clean():
    assert verify_bundled() == []


def _copy_bundled_metadata(dst: Path) -> None:
    for rel in BUNDLED_SHA256:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PKG_BUNDLED / rel, dst / rel)


def test_verify_bundled_reports_modified_and_missing(tmp_path, monkeypatch):
    _copy_bundled_metadata(tmp_path)
    monkeypatch.setattr(bundled, "_bundled_path", tmp_path)
    assert verify_bundled(check_images=False) == []
    with open(tmp_path / "nih-sample" / "test_list.txt", "a") as fh:
        fh.write("\n")
    (tmp_path / "nih" / "BBox_List_2017.csv.gz").unlink()
    problems = verify_bundled(check_images=False)
    assert len(problems) == 2
    assert any("test_list.txt" in p and "sha256" in p for p in problems)
    assert any("BBox_List_2017.csv.gz" in p and "missing" in p for p in problems)


def test_verify_bundled_checks_sample_images(tmp_path, monkeypatch):
    _copy_bundled_metadata(tmp_path)
    monkeypatch.setattr(bundled, "_bundled_path", tmp_path)
    images = tmp_path / "nih-sample" / "images"
    images.mkdir()
    names = [n.name for n in (PKG_BUNDLED / "nih-sample" / "images").iterdir()]
    for n in names[1:]:  # one missing
        (images / n).touch()
    (images / "99999999_000.png").touch()  # one extra
    problems = verify_bundled()
    assert any("missing" in p and names[0] in p for p in problems)
    assert any("99999999_000.png" in p for p in problems)


def test_found_from_outside_the_repo(tmp_path):
    # An installed cxr_bench finds its data whatever the working directory.
    code = ("from cxr_bench.data.bundled import sample_root, full_metadata_root; "
            "print(sample_root()); print(full_metadata_root())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    sample, full = out.stdout.split()
    assert (Path(sample) / "Data_Entry_2017_v2020.csv").is_file()
    assert (Path(full) / "Data_Entry_2017_v2020.csv.gz").is_file()
