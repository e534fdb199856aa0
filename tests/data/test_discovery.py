from pathlib import Path

import pytest

from cxr_bench.data.discovery import discover_images, image_dirs, missing_images
from cxr_bench.data.phantoms import LAYOUTS, read_phantom_manifest
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import ImageError


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_finds_every_image(make_phantom, layout):
    root = make_phantom(n_patients=6, layout=layout)
    found = discover_images(root)
    expected = sorted(read_phantom_manifest(root)["images"])
    assert list(found) == expected
    assert all(p.is_file() and p.name == n for n, p in found.items())
    folders = {p.parent.relative_to(root).as_posix() for p in found.values()}
    assert folders == {
        "root": {"."},
        "flat": {"images"},
        "box": {"images_001", "images_002", "images_003"},
        "kaggle": {"images_001/images", "images_002/images", "images_003/images"},
    }[layout]


def test_mixed_layouts_and_unrelated_files(tmp_path: Path):
    for rel in ["a.png", "images/b.png", "images_002/c.png", "images_010/images/d.png",
                "images/notes.txt", "other/e.png", "images/.hidden.png", "images_003/deep/f.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "images" / "dir.png").mkdir()
    assert list(discover_images(tmp_path)) == ["a.png", "b.png", "c.png", "d.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in image_dirs(tmp_path)] == [
        ".", "images", "images_002", "images_003", "images_010", "images_010/images"]


def test_duplicate_name_names_both_paths(tmp_path: Path):
    for rel in ["images_001/00000001_000.png", "images_002/images/00000001_000.png"]:
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"x")
    with pytest.raises(ImageError) as e:
        discover_images(tmp_path)
    msg = str(e.value)
    assert "images_001/00000001_000.png" in msg and "images_002/images/00000001_000.png" in msg


def test_root_must_be_a_directory(tmp_path: Path):
    with pytest.raises(ImageError, match="not a directory"):
        discover_images(tmp_path / "nope")


def test_missing_images_lists_names_in_metadata_order(make_phantom):
    root = make_phantom(n_patients=5, faults=("missing", "zero_byte"))
    release = NIHRelease.open(root)
    manifest = read_phantom_manifest(root)
    assert missing_images(release) == [n for n, f in manifest["faults"].items() if f == "missing"]
    on_disk = discover_images(root)
    for name in [n for n in release.metadata["image"] if n in on_disk][:2]:
        on_disk[name].unlink()
    gone = missing_images(release)
    assert len(gone) == 3
    assert gone == [n for n in release.metadata["image"] if n in set(gone)]
