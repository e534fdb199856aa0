"""NIHRelease: the bundled sample is a real miniature release; data roots laid out as the NIH download."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from cxr_bench.data.bundled import BUNDLED_SHA256, full_metadata_root, sample_root
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import MetadataError


def test_bundled_sample_is_a_release():
    rel = NIHRelease.open(None)
    assert rel.is_bundled_sample and not rel.is_bundled_full and rel.has_images
    assert rel.root.resolve() == sample_root().resolve()
    assert len(rel.metadata) == 1673
    assert len(rel.train_val_names) == 1408 and len(rel.test_names) == 265
    assert len(rel.bboxes) == 60 and rel.bboxes["image"].nunique() == 55
    assert rel.bbox_path is not None and rel.bbox_path.name == "BBox_List_2017.csv"
    # The lists cover the metadata exactly.
    assert sorted(rel.train_val_names + rel.test_names) == sorted(rel.metadata["image"])
    # Every image of the metadata is a file in images/ (checked here without the reader).
    on_disk = sorted(p.name for p in (sample_root() / "images").glob("*.png"))
    assert on_disk == sorted(rel.metadata["image"])
    assert set(rel.bboxes["image"]) <= set(rel.metadata["image"])


def test_bundled_folders_recognised_by_path():
    assert NIHRelease.open(str(sample_root())).is_bundled_sample
    full = NIHRelease.open(full_metadata_root())
    assert full.is_bundled_full and not full.has_images


def test_bundled_sample_hashes_are_registered():
    rel = NIHRelease.open(None)
    hashes = rel.file_hashes()
    assert list(hashes) == ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt",
                            "BBox_List_2017.csv"]
    for name, sha in hashes.items():
        assert BUNDLED_SHA256[f"nih-sample/{name}"] == sha


def test_bundled_sample_lists_are_subsets_of_the_official_lists():
    rel = NIHRelease.open(None)
    full_tv = set((full_metadata_root() / "train_val_list.txt").read_text().split())
    full_test = set((full_metadata_root() / "test_list.txt").read_text().split())
    assert set(rel.train_val_names) <= full_tv and set(rel.test_names) <= full_test


def test_bundled_full():
    rel = NIHRelease.bundled_full()
    assert rel.is_bundled_full and not rel.has_images and not rel.is_bundled_sample
    assert len(rel.metadata) == 112_120
    assert len(rel.train_val_names) == 86_524 and len(rel.test_names) == 25_596
    assert len(rel.bboxes) == 984
    gz = "Data_Entry_2017_v2020.csv.gz"
    assert rel.file_hashes()[gz] == BUNDLED_SHA256[f"nih/{gz}"]
    assert rel.image_paths() == {}  # metadata only: every image counts as missing


def _make_root(tmp_path: Path, *, entry: str = "Data_Entry_2017_v2020.csv", bbox: bool = True,
               gz: bool = False, form_2017: bool = False) -> Path:
    root = tmp_path / "nih"
    root.mkdir()
    src = sample_root()
    text = (src / "Data_Entry_2017_v2020.csv").read_text()
    if form_2017:
        text = "".join(line + ",\n" for line in text.splitlines())
    data = text.encode()
    (root / entry).write_bytes(gzip.compress(data) if gz else data)
    for name in ("train_val_list.txt", "test_list.txt"):
        shutil.copyfile(src / name, root / name)
    if bbox:
        shutil.copyfile(src / "BBox_List_2017.csv", root / "BBox_List_2017.csv")
    return root


@pytest.mark.parametrize("entry,gz,form", [
    ("Data_Entry_2017_v2020.csv", False, "v2020"),
    ("Data_Entry_2017_v2020.csv.gz", True, "v2020"),
    ("Data_Entry_2017.csv", False, "2017"),
    ("Data_Entry_2017.csv.gz", True, "2017"),
])
def test_open_data_root(tmp_path, entry, gz, form):
    root = _make_root(tmp_path, entry=entry, gz=gz, form_2017=form == "2017")
    rel = NIHRelease.open(str(root))
    assert rel.kind == "data-root" and not rel.is_bundled_sample
    assert rel.data_entry_path == root / entry and rel.data_entry_format == form
    assert len(rel.metadata) == 1673 and len(rel.bboxes) == 60
    assert set(rel.file_hashes()) == {entry, "train_val_list.txt", "test_list.txt", "BBox_List_2017.csv"}


def test_v2020_preferred_over_2017(tmp_path):
    root = _make_root(tmp_path)
    shutil.copyfile(root / "Data_Entry_2017_v2020.csv", root / "Data_Entry_2017.csv")
    assert NIHRelease.open(root).data_entry_path.name == "Data_Entry_2017_v2020.csv"


def test_bbox_optional(tmp_path):
    rel = NIHRelease.open(_make_root(tmp_path, bbox=False))
    assert rel.bbox_path is None and len(rel.bboxes) == 0
    assert list(rel.bboxes.columns) == ["image", "label", "x", "y", "w", "h"]
    assert "BBox_List_2017.csv" not in rel.file_hashes()


@pytest.mark.parametrize("remove,needle", [
    ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv.gz"),
    ("train_val_list.txt", "train_val_list.txt"),
    ("test_list.txt", "test_list.txt"),
])
def test_missing_files_are_named(tmp_path, remove, needle):
    root = _make_root(tmp_path)
    (root / remove).unlink()
    with pytest.raises(MetadataError) as ei:
        NIHRelease.open(root)
    assert str(root) in str(ei.value) and needle in str(ei.value) and "missing" in str(ei.value)


def test_bad_roots(tmp_path):
    with pytest.raises(MetadataError, match="does not exist"):
        NIHRelease.open(tmp_path / "nowhere")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(MetadataError, match="not a directory"):
        NIHRelease.open(f)


def test_bbox_image_not_in_metadata(tmp_path):
    root = _make_root(tmp_path)
    with open(root / "BBox_List_2017.csv", "a") as fh:
        fh.write("99999999_000.png,Mass,1,2,3,4\n")
    with pytest.raises(MetadataError, match="99999999_000.png"):
        NIHRelease.open(root)


def test_malformed_file_error_passes_through(tmp_path):
    root = _make_root(tmp_path)
    with open(root / "test_list.txt", "a") as fh:
        fh.write("\nnot-an-image")
    with pytest.raises(MetadataError, match=r"test_list\.txt: line 266:"):
        NIHRelease.open(root)


def test_image_paths_via_discovery(tmp_path):
    root = _make_root(tmp_path)
    (root / "images").mkdir()
    names = list(NIHRelease.open(root).metadata["image"][:3])
    for n in names:
        shutil.copyfile(sample_root() / "images" / n, root / "images" / n)
    paths = NIHRelease.open(root).image_paths()
    assert set(names) <= set(paths) and all(paths[n].is_file() for n in names)


def test_bundled_sample_image_paths():
    rel = NIHRelease.open(None)
    paths = rel.image_paths()
    assert set(paths) == set(rel.metadata["image"])


def test_opening_a_release_is_announced_once_per_process(make_phantom, caplog):
    """A run opens its release from the runner, the trainer and the localizer: one INFO line, then DEBUG."""
    first, second = make_phantom(n_patients=2), make_phantom(n_patients=3)
    with caplog.at_level("DEBUG", logger="cxr_bench.data.release"):
        for root in (first, first, second, first):
            NIHRelease.open(root)
    opened = [(r.levelname, r.args[0]) for r in caplog.records if r.msg.startswith("opened NIH release")]
    assert opened == [("INFO", first), ("DEBUG", first), ("INFO", second), ("DEBUG", first)]
