import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cxr_bench.data.cache import (
    CACHE_ENV,
    DONE_FILE,
    META_FILE,
    CacheDamaged,
    ImageCache,
    build_cache,
    default_cache_root,
    prepare_cache,
)
from cxr_bench.data.discovery import discover_images
from cxr_bench.data.phantoms import REJECTING_FAULTS, VALID_FAULTS, read_phantom_manifest
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import CacheError
from cxr_bench.utils.io import sha256_file

REASON_START = {
    "corrupt": "cannot decode PNG",
    "truncated": "cannot decode PNG (OSError: image file is truncated",
    "zero_byte": "empty file (0 bytes)",
    "not_png": "not a PNG file",
    "missing": "missing: no file under the data root",
}


def test_faulty_files_are_rejected_exactly_and_the_rest_kept(make_phantom, cache_root):
    faults = REJECTING_FAULTS + VALID_FAULTS
    root = make_phantom(faults=faults)
    clean = make_phantom()  # same seed, same pixels, no faults
    fault_of = read_phantom_manifest(root)["faults"]
    release = NIHRelease.open(root)
    cache = prepare_cache(release, 32, cache_dir=cache_root, workers=1, chunk_size=8)
    reference = prepare_cache(NIHRelease.open(clean), 32, cache_dir=cache_root, workers=1)

    rejected = dict(cache.rejected)
    assert set(rejected) == {n for n, f in fault_of.items() if f in REJECTING_FAULTS}
    for name, reason in rejected.items():
        assert reason.startswith(REASON_START[fault_of[name]]), (fault_of[name], reason)
    with open(cache.dir / "rejected.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["image"]: r["reason"] for r in rows} == rejected
    assert {r["image"] for r in rows if r["path"]} == set(rejected) - {n for n, f in fault_of.items()
                                                                       if f == "missing"}
    # Everything else is kept, pixel for pixel; RGBA, LA and 16-bit copies equal the 8-bit L image.
    listed = list(release.metadata["image"])
    kept = [n for n in listed if n not in rejected]
    assert int(cache.valid.sum()) == len(kept) == len(listed) - len(REJECTING_FAULTS)
    assert cache.meta["n_missing"] == 1 and cache.meta["n_rejected"] == len(REJECTING_FAULTS)
    for name in kept:
        np.testing.assert_array_equal(cache.array[cache.index_of(name)],
                                      reference.array[reference.index_of(name)], err_msg=name)
    modes = dict(zip(cache.index["name"], cache.index["orig_mode"]))
    assert {modes[n] for n, f in fault_of.items() if f in VALID_FAULTS} == {"RGBA", "LA", "I;16"}
    for name in rejected:
        with pytest.raises(CacheError, match=name):
            cache.index_of(name)
    slots = cache.slots(listed)
    assert (slots == -1).sum() == len(REJECTING_FAULTS)
    assert all(cache.names[s] == n for n, s in zip(listed, slots) if s >= 0)


def test_complete_cache_is_reused_and_any_key_change_rebuilds(make_phantom, cache_root):
    root = make_phantom(n_patients=4)
    release = NIHRelease.open(root)
    first = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    meta_mtime = (first.dir / META_FILE).stat().st_mtime_ns
    again = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    assert again.dir == first.dir and (first.dir / META_FILE).stat().st_mtime_ns == meta_mtime

    keys = {first.key}
    for kwargs in ({"size": 24}, {"conversion": "gamma"}, {"resize": "bilinear"},
                   {"names": list(release.metadata["image"])[:3]}):
        kw = {"size": 32, **kwargs}
        other = prepare_cache(release, kw.pop("size"), cache_dir=cache_root, workers=1, **kw)
        assert other.key not in keys and other.dir != first.dir
        keys.add(other.key)
    gamma = prepare_cache(release, 32, conversion="gamma", cache_dir=cache_root, workers=1)
    assert not np.array_equal(gamma.array, first.array)

    # A source file changes (new bytes, new mtime): a new key, and the new pixels are read.
    path = discover_images(root)[first.names[0]]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    assert touched.key not in keys and touched.dir != first.dir
    assert touched.index.loc[0, "mtime_ns"] == path.stat().st_mtime_ns


def test_a_cache_without_meta_is_never_opened_and_gets_finished(make_phantom, cache_root):
    release = NIHRelease.open(make_phantom(n_patients=4))
    cache = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    expected = np.array(cache.array)
    (cache.dir / META_FILE).unlink()
    with pytest.raises(CacheError, match="not a complete image cache"):
        ImageCache.open(cache.dir)
    again = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    np.testing.assert_array_equal(again.array, expected)


def test_a_damaged_cache_is_finished_again(make_phantom, cache_root):
    release = NIHRelease.open(make_phantom(n_patients=4))
    cache = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    expected = np.array(cache.array)
    (cache.dir / "index.csv").write_text("name,status\nx,ok\n")  # index no longer matches the array
    with pytest.raises(CacheDamaged, match="index.csv changed since the cache was written"):
        ImageCache.open(cache.dir)
    again = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    np.testing.assert_array_equal(again.array, expected)
    assert list(again.names) == list(release.metadata["image"])


def test_torn_journal_line_is_ignored(make_phantom, cache_root):
    release = NIHRelease.open(make_phantom(n_patients=6))
    cache = prepare_cache(release, 32, cache_dir=cache_root, workers=1, chunk_size=4)
    expected = np.array(cache.array)
    (cache.dir / META_FILE).unlink()
    journal = cache.dir / DONE_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    journal.write_bytes(lines[0] + lines[1][:10])  # killed while writing the second line
    again = prepare_cache(release, 32, cache_dir=cache_root, workers=1, chunk_size=4)
    np.testing.assert_array_equal(again.array, expected)
    assert [json.loads(x)["chunk"] for x in journal.read_text().splitlines()] == [0, 1, 2]


def test_parallel_build_equals_serial_build(make_phantom, cache_root, tmp_path):
    release = NIHRelease.open(make_phantom(n_patients=8, faults=("corrupt", "rgba")))
    one = prepare_cache(release, 32, cache_dir=cache_root, workers=1, chunk_size=4)
    two = prepare_cache(release, 32, cache_dir=tmp_path / "other", workers=2, chunk_size=4)
    assert one.key == two.key
    assert sha256_file(one.dir / "images.npy") == sha256_file(two.dir / "images.npy")
    assert one.rejected == two.rejected
    assert (one.dir / "index.csv").read_text() == (two.dir / "index.csv").read_text()


def test_default_root_is_the_env_var_and_cache_pickles_small(phantom_release, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-root"))
    assert default_cache_root() == tmp_path / "env-root"
    cache = prepare_cache(phantom_release, 32, workers=1)
    assert cache.dir.parent == tmp_path / "env-root"
    import cxr_bench
    assert not str(cache.dir).startswith(os.path.dirname(cxr_bench.__file__))  # never in the package
    blob = pickle.dumps(cache)
    assert len(blob) < cache.array.nbytes
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.array, cache.array)


def test_bad_arguments(phantom_release, cache_root):
    with pytest.raises(CacheError, match="resize"):
        prepare_cache(phantom_release, 32, resize="nearest", cache_dir=cache_root)
    with pytest.raises(CacheError, match="positive"):
        build_cache({}, 0, cache_dir=cache_root)
    from cxr_bench.errors import ConfigError
    with pytest.raises(ConfigError, match="grayscale"):
        prepare_cache(phantom_release, 32, conversion="sepia", cache_dir=cache_root)


_KILLABLE = """
import sys
from cxr_bench.data.cache import prepare_cache
prepare_cache(sys.argv[1], 32, cache_dir=sys.argv[2], workers=2, chunk_size=2, progress=False, chunk_pause_s=0.3)
"""


@pytest.mark.slow
def test_sigkill_mid_build_then_resume_is_byte_identical(make_phantom, tmp_path, caplog):
    root = make_phantom(n_patients=12, faults=("corrupt", "rgba"))
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(root), str(killed_root)], env=env,
                            start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        journal = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(killed_root.glob(f"*/{DONE_FILE}"))
            if found and len(found[0].read_bytes().splitlines()) >= 3:
                journal = found[0]
                break
            time.sleep(0.05)
        assert journal is not None and proc.poll() is None, "the build finished or never started"
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers, mid-build
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cache_dir = journal.parent
    assert not (cache_dir / META_FILE).exists()
    with pytest.raises(CacheError):
        ImageCache.open(cache_dir)
    n_done = len(journal.read_bytes().splitlines())
    assert 3 <= n_done < 12

    release = NIHRelease.open(root)
    with caplog.at_level("INFO", logger="cxr_bench.data.cache"):
        resumed = prepare_cache(release, 32, cache_dir=killed_root, workers=1, chunk_size=2)
    assert resumed.dir == cache_dir
    assert "chunks already done" in caplog.text
    clean = prepare_cache(release, 32, cache_dir=clean_root, workers=1, chunk_size=2)
    assert sha256_file(resumed.dir / "images.npy") == sha256_file(clean.dir / "images.npy")
    assert resumed.rejected == clean.rejected and len(clean.rejected) == 1
    assert (resumed.dir / "index.csv").read_text() == (clean.dir / "index.csv").read_text()
