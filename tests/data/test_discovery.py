from pathlib import Path

import pytest

from cxr_bench.data.discovery import discover_images, image_dirs, scan_images
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


def test_link_loops_and_dangling_links_are_reported_not_fatal(tmp_path: Path):
    """Each broken .png link is one entry of ``broken`` with its reason; every real file is found, once."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes(b"x")
    (images / "self.png").symlink_to("self.png")  # a loop of one
    (images / "p.png").symlink_to("q.png")  # a loop of two
    (images / "q.png").symlink_to("p.png")
    (images / "gone.png").symlink_to(tmp_path / "nowhere" / "gone.png")  # dangling
    (images / "alias.png").symlink_to("a.png")  # a good link is an image like any other
    (images / "images").symlink_to("..")  # images/images -> root: a folder loop
    (tmp_path / "images_002").symlink_to("images_002")  # a loop named like an image folder
    (tmp_path / "images_003").symlink_to("images")  # the same folder under a second name

    scan = scan_images(tmp_path)
    assert list(scan.paths) == ["a.png", "alias.png", "b.png"]
    assert scan.paths["a.png"] == images / "a.png"
    reasons = {name: reason for name, (_, reason) in scan.broken.items()}
    assert set(reasons) == {"self.png", "p.png", "q.png", "gone.png"}
    for name in ("self.png", "p.png", "q.png"):
        assert reasons[name].startswith("symbolic link loop"), reasons[name]
    target = tmp_path / "nowhere" / "gone.png"
    assert reasons["gone.png"] == f"dangling symbolic link (its target {target} does not exist)"
    assert scan.broken["gone.png"][0] == images / "gone.png"
    assert discover_images(tmp_path) == scan.paths
    # The root, then images/; images_003 is images/ again and images_002 is no folder at all.
    assert [p.relative_to(tmp_path).as_posix() for p in image_dirs(tmp_path)] == [".", "images"]


def test_a_broken_link_beside_a_real_copy_is_ignored(tmp_path: Path):
    for rel in ("images_001/x.png", "images_002/y.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "images_002" / "x.png").symlink_to("missing.png")
    scan = scan_images(tmp_path)
    assert scan.paths == {"x.png": tmp_path / "images_001/x.png", "y.png": tmp_path / "images_002/y.png"}
    assert scan.broken == {}


def test_release_image_paths_leave_broken_links_out(make_phantom):
    root = make_phantom(n_patients=3)
    release = NIHRelease.open(root)
    name = release.metadata["image"][1]
    (root / "images" / name).unlink()
    (root / "images" / name).symlink_to(name)
    assert name not in release.image_paths()
    assert len(release.image_paths()) == len(release.metadata) - 1
    assert list(release.image_scan().broken) == [name]
