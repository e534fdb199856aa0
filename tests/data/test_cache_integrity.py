"""The image cache trusts nothing on disk: checksums, repair of exactly the damaged chunks, OS errors as
one-line CacheErrors that keep finished work, the free-space arithmetic, and the key of a release computed
without building.

Expected values are derived here, not read from the implementation: the chunk checksums are recomputed with
hashlib from a clean build's array, the chunks past a truncation are worked out from the byte offset, free
space is compared with ``os.statvfs``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import cxr_bench.data.cache as cache_mod
from cxr_bench.data.cache import (
    DONE_FILE,
    META_FILE,
    CacheDamaged,
    ImageCache,
    cache_status,
    check_free_space,
    estimate_cache_bytes,
    free_bytes,
    prepare_cache,
    release_cache_key,
)
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import CacheError

SIZE = 32
CHUNK = 4
HEADER = 128  # a (N, 32, 32) uint8 .npy header, format 1.0


def _build(release, cache_root, **kw):
    return prepare_cache(release, SIZE, cache_dir=cache_root, workers=1, chunk_size=CHUNK, **kw)


def _journal_chunks(cache_dir: Path) -> list[int]:
    return [json.loads(line)["chunk"] for line in (cache_dir / DONE_FILE).read_text().splitlines()]


def _drop_journal_digests(cache_dir: Path) -> None:
    """A journal whose lines carry no checksum."""
    journal = cache_dir / DONE_FILE
    records = [json.loads(x) for x in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "digest"}) + "\n"
                               for r in records))


@pytest.fixture
def built(make_phantom, cache_root, tmp_path):
    """A complete cache of 12 images (3 chunks of 4) and an independent reference copy of its pixels."""
    release = NIHRelease.open(make_phantom(n_patients=6, size=SIZE))
    cache = _build(release, cache_root)
    reference = _build(release, tmp_path / "reference")
    assert len(cache) == 12 and _journal_chunks(cache.dir) == [0, 1, 2]
    return release, cache, np.array(reference.array)


def test_checksums_are_blake2b_of_each_chunk_of_rows(built):
    _, cache, pixels = built
    expected = [hashlib.blake2b(pixels[i:i + CHUNK].tobytes(), digest_size=16).hexdigest()
                for i in range(0, len(pixels), CHUNK)]
    assert cache.meta["checksum"] == "blake2b-128" and cache.meta["chunk_digests"] == expected
    files = cache.meta["file_sha256"]
    for name in ("index.csv", "rejected.csv"):
        assert files[name] == hashlib.sha256((cache.dir / name).read_bytes()).hexdigest()


def test_truncated_images_npy_is_repaired_once_and_stays_repaired(built, cache_root, capsys):
    release, cache, pixels = built
    npy = cache.dir / "images.npy"
    row = SIZE * SIZE
    cut = HEADER + 6 * row - 100  # inside row 5, i.e. inside chunk 1 (rows 4-7): chunks 1 and 2 are lost
    os.truncate(npy, cut)
    with pytest.raises(CacheDamaged, match=f"{cut} bytes instead of {HEADER + 12 * row}"):
        ImageCache.open(cache.dir)

    repaired = _build(release, cache_root)
    assert repaired.dir == cache.dir and repaired.rebuilt_chunks == (1, 2)
    assert _journal_chunks(cache.dir) == [0, 1, 2, 1, 2]  # chunk 0 kept, 1 and 2 decoded again
    np.testing.assert_array_equal(repaired.array, pixels)
    assert npy.stat().st_size == HEADER + 12 * row
    # The old failure mode: "damaged, finishing it again" forever. Now the next prepare finds it complete.
    again = _build(release, cache_root)
    assert again.rebuilt_chunks == () and _journal_chunks(cache.dir) == [0, 1, 2, 1, 2]
    ImageCache.open(cache.dir, verify="full")


def test_overwritten_pixels_are_noticed_and_only_their_chunk_is_rebuilt(built, cache_root):
    release, cache, pixels = built
    npy = cache.dir / "images.npy"
    row = SIZE * SIZE
    with open(npy, "r+b") as fh:  # 16 pixels of image 9 (chunk 2) painted white
        fh.seek(HEADER + 9 * row + 300)
        fh.write(b"\xff" * 16)
    names = list(cache.names)
    with pytest.raises(CacheDamaged, match=f"chunk 2, images {names[8]} to {names[11]}") as e:
        ImageCache.open(cache.dir)
    assert e.value.chunks == (2,)
    mtime_before = npy.stat().st_mtime_ns

    repaired = _build(release, cache_root)
    assert repaired.rebuilt_chunks == (2,)
    assert _journal_chunks(cache.dir) == [0, 1, 2, 2]
    np.testing.assert_array_equal(repaired.array, pixels)
    assert npy.stat().st_mtime_ns >= mtime_before


@pytest.mark.parametrize("edit", ["checksums removed", "checksums rewritten"])
def test_the_journal_is_the_one_record_of_each_chunks_digest(built, cache_root, edit):
    """Damaged pixels plus a meta.json whose checksum record was removed (or rewritten to the damaged
    bytes): the journal still holds each chunk's digest from when it was written, so the damage is found
    and repaired, never recorded as the chunk's new digest."""
    release, cache, pixels = built
    npy = cache.dir / "images.npy"
    with open(npy, "r+b") as fh:  # image 5 (chunk 1) painted white
        fh.seek(HEADER + 5 * SIZE * SIZE + 10)
        fh.write(b"\xff" * 32)
    truth = [hashlib.blake2b(pixels[i:i + CHUNK].tobytes(), digest_size=16).hexdigest()
             for i in range(0, len(pixels), CHUNK)]
    meta = json.loads((cache.dir / META_FILE).read_text())
    if edit == "checksums removed":
        for key in ("checksum", "chunk_digests"):
            meta.pop(key)
    else:
        damaged = np.load(npy)
        meta["chunk_digests"] = [hashlib.blake2b(damaged[i:i + CHUNK].tobytes(), digest_size=16).hexdigest()
                                 for i in range(0, len(damaged), CHUNK)]
    (cache.dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CacheDamaged) as e:
        ImageCache.open(cache.dir, verify="full")
    assert 1 in e.value.chunks or "chunk 1" in str(e.value)

    repaired = _build(release, cache_root)
    np.testing.assert_array_equal(repaired.array, pixels)
    assert repaired.meta["chunk_digests"] == truth
    journal = [json.loads(x) for x in (cache.dir / DONE_FILE).read_text().splitlines()]
    assert {r["chunk"]: r["digest"] for r in journal} == dict(enumerate(truth))
    assert ImageCache.open(cache.dir, verify="full").checked_chunks == 3


def test_header_damage_and_an_edited_index_are_repaired_without_decoding(built, cache_root):
    release, cache, pixels = built
    npy = cache.dir / "images.npy"
    with open(npy, "r+b") as fh:
        fh.seek(20)
        fh.write(b"(9999, 1, 1)")  # the shape in the header
    with pytest.raises(CacheDamaged, match="header is damaged"):
        ImageCache.open(cache.dir)
    repaired = _build(release, cache_root)
    assert repaired.rebuilt_chunks == () and _journal_chunks(cache.dir) == [0, 1, 2]
    np.testing.assert_array_equal(np.load(npy), pixels)

    index = cache.dir / "index.csv"
    index.write_text(index.read_text().replace(",ok\n", ",rejected\n", 1))  # same shape, one status flipped
    with pytest.raises(CacheDamaged, match="index.csv changed"):
        ImageCache.open(cache.dir)
    repaired = _build(release, cache_root)
    assert repaired.valid.all() and _journal_chunks(cache.dir) == [0, 1, 2]


def test_quick_verification_samples_a_big_cache_full_checks_all(built, monkeypatch):
    _, cache, _ = built
    with open(cache.dir / "images.npy", "r+b") as fh:  # damage chunk 1 only
        fh.seek(HEADER + 5 * SIZE * SIZE)
        fh.write(b"\x01\x02\x03")
    # Pretend the cache is big: the budget holds one chunk of the three.
    monkeypatch.setattr(cache_mod, "QUICK_VERIFY_BYTES", CHUNK * SIZE * SIZE)
    found = 0
    for seed in range(30):
        try:
            opened = ImageCache.open(cache.dir, rng=np.random.default_rng(seed))
        except CacheDamaged as e:
            assert e.chunks == (1,)
            found += 1
        else:
            assert opened.checked_chunks == 1
    # One chunk in three is drawn: over 30 draws both outcomes occur (P(all miss) = (2/3)^30 < 1e-5).
    assert 0 < found < 30
    with pytest.raises(CacheDamaged):
        ImageCache.open(cache.dir, verify="full")
    assert ImageCache.open(cache.dir, verify="none").checked_chunks == 0


def test_a_cache_without_checksums_is_rebuilt(built, cache_root):
    """Checksums are what a cache is trusted by: one without them (meta and journal) is damaged, and the next
    build decodes every chunk again, to the same pixels."""
    release, cache, pixels = built
    meta = json.loads((cache.dir / META_FILE).read_text())
    for key in ("checksum", "chunk_digests", "file_sha256"):
        meta.pop(key)
    (cache.dir / META_FILE).write_text(json.dumps(meta))
    _drop_journal_digests(cache.dir)
    with pytest.raises(CacheDamaged, match="no chunk checksums"):
        ImageCache.open(cache.dir)
    rebuilt = _build(release, cache_root)
    assert rebuilt.rebuilt_chunks == (0, 1, 2) and _journal_chunks(cache.dir) == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(rebuilt.array, pixels)
    assert ImageCache.open(cache.dir, verify="full").checked_chunks == 3


def test_bytes_appended_to_images_npy_are_cut_off(built, cache_root):
    release, cache, pixels = built
    npy = cache.dir / "images.npy"
    with open(npy, "ab") as fh:
        fh.write(b"\x07" * 1000)
    with pytest.raises(CacheDamaged, match="truncated or extended"):
        ImageCache.open(cache.dir)
    repaired = _build(release, cache_root)
    assert repaired.rebuilt_chunks == () and npy.stat().st_size == HEADER + 12 * SIZE * SIZE
    np.testing.assert_array_equal(repaired.array, pixels)
    ImageCache.open(cache.dir, verify="full")


def test_full_disk_mid_build_is_one_error_and_resume_keeps_the_finished_chunks(built, cache_root, tmp_path,
                                                                               monkeypatch, caplog):
    """ENOSPC from the chunk write (os.pwrite patched to fail like a full disk after two chunks; the real
    full tmpfs is in tests/reliability/test_bad_data.py)."""
    release, _, pixels = built
    other = tmp_path / "other-root"
    real_pwrite = os.pwrite
    calls = {"n": 0}

    def full_after_two_chunks(fd, data, pos):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, pos)

    monkeypatch.setattr(cache_mod.os, "pwrite", full_after_two_chunks)
    with pytest.raises(CacheError) as e:
        _build(release, other)
    msg = str(e.value)
    cache_dir = next(other.iterdir())
    assert "\n" not in msg and "No space left on device [ENOSPC]" in msg
    assert str(cache_dir / "images.npy") in msg and "chunks already finished are kept" in msg
    assert _journal_chunks(cache_dir) == [0, 1] and not (cache_dir / META_FILE).exists()

    monkeypatch.setattr(cache_mod.os, "pwrite", real_pwrite)
    with caplog.at_level("INFO", logger="cxr_bench.data.cache"):
        resumed = _build(release, other)
    assert "2 of 3 chunks already done" in caplog.text
    assert _journal_chunks(cache_dir) == [0, 1, 2]
    np.testing.assert_array_equal(resumed.array, pixels)


def test_a_cache_root_that_is_a_file_is_named(phantom_release, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    for root in (blocker, blocker / "deeper"):
        with pytest.raises(CacheError) as e:
            prepare_cache(phantom_release, SIZE, cache_dir=root, workers=1)
        assert str(e.value) == (f"cannot create the image cache under {root}: {blocker} is a file, not a "
                                "folder; pass a folder as --cache-dir (or data.cache_dir)")
    assert blocker.read_text() == "x"


def test_free_space_and_the_size_estimate(built, tmp_path):
    _, cache, _ = built
    st = os.statvfs(tmp_path)
    assert abs(free_bytes(tmp_path) - st.f_bavail * st.f_frsize) < 64 << 20  # other writers may be busy
    assert free_bytes(tmp_path / "not" / "yet" / "made") == pytest.approx(free_bytes(tmp_path), abs=64 << 20)
    check_free_space(tmp_path, 1)
    with pytest.raises(CacheError, match=r"not enough disk space for the image cache under .*: it needs "):
        check_free_space(tmp_path, free_bytes(tmp_path) + 10**15)
    on_disk = sum(p.stat().st_size for p in cache.dir.iterdir() if p.is_file())
    estimate = estimate_cache_bytes(len(cache), SIZE)
    assert 12 * SIZE * SIZE <= on_disk <= estimate <= on_disk + 12 * 250 + 8192
    assert estimate_cache_bytes(112_120, 256) == pytest.approx(112_120 * 256 * 256, rel=0.01)


def test_cache_status_gives_the_key_without_building_and_sees_new_pixels(make_phantom, cache_root):
    root = make_phantom(n_patients=3, size=SIZE)
    release = NIHRelease.open(root)
    before = cache_status(release, SIZE, cache_dir=cache_root)
    assert not before.complete and not any(cache_root.iterdir())  # nothing built, nothing created
    assert before.bytes_needed == estimate_cache_bytes(len(release.metadata), SIZE)
    built = prepare_cache(release, SIZE, cache_dir=cache_root, workers=1)
    after = cache_status(release, SIZE, cache_dir=cache_root)
    assert (after.key, after.dir, after.complete, after.bytes_needed) == (built.key, built.dir, True, 0)
    assert release_cache_key(root, SIZE) == built.key

    # Same name, other pixels (an image of another phantom): the key changes, so runs see it.
    other = make_phantom(n_patients=3, size=SIZE, seed=1)
    name = built.names[0]
    shutil.copyfile(other / "images" / name, root / "images" / name)
    assert release_cache_key(release, SIZE) != built.key
    # Same bytes written again with a new mtime: also a new key (the key reads sizes and mtimes, not bytes).
    shutil.copyfile(root / "images" / built.names[1], root / "images" / "tmp.png")
    os.replace(root / "images" / "tmp.png", root / "images" / built.names[1])
    changed = release_cache_key(release, SIZE)
    os.utime(root / "images" / built.names[1], ns=(1, 1))
    assert release_cache_key(release, SIZE) != changed


def test_links_that_loop_or_dangle_are_rejected_images(make_phantom, cache_root):
    root = make_phantom(n_patients=4, size=SIZE)
    release = NIHRelease.open(root)
    names = list(release.metadata["image"])
    loop, dangling = root / "images" / names[2], root / "images" / names[5]
    loop.unlink()
    loop.symlink_to(loop.name)
    dangling.unlink()
    dangling.symlink_to(root / "elsewhere.png")
    cache = prepare_cache(release, SIZE, cache_dir=cache_root, workers=1)
    rejected = dict(cache.rejected)
    assert set(rejected) == {names[2], names[5]}
    assert rejected[names[2]] == "symbolic link loop (too many levels of symbolic links)"
    target = root / "elsewhere.png"
    assert rejected[names[5]] == f"dangling symbolic link (its target {target} does not exist)"
    assert int(cache.valid.sum()) == len(names) - 2
    rows = (cache.dir / "rejected.csv").read_text().splitlines()
    assert f"{names[2]},{loop}," in "\n".join(rows)


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_decoding_process_killed_from_outside_is_one_error_and_the_rest_is_kept(built, tmp_path,
                                                                                  monkeypatch):
    """SIGKILL of one pool worker (what the OOM killer does): a CacheError, not a BrokenProcessPool
    traceback; the chunks journalled before stay and the rerun finishes them."""
    release, _, pixels = built
    root = tmp_path / "killed"
    killed: list[int] = []

    def kill_a_worker_after_the_first_chunk() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            journals = list(root.glob(f"*/{DONE_FILE}"))
            children = _children()
            if journals and journals[0].read_bytes().count(b"\n") >= 1 and children:
                os.kill(children[0], signal.SIGKILL)
                killed.append(children[0])
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker_after_the_first_chunk)
    killer.start()
    try:
        with pytest.raises(CacheError, match="a decoding process died") as e:
            prepare_cache(release, SIZE, cache_dir=root, workers=2, chunk_size=1, chunk_pause_s=0.4)
    finally:
        killer.join()
    assert killed and "\n" not in str(e.value)
    cache_dir = next(root.iterdir())
    kept = _journal_chunks(cache_dir)
    assert 1 <= len(kept) < 12 and not (cache_dir / META_FILE).exists()
    finished = prepare_cache(release, SIZE, cache_dir=root, workers=1, chunk_size=1)
    assert sorted(_journal_chunks(cache_dir)) == list(range(12))  # each chunk decoded once in all
    np.testing.assert_array_equal(finished.array, pixels)
