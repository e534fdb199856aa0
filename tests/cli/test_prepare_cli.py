import csv

import numpy as np
import pytest

from cxr_bench.cli import main
from cxr_bench.data.cache import ImageCache
from cxr_bench.data.phantoms import LAYOUTS, read_phantom_manifest


def _cache_dir(out: str):
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("cache: "))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepare_every_layout_with_broken_files(make_phantom, cache_root, capsys, layout):
    root = make_phantom(n_patients=5, layout=layout, faults=("corrupt", "zero_byte", "rgba"))
    rc = main(["prepare", "--data-root", str(root), "--image-size", "32", "--workers", "1",
               "--cache-dir", str(cache_root), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "images: 8 of 10 listed (32 px, identity, lanczos)" in out
    assert "rejected: 2" in out
    cache = ImageCache.open(_cache_dir(out))
    faults = read_phantom_manifest(root)["faults"]
    with open(cache.dir / "rejected.csv", newline="") as fh:
        assert {r["image"] for r in csv.DictReader(fh)} == {n for n, f in faults.items() if f != "rgba"}
    assert cache.array.shape == (10, 32, 32) and cache.array[cache.valid].std() > 10


def test_prepare_options_reach_the_cache(phantom_root, cache_root, capsys):
    args = ["prepare", "--data-root", str(phantom_root), "--image-size", "24", "--workers", "2",
            "--grayscale", "lstar", "--resize", "bicubic", "--cache-dir", str(cache_root), "--no-progress"]
    assert main(args) == 0
    cache = ImageCache.open(_cache_dir(capsys.readouterr().out))
    assert (cache.size, cache.conversion, cache.resize) == (24, "lstar", "bicubic")
    assert cache.dir.parent == cache_root and cache.meta["n_rejected"] == 0
    assert main(args) == 0  # second run: found complete, same directory
    assert ImageCache.open(_cache_dir(capsys.readouterr().out)).key == cache.key


def test_prepare_errors_are_one_line(tmp_path, capsys):
    assert main(["prepare", "--data-root", str(tmp_path / "absent"), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr-bench: error: data root") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["prepare", "--grayscale", "sepia"])


@pytest.mark.slow
def test_prepare_bundled_sample_by_default(capsys, tmp_path):
    assert main(["prepare", "--image-size", "16", "--workers", "2", "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    cache = ImageCache.open(_cache_dir(capsys.readouterr().out))
    assert len(cache) == 1673 and cache.valid.all() and not cache.rejected
    assert np.asarray(cache.array).mean() > 20
